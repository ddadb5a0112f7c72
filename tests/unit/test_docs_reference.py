"""The generated reference pages (``docs/reference/*.md``) are what ``docs/gen_reference.py`` writes from the code
now: a parser, a metric, an alert rule, an alert reason or an error class that changed without the pages being
regenerated fails here, naming the page. The generator is called in process (it builds parsers, registries and a
Monitor on a temporary directory, and imports every module of the package; it starts nothing)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from inferline.cli import COMMANDS
from inferline.monitor.rules import DEFAULT_RULES, RULE_KINDS

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    return _generator()


@pytest.fixture(scope="module")
def generated(gen: Any) -> dict[Path, str]:
    return gen.pages()


def test_committed_pages_are_what_the_generator_writes(gen: Any, generated: dict[Path, str]) -> None:
    reference = sorted(p.name for p in generated if p.parent == REFERENCE and "<!-- file: " not in p.read_text())
    assert reference == ["alerts.md", "cli.md", "errors.md", "metrics.md"]
    assert ROOT / "docs" / "tutorials" / "bring-your-own-model.md" in generated  # it shows examples/crop_yield's files
    stale = [str(p.relative_to(ROOT)) for p in gen.stale(generated)]
    assert not stale, f"{stale} differ from what the code gives: run `python docs/gen_reference.py` and commit"


def test_every_command_and_subcommand_has_its_help_in_cli_md(gen: Any) -> None:
    text = (REFERENCE / "cli.md").read_text()
    headings = set(re.findall(r"^#{2,4} (inferline(?: [\w-]+)*)$", text, re.M))
    for name in COMMANDS:
        assert f"inferline {name}" in headings, f"inferline {name} has no section in cli.md"
        assert f"usage: inferline {name}" in text
    paths = [path for path, _ in gen.cli_parsers()]
    assert len(paths) == len(set(paths))
    assert set(paths) == headings
    assert {"inferline rollout canary", "inferline serve keys add", "inferline monitor rules"} <= headings


def test_metrics_md_names_the_exported_families() -> None:
    text = (REFERENCE / "metrics.md").read_text()
    for name in (
        "inferline_rollout_share",  # the monitor's, during a rollout
        "inferline_edge_release_requests_total",  # the router's, in the supervisor's registry
        "inferline_gateway_requests_total",
        "inferline_server_restarts_total",
        "inferline_edge_samples_total",
        "inferline_alerts_total",
        "inferline_request_latency_seconds",
        "inferline_regression_mean_absolute_error",
    ):
        assert f"\n## {name}\n" in text, name
    headings = re.findall(r"^## (inferline_\w+)$", text, re.M)
    assert headings == sorted(headings)


def test_alerts_md_has_a_runbook_per_rule_and_reason(gen: Any) -> None:
    text = (REFERENCE / "alerts.md").read_text()
    for rule in DEFAULT_RULES:
        assert f"\n### {rule.name}\n" in text, rule.name
    assert set(gen.KIND_RUNBOOK) == set(RULE_KINDS)
    raised = {(r.source, r.reason) for r in gen.raised_reasons()}
    assert {("monitor", "rollout_rolled_back"), ("serving", "server_restarted")} <= raised
    assert {("monitor", "rollback_completed"), ("batch", "invalid_share_exceeded")} <= raised
    assert raised == set(gen.REASONS)
    for _, reason in raised:
        assert f"| `{reason}` |" in text, reason


def test_errors_md_has_a_section_per_error_class(gen: Any) -> None:
    from inferline.core.errors import PathNotFound, UserError
    from inferline.export.quality import QualityGateRefused
    from inferline.features.spec import PipelineNotFound, SpecError
    from inferline.serving.client import Unavailable

    text = (REFERENCE / "errors.md").read_text()
    classes = gen.error_classes()
    assert classes[0] is UserError and len(classes) == len(set(classes))
    assert {PathNotFound, SpecError, PipelineNotFound, QualityGateRefused, Unavailable} <= set(classes)
    headings = re.findall(r"^#{2,3} (\w+) \{#(\w+)\}$", text, re.M)
    assert headings == [(c.__name__, c.__name__.lower()) for c in classes]
    for cls in classes:
        assert f"| [`{cls.__name__}`](#{cls.__name__.lower()}) |" in text, cls  # in the table at the top
    # a section names the page that explains its class, when that is not the section itself
    section = text.split("### PipelineNotFound {#pipelinenotfound}")[1].split("\n### ")[0]
    assert "- **Derives from**: [`SpecError`](#specerror)" in section
    assert "- **Also caught as**: `ValueError`" in section
    assert "(../tutorials/bring-your-own-model.md#where-your-modules-must-be-importable)" in section


def test_a_page_shows_a_file_as_it_is(gen: Any, tmp_path: Path) -> None:
    """A ``<!-- file: PATH -->`` block holds the file PATH after the generator, whatever it held before."""
    page = ROOT / "docs" / "x.md"
    text = "intro\n\n<!-- file: examples/crop_yield/src/crop_yield/kernels.py -->\n```python\nstale\n```\n\nafter\n"
    shown = gen.with_files_shown(text, page)
    source = (ROOT / "examples/crop_yield/src/crop_yield/kernels.py").read_text()
    assert shown == text.replace("stale\n", source) and gen.with_files_shown(shown, page) == shown
    with pytest.raises(SystemExit, match=r"no_such\.py is not a file"):
        gen.with_files_shown("<!-- file: no_such.py -->\n```python\n```\n", page)
