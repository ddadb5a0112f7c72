"""Errors point into the docs: every error a user can meet (``UserError`` and each class derived from it in the
package) names a page under ``docs/`` that exists, and a heading of that page when it names one; the command
line's boundary ends its one error line with that page. The heading ids are those MkDocs gives (the page rendered
with the site's markdown extensions: the toc extension's slugs and attr_list's ``{#id}``)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from inferline.core.command import Parser, run
from inferline.core.errors import ERRORS_PAGE, PathNotFound, PortInUse, UserError, docs_pointer, user_message
from inferline.features.dataset import BrokenFiles
from inferline.features.spec import PipelineNotFound, SpecError
from inferline.features.validation import FileLevelError

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    if "gen_reference" in sys.modules:  # loaded by tests/unit/test_docs_reference.py in this session
        return sys.modules["gen_reference"]
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_error_names_a_docs_page_and_a_heading_that_exist(gen: Any) -> None:
    classes = gen.error_classes()  # every module of the package imported
    assert len(classes) >= 40 and classes[0] is UserError
    ids: dict[Path, dict[str, str]] = {}
    broken = []
    for cls in classes:
        page, _, anchor = cls.docs.partition("#")
        path = DOCS / page
        if not path.is_file():
            broken.append(f"{cls.__module__}.{cls.__name__}.docs = {cls.docs!r}: no such file under docs/")
            continue
        headings = ids.setdefault(path, gen.heading_ids(path))
        if anchor and anchor not in headings:
            broken.append(f"{cls.__module__}.{cls.__name__}.docs = {cls.docs!r}: no heading #{anchor} on that page")
    assert not broken, "\n".join(broken)
    elsewhere = [c for c in classes if not c.docs.startswith(f"{ERRORS_PAGE}#")]
    assert len(elsewhere) >= len(classes) // 2, [c.__name__ for c in classes if c not in elsewhere]


def test_heading_ids_are_mkdocs_ids(gen: Any) -> None:
    ids = gen.heading_ids(DOCS / "tutorials" / "bring-your-own-model.md")
    assert ids["3-check-the-spec"] == "3. Check the spec"
    assert "where-your-modules-must-be-importable" in ids
    scaling = gen.heading_ids(DOCS / "scaling.md")  # its bash blocks hold `# 1. the image ...` comments
    assert "deploy-on-kubernetes" in scaling and not any(i.startswith(("1-", "2-", "fill-")) for i in scaling)
    errors = gen.heading_ids(DOCS / ERRORS_PAGE)
    assert errors["specerror"] == "SpecError" and errors["usererror"] == "UserError"  # the explicit {#id}


def test_a_class_points_to_its_own_section_unless_it_or_a_parent_names_a_page() -> None:
    class Mine(UserError):
        """A test's own."""

    class Below(FileLevelError):
        """Shares its parent's page."""

    assert UserError.docs == f"{ERRORS_PAGE}#usererror"
    assert PathNotFound.docs == f"{ERRORS_PAGE}#pathnotfound"
    assert Mine.docs == f"{ERRORS_PAGE}#mine"
    assert Below.docs == FileLevelError.docs == BrokenFiles.docs == "explanation/data-validation.md"
    assert PipelineNotFound.docs != SpecError.docs  # a subclass may name a page of its own
    assert PortInUse.docs == "tutorials/bring-your-own-model.md#7-serve"


def test_user_message_appends_the_pointer() -> None:
    error = SpecError("column 'a': bad\n  more")
    assert docs_pointer(error) == f"docs/{SpecError.docs}"
    assert user_message(error, one_line=True) == f"column 'a': bad more (docs: docs/{SpecError.docs})"
    assert user_message(error) == f"column 'a': bad\n  more\n(docs: docs/{SpecError.docs})"  # a line of its own
    assert user_message(PathNotFound("no such file")) == f"no such file (docs: docs/{ERRORS_PAGE}#pathnotfound)"
    assert user_message(ValueError("a bug")) == "a bug" and docs_pointer(KeyError("k")) is None


def test_the_command_line_boundary_ends_its_one_error_line_with_the_docs_page(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def refuse(args: argparse.Namespace) -> int:
        raise PipelineNotFound(f"no pipeline {args.name!r};\nknown pipelines: ['fraud']")

    parser = Parser(prog="inferline check")
    parser.add_argument("name")
    parser.set_defaults(func=refuse)
    assert run(parser, ["nosuch"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "inferline check: error: no pipeline 'nosuch'; known pipelines: ['fraud'] "
        f"(docs: docs/{PipelineNotFound.docs})\n"
    )
    assert (DOCS / PipelineNotFound.docs.partition("#")[0]).is_file()


def test_the_generator_refuses_a_docs_that_names_no_page_or_no_heading(
    gen: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SpecError, "docs", "tutorials/bring-your-own-model.md#no-such-step")
    with pytest.raises(SystemExit, match=r"SpecError.docs names .*no heading #no-such-step"):
        gen.errors_page()
    monkeypatch.setattr(SpecError, "docs", "tutorials/no-such-page.md")
    with pytest.raises(SystemExit, match=r"SpecError.docs names .*no such page"):
        gen.errors_page()
