"""The hand-written reference pages cannot drift from the code: docs/reference/release-manifest.md and
docs/reference/pipeline-spec.md render the code's docstrings (mkdocstrings), and these tests check that the
docstrings name every field the code has, and that the pages' own tables and example list what the code holds.

- The manifest: ``Manifest``'s docstring names exactly the keys ``Manifest.to_dict`` writes into ``release.json``,
  and the page's example (a real manifest, shortened) has exactly those keys; ``ParityReport`` and
  ``QualityReport`` (the manifest's ``parity`` and ``quality``) name theirs.
- The spec: ``PipelineSpec``, ``Column``, ``ModelParams`` and ``Kernel`` name every field; the page's kernel table
  is ``KERNELS`` (name, column kinds, output, what it computes), its rule table is each operation's column kinds,
  and it renders every rule constructor ``features.rules`` exports.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from inferline.export.parity import ParityReport
from inferline.export.quality import QualityReport
from inferline.features import rules
from inferline.features.kernels import KERNELS, Kernel
from inferline.features.lowerings import OPS
from inferline.features.spec import Column, ModelParams, PipelineSpec
from inferline.release.manifest import Manifest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST_PAGE = ROOT / "docs" / "reference" / "release-manifest.md"
SPEC_PAGE = ROOT / "docs" / "reference" / "pipeline-spec.md"
# a list item's names: "- ``a``, ``b`` (...): ..." or "- ``scalar(value, params)``: ..."
ITEM = re.compile(r"^\s*- (``\w+(?:\([^`]*\))?``(?:, ``\w+(?:\([^`]*\))?``)*)", re.M)


def documented(obj: Any) -> list[str]:
    """The field names the docstring's list items start with, in order."""
    return [name for item in ITEM.findall(obj.__doc__ or "") for name in re.findall(r"``(\w+)", item)]


def field_names(cls: Any) -> set[str]:
    return {f.name for f in fields(cls)}


def test_the_manifest_docstring_names_every_key_publish_writes() -> None:
    written = set(Manifest(release=1, pipeline="p", onnx_sha256="", feature_state_sha256="").to_dict())
    names = documented(Manifest)
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    assert set(names) == written == field_names(Manifest) - {"extra"}


def test_the_manifest_example_is_a_whole_manifest() -> None:
    text = MANIFEST_PAGE.read_text()
    blocks = re.findall(r"```json\n(.*?)\n```", text, re.S)
    assert len(blocks) == 1, "the page shows one example manifest"
    example = json.loads(blocks[0])
    assert set(example) == set(Manifest.from_dict(example).to_dict())  # nothing unknown (extra), nothing missing
    assert set(example) == field_names(Manifest) - {"extra"}
    assert set(example["parity"]) == field_names(ParityReport)
    assert set(example["quality"]) == field_names(QualityReport)
    assert f"::: {Manifest.__module__}.Manifest" in text


@pytest.mark.parametrize("cls", [ParityReport, QualityReport, PipelineSpec, Column, ModelParams, Kernel])
def test_each_rendered_record_names_its_fields(cls: Any) -> None:
    assert set(documented(cls)) == field_names(cls)


def _table(text: str, header: str) -> list[list[str]]:
    """The rows of the markdown table whose header line is ``header``."""
    lines = text[text.index(header) :].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_the_kernel_table_is_the_built_in_kernels() -> None:
    rows = _table(SPEC_PAGE.read_text(), "| kernel | reads | output | value |")
    table = {name.strip("`"): (reads, output, value) for name, reads, output, value in rows}
    assert table == {k.name: (", ".join(sorted(k.kinds)), k.output, k.doc) for k in KERNELS.values()}


def test_the_rule_table_is_each_operations_column_kinds() -> None:
    every = set().union(*(op.kinds for op in OPS.values()))
    table: dict[str, set[str]] = {}
    for names, kinds in _table(SPEC_PAGE.read_text(), "| rule | column kinds |"):
        if kinds.startswith("every kind but "):
            allowed = every - set(kinds.removeprefix("every kind but ").split(", "))
        else:
            allowed = set(kinds.split(", "))
        for name in re.findall(r"`(\w+)`", names):
            table[name] = allowed
    assert table == {name: set(op.kinds) for name, op in OPS.items()}


def test_the_page_renders_every_rule_constructor() -> None:
    text = SPEC_PAGE.read_text()
    block = text[text.index("::: inferline.features.rules\n") :].split("\n\n", 1)[0]
    rendered = set(re.findall(r"^        - (\w+)$", block, re.M))
    constructors = {name for name in rules.__all__ if name[0].islower() and name != "rule_from_dict"}
    assert rendered == constructors
    for name in constructors:
        assert getattr(rules, name).__doc__, f"rules.{name} has no docstring: the page would show nothing"
