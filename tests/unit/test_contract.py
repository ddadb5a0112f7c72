"""The contract suite: every lowering of every pipeline's rules and kernels agrees, in the manner of scikit-learn's
``parametrize_with_checks``.

For each pipeline in ``inferline.features.pipelines`` and each test pipeline listed below (``tests/pipelines``: tabular
ones, and an image and a text pipeline with tensor columns), each of the public checks (``inferline.features.checks``,
what ``inferline check PIPELINE`` runs) runs as its own test. Values come from hypothesis, mixed with the pipeline's
own generated rows and the edge cases each kind of column meets on the wire (nulls, NaN and Inf, blank and damaged
text, naive and far-off timestamps, a tensor's elements at the edges of its datatype).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferline.features import pipelines
from inferline.features.checks import Check, Pipeline, parametrize_with_checks
from inferline.features.kernels import KERNELS
from inferline.features.spec import Column, PipelineSpec, SpecError, load_pipeline_module
from inferline.features.vocabulary import CONTROL_CHARS
from tests.pipelines import byom_images, byom_text, ledger, loans

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pipeline_modules() -> list[ModuleType]:
    shipped = [load_pipeline_module(name) for name in sorted(pipelines.available())]
    return [*shipped, loans, ledger, byom_images, byom_text]  # the last two: tensor columns


@parametrize_with_checks(_pipeline_modules())
def test_contract(pipeline: Pipeline, check: Check, tmp_path: Path) -> None:
    check(pipeline, tmp_path)


def test_every_kernel_and_rule_operation_is_covered_by_a_pipeline() -> None:
    """The suite's pipelines use every kernel and every rule operation, so no lowering goes unchecked."""
    from inferline.features.lowerings import OPS

    specs = [m.SPEC for m in _pipeline_modules()]
    used_kernels = {f.kernel for s in specs for f in s.features}
    used_ops = {r.op for s in specs for c in s.columns for r in c.rules}
    assert used_kernels == set(KERNELS)
    assert used_ops == set(OPS)


def test_a_rule_that_does_not_fit_its_column_is_refused() -> None:
    from inferline.features.rules import matches

    with pytest.raises(SpecError, match=r"rule matches\(\) does not apply to numeric values"):
        PipelineSpec(
            name="broken",
            version=1,
            columns=(Column("x", "numeric", rules=(matches("[0-9]+"),)), Column("y", "label")),
            features=(),
            label="y",
            classes=("a", "b"),
        )


def test_elementwise_needs_a_module_level_function() -> None:
    from inferline.features.lowerings import RuleError
    from inferline.features.rules import elementwise

    with pytest.raises(RuleError, match="module-level function"):
        elementwise(lambda v: True, name="anything", message="m")


def test_control_chars_are_the_c0_set_without_tab_newline_return() -> None:
    assert set(CONTROL_CHARS) == {chr(c) for c in range(32) if c not in (9, 10, 13)} | {"\x7f"}


def _misread(text: str, encoding: str) -> str:
    return text.encode("utf-8").decode(encoding, errors="ignore")


@SETTINGS
@given(
    st.one_of(
        st.text(max_size=20),
        st.builds(_misread, st.text(max_size=12), st.sampled_from(["cp1252", "latin-1"])),
        st.sampled_from(["CafÃ©", "Café", "Dontâ€™s", "MÃ¼ller", "ДЕПОЗИТ", "Ã", "Â ", "ô\u0080", "Ã\u20ac"]),
    )
)
def test_mojibake_shortcut_never_changes_the_answer(text: str) -> None:
    """``is_mojibake`` answers most text with one regex search; the full round trip must agree on all of it."""
    from inferline.features.vocabulary import _round_trips, is_mojibake

    assert is_mojibake(text) == _round_trips(text)


def test_identity_keeps_the_sign_that_log1p_clamps() -> None:
    values = np.array([-3.5, 0.0, 2.0, np.nan])
    np.testing.assert_array_equal(KERNELS["identity"].vector(np, values, {}), [-3.5, 0.0, 2.0, 0.0])
    assert [KERNELS["identity"].scalar(v, {}) for v in (-3.5, None)] == [-3.5, 0.0]
    assert KERNELS["log1p"].scalar(-3.5, {}) == 0.0  # why a signed feature needs identity
