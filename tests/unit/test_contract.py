"""The contract suite: every lowering of every pipeline's rules and kernels agrees, in the manner of scikit-learn's
``parametrize_with_checks``.

For each pipeline in ``inferline.features.pipelines`` and each test pipeline (``tests/pipelines``), each check below
runs as its own test. Values come from hypothesis, mixed with the pipeline's own generated rows and the edge cases
each kind of column meets on the wire (nulls, NaN and Inf, blank and damaged text, naive and far-off timestamps).
"""

from __future__ import annotations

import json
import math
import string
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandera.errors import SchemaErrors

from inferline.features import pipelines
from inferline.features.contract import compile_contract
from inferline.features.kernels import KERNELS, NAT
from inferline.features.rules import CONTROL_CHARS, Rule
from inferline.features.spec import (
    Column,
    PipelineSpec,
    SpecError,
    load_pipeline_module,
    read_spec,
    spec_from_dict,
    write_spec,
)
from inferline.features.state import fit_state
from inferline.features.validation import validate_frame
from inferline.features.wire import decode_value, encode_rows, parse_instant, parse_instants
from tests.pipelines import ledger, loans

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _pipeline_modules() -> list[ModuleType]:
    shipped = [load_pipeline_module(name) for name in sorted(pipelines.available())]
    return [*shipped, loans, ledger]


# ------------------------------------------------------------------------------------------ value strategies
_TEXT_EDGES = ["", " ", "\t", "ok", "Café", "CafÃ©", "a\x00b", "a\ufffdb", "#", "12345", "AB-12", "x" * 60, "Ünïcödé"]
# look-alikes (issue 30): padding, a run of spaces, a no-break and a thin space, full-width digits, a ligature
_TEXT_EDGES += ["ok ", " ok", "o  k", "o\u00a0k", "o\u2009k", "１２", "ﬁle", "e\u0301"]


def _values(column: Column, samples: list[Any]) -> st.SearchStrategy[Any]:
    """Non-null canonical values of ``column``'s kind: the pipeline's own, edge cases, and anything hypothesis
    finds."""
    own = st.sampled_from(samples) if samples else st.nothing()
    if column.kind in ("id", "categorical", "text"):
        alphabet = st.sampled_from(string.ascii_letters + string.digits + " -_#é\x00\x1f\ufffdÃ©Ж")
        return st.one_of(own, st.sampled_from(_TEXT_EDGES), st.text(alphabet, max_size=30), st.text(max_size=12))
    if column.kind == "numeric":
        edges = st.sampled_from([0.0, -0.0, 1e6, -1e6, 1e6 + 1, math.inf, -math.inf, 100.0, 100.5, -1.0])
        return st.one_of(own, edges, st.floats(allow_nan=False, width=64))
    if column.kind in ("integer", "label"):
        return st.one_of(own, st.integers(-(2**40), 2**40), st.sampled_from([0, 1, 2, 3, 4, 5, 8, -1]))
    return st.one_of(own, st.integers(-(2**62), 2**62), st.sampled_from([0, -1, 946684800 * 10**9]))


def _canonical_samples(spec: PipelineSpec, frame: pd.DataFrame, column: Column) -> list[Any]:
    arrays = compile_contract(spec).columns_of(frame, include_label=True)[column.name]
    if column.kind == "timestamp":
        return [int(v) for v in arrays if v != NAT]
    if column.kind == "numeric":
        return [float(v) for v in arrays if not np.isnan(v)]
    if column.kind in ("integer", "label"):
        return [int(v) for v in arrays]
    return [v for v in arrays if v is not None]


def _pandas_values(column: Column, values: list[Any]) -> pd.Series:
    """Canonical values as the raw dtype pandera sees."""
    if column.kind == "timestamp":
        return pd.Series(pd.to_datetime(np.array(values, dtype="int64"), utc=True))
    return pd.Series(values, dtype=column.raw_dtype)


def _pandera_ok(rule: Rule, series: pd.Series) -> np.ndarray:
    result = rule.pandera()(series)
    return np.asarray(result.check_output, dtype=bool)


# ------------------------------------------------------------------------------------------ checks
def check_spec_round_trip(module: ModuleType, tmp_path: Path) -> None:
    """The spec survives its snapshot unchanged, and an edited snapshot is refused."""
    spec: PipelineSpec = module.SPEC
    again = spec_from_dict(json.loads(json.dumps(spec.describe())))
    assert again.describe() == spec.describe() and again.feature_hash() == spec.feature_hash()
    path = tmp_path / "spec.json"
    write_spec(spec, path)
    assert read_spec(path).feature_hash() == spec.feature_hash()
    data = json.loads(path.read_text())
    data["spec"]["columns"][0]["required"] = not data["spec"]["columns"][0]["required"]
    path.write_text(json.dumps(data))
    with pytest.raises(SpecError, match="edited after it was written"):
        read_spec(path)


def _bound(check: Callable[..., None], *args: Any) -> Callable[[list[Any]], None]:
    """``check`` with its first arguments bound, as a plain function hypothesis can drive."""

    def agree(values: list[Any]) -> None:
        check(*args, values)

    return agree


def _rule_lowerings_agree(column: Column, values: list[Any]) -> None:
    for rule in column.rules:
        scalar = np.array([rule.scalar()(v) for v in values], dtype=bool)
        vector_input: Any = values
        if column.kind in ("numeric", "integer", "label", "timestamp"):
            vector_input = np.array(values, dtype="float64" if column.kind == "numeric" else "int64")
        vector = np.asarray(rule.vector()(np, vector_input), dtype=bool)
        assert scalar.tolist() == vector.tolist(), (column.name, rule, values)
        pandera = _pandera_ok(rule, _pandas_values(column, values))
        assert pandera.tolist() == scalar.tolist(), (column.name, rule, values)


def check_rules_agree(module: ModuleType, tmp_path: Path) -> None:
    """Every rule: scalar lowering == vector lowering == pandera check, value by value."""
    spec: PipelineSpec = module.SPEC
    frame = module.generate(300, seed=5)
    for column in spec.columns:
        if column.rules:
            strategy = st.lists(_values(column, _canonical_samples(spec, frame, column)), min_size=1, max_size=25)
            SETTINGS(given(values=strategy)(_bound(_rule_lowerings_agree, column)))()


def _kernel_forms_agree(plan: Any, column: Column, values: list[Any]) -> None:
    kernel = plan.kernel
    if column.kind == "integer":
        values = [0 if v is None else v for v in values]  # INT64 has no null
    scalar = [kernel.scalar(v, plan.params) for v in values]
    if column.kind == "numeric":
        arr: Any = np.array([np.nan if v is None else v for v in values], dtype="float64")
    elif column.kind == "timestamp":
        arr = np.array([NAT if v is None else v for v in values], dtype="int64")
    elif column.kind == "integer":
        arr = np.array(values, dtype="int64")
    else:
        arr = np.array(values, dtype=object)
    vector = np.asarray(kernel.vector(np, arr, plan.params))
    np.testing.assert_allclose(vector, np.asarray(scalar, dtype=vector.dtype), rtol=1e-12, atol=1e-12)


def check_kernels_agree(module: ModuleType, tmp_path: Path) -> None:
    """Every feature's kernel: scalar form == vector form (parameters bound from a fitted state)."""
    spec: PipelineSpec = module.SPEC
    frame = module.generate(600, seed=6)
    contract = compile_contract(spec, fit_state(frame, spec))
    for plans in contract._by_source.values():
        for plan in plans:
            column = spec.column(plan.source)
            values = st.one_of(st.none(), _values(column, _canonical_samples(spec, frame, column)))
            strategy = st.lists(values, min_size=1, max_size=25)
            SETTINGS(given(values=strategy)(_bound(_kernel_forms_agree, plan, column)))()


def check_batch_features_agree(module: ModuleType, tmp_path: Path) -> None:
    """A data set's features (each text column's kernels over its distinct values, gathered back) equal every
    kernel run over every value."""
    spec: PipelineSpec = module.SPEC
    frame = module.generate(500, seed=12)
    contract = compile_contract(spec, fit_state(frame, spec))
    frame = frame.astype(object)
    for column in spec.input_columns:
        if column.kind in ("id", "categorical", "text") and not column.required:
            frame.loc[frame.index[::7], column.name] = None
    columns = contract.columns_of(frame.astype({c.name: c.raw_dtype for c in spec.columns}))
    for plans in contract._by_source.values():
        for plan in plans:
            direct = np.asarray(plan.kernel.vector(np, columns[plan.source], plan.params))
            gathered = np.asarray(contract._kernel(plan, columns, np, {}))
            np.testing.assert_array_equal(gathered, direct)


def _wire_rows(module: ModuleType, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    spec: PipelineSpec = module.SPEC
    return {k: v.reshape(-1) for k, v in encode_rows(frame, spec.input_columns).items()}


def _damage(spec: PipelineSpec, frame: pd.DataFrame, data: st.DataObject) -> tuple[dict[str, np.ndarray], set[int]]:
    """Wire arrays of ``frame`` with cells hypothesis chose replaced by what goes wrong upstream, and the rows
    touched."""
    frame = frame.reset_index(drop=True)
    arrays = {k: v.reshape(-1) for k, v in encode_rows(frame, spec.input_columns).items()}
    n = len(frame)
    touched: set[int] = set()
    for _ in range(data.draw(st.integers(0, max(1, n // 2)), label="cells")):
        i = data.draw(st.integers(0, n - 1), label="row")
        touched.add(i)
        column = data.draw(st.sampled_from(spec.input_columns), label="column")
        values = arrays[column.name]
        if column.triton_dtype == "BYTES":
            choices: list[Any] = [b"", b"\xff\xfe", b"  ", b"\x00bad", "Ã©t\ufffd".encode(), b"#12", b"12"]
            if column.kind == "timestamp":
                choices += [b"2026-01-05T10:00:00", b"1767225600", b"2026-02-30T00:00:00+00:00", b"1600-01-01"]
                choices += [b"2024-06-01 12:00:00.123456-07:00", b"2031-01-01T00:00:00Z"]
            if column.unique:
                choices.append(values[(i + 1) % n])
            values[i] = data.draw(st.sampled_from(choices), label="bytes")
        elif column.triton_dtype == "FP64":
            values[i] = data.draw(st.sampled_from([np.nan, np.inf, -1.0, 1e7, 150.0, 0.0]), label="number")
        else:
            values[i] = data.draw(st.sampled_from([0, -3, 4, 7, 2**40]), label="integer")
    return arrays, touched


def check_request_paths_agree(module: ModuleType, tmp_path: Path) -> None:
    """The request path's scalar (row by row) and vector (column by column) lowerings give the same status and
    the same features for every row, and an ``ok`` row's features equal the batch features of the same row."""
    spec: PipelineSpec = module.SPEC
    pool = module.generate(400, seed=7)
    contract = compile_contract(spec, fit_state(module.generate(800, seed=8), spec))
    names = [c.name for c in spec.input_columns]

    @SETTINGS
    @given(start=st.integers(0, 350), n=st.integers(1, 40), data=st.data())
    def agree(start: int, n: int, data: st.DataObject) -> None:
        rows = pool.iloc[start : start + n].drop(columns=[spec.label])
        arrays, touched = _damage(spec, rows, data)
        wire = [arrays[name] for name in names]
        by_row, status_rows = contract._featurize_rows(wire, len(rows))
        by_column, status_columns = contract._featurize_vector(wire, len(rows))
        assert status_rows.tolist() == status_columns.tolist()
        np.testing.assert_allclose(by_row.numeric, by_column.numeric, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(by_row.categorical, by_column.categorical)
        ok = status_rows == "ok"
        bad = ~ok
        assert not by_row.numeric[bad].any() and not by_row.categorical[bad].any(), "bad rows get neutral features"
        clean = ok & ~np.isin(np.arange(len(rows)), list(touched))
        if clean.any():
            batch = contract.features(rows.reset_index(drop=True)[clean])
            np.testing.assert_allclose(batch.numeric, by_row.numeric[clean], rtol=0, atol=1e-6)
            np.testing.assert_array_equal(batch.categorical, by_row.categorical[clean])

    agree()


def check_statuses_match_batch_validation(module: ModuleType, tmp_path: Path) -> None:
    """A served row is refused exactly when batch validation quarantines it, and its status is one of the
    reasons batch validation gives (defects a DataFrame can hold: nulls, rule breaks, duplicates)."""
    spec: PipelineSpec = module.SPEC
    pool = module.generate(300, seed=9).drop(columns=[spec.label])
    contract = compile_contract(spec, fit_state(module.generate(600, seed=10), spec))

    @SETTINGS
    @given(data=st.data())
    def agree(data: st.DataObject) -> None:
        frame = pool.sample(data.draw(st.integers(2, 30)), random_state=data.draw(st.integers(0, 999)))
        frame = frame.reset_index(drop=True).astype(object)
        for _ in range(data.draw(st.integers(0, 8))):
            i = data.draw(st.integers(0, len(frame) - 1))
            column = data.draw(st.sampled_from(spec.input_columns))
            if column.kind == "timestamp":
                continue
            if column.kind in ("id", "categorical", "text"):
                value: Any = data.draw(
                    st.sampled_from([None, " ", "a\x01", "Ã©", "#", "99", frame.iloc[0][column.name]])
                )
            elif column.kind == "numeric":
                value = data.draw(st.sampled_from([None, -5.0, math.inf, 1e7, 101.0]))
            else:
                value = data.draw(st.sampled_from([-1, 4, 0]))
            frame.at[i, column.name] = value
        frame = frame.astype({c.name: c.raw_dtype for c in spec.input_columns})
        result = validate_frame(frame, spec, include_label=False)
        reasons = {
            int(i): set(r.split(";"))
            for i, r in zip(result.quarantine.index, result.quarantine["_reasons"], strict=True)
        }
        _, status = contract.featurize(_wire_rows(module, frame))
        quarantined_ids = set(result.quarantine.iloc[:, 1])  # column 0 is _reasons; the first input comes next
        refused = [i for i, s in enumerate(status) if s != "ok"]
        assert len(refused) == result.rows_quarantined
        assert {frame.iloc[i, 0] for i in refused} == quarantined_ids
        by_first = {row[1]: set(row[0].split(";")) for row in result.quarantine.itertuples(index=False)}
        for i in refused:
            assert status[i] in by_first[frame.iloc[i, 0]], (status[i], by_first[frame.iloc[i, 0]])
        assert len(reasons) == result.rows_quarantined

    agree()


def check_pandera_and_evaluator_agree(module: ModuleType, tmp_path: Path) -> None:
    """The full pandera schema (every rule as a pandera check) and the contract's vector evaluator find the same
    failing (row, reason) pairs on the same frame."""
    spec: PipelineSpec = module.SPEC
    pool = module.generate(300, seed=11)
    contract = compile_contract(spec)
    codes = {"not_nullable": "null", "field_uniqueness": "duplicate"}

    @SETTINGS
    @given(data=st.data())
    def agree(data: st.DataObject) -> None:
        frame = pool.sample(data.draw(st.integers(1, 40)), random_state=data.draw(st.integers(0, 999)))
        frame = frame.reset_index(drop=True).astype(object)
        for _ in range(data.draw(st.integers(0, 10))):
            i = data.draw(st.integers(0, len(frame) - 1))
            column = data.draw(st.sampled_from(spec.columns))
            if column.kind in ("id", "categorical", "text"):
                value: Any = data.draw(st.one_of(st.none(), st.sampled_from(_TEXT_EDGES)))
            elif column.kind == "numeric":
                value = data.draw(st.sampled_from([None, -5.0, math.inf, -math.inf, 1e7, 101.0, 0.5]))
            elif column.kind == "timestamp":
                value = data.draw(st.sampled_from([None, pd.Timestamp("1999-12-31T23:59:59", tz="UTC")]))
            else:
                value = data.draw(st.sampled_from([-1, 4, 0, 2, 9]))
            frame.at[i, column.name] = value
        frame = frame.astype({c.name: c.raw_dtype for c in spec.columns})
        try:
            with warnings.catch_warnings():  # pandas' notice about all-NA frames, raised inside pandera's report
                warnings.filterwarnings("ignore", "The behavior of DataFrame concatenation with empty", FutureWarning)
                contract.schema().validate(frame, lazy=True)
            cases = pd.DataFrame(columns=["index", "check", "column"])
        except SchemaErrors as exc:
            cases = exc.failure_cases
        cases = cases[cases["index"].notna()]
        by_pandera = {(int(c.index), f"{c.column}:{codes.get(str(c.check), str(c.check))}") for c in cases.itertuples()}
        found = contract.row_reasons(frame, include_label=True)
        by_contract = {(int(i), reason) for reason, mask in found.items() for i in np.flatnonzero(mask)}
        assert by_contract == by_pandera

    agree()


def check_timestamp_parsers_agree(module: ModuleType, tmp_path: Path) -> None:
    """The array parser of RFC 3339 text equals ``parse_instant`` value by value, for each timestamp column's
    policy."""
    spec: PipelineSpec = module.SPEC
    policies = {c.timezone_policy == "assume_utc" for c in spec.columns if c.kind == "timestamp"} or {False}
    when = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
    offset = st.one_of(st.none(), st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timedelta(minutes=m)))

    def iso(dt: datetime, off: timedelta | None, sep: str, z: bool) -> bytes:
        from datetime import timezone

        value = dt if off is None else dt.replace(tzinfo=timezone(off))
        text = value.isoformat(sep=sep)
        return (text.replace("+00:00", "Z") if z else text).encode()

    texts = st.one_of(
        st.builds(iso, when, offset, st.sampled_from("T "), st.booleans()),
        st.sampled_from([b"", b"1767225600", b"\xff", b"2026-02-29T00:00:00+00:00", b" 2026-01-01T00:00:00Z"]),
        # lower-case RFC 3339, nanoseconds, and ISO 8601 forms outside RFC 3339 (refused the same way on each path)
        st.sampled_from([b"2026-01-05t10:00:00z", b"2026-01-05T10:00:00.123456789+02:00", b"20260105T100000Z"]),
        st.sampled_from([b"2026-01-05T10:00+0000", b"2026-01-05X10:00:00Z", b"2026-W01-1T10:00:00Z"]),
        st.text(max_size=30).map(str.encode),
    )

    @SETTINGS
    @given(values=st.lists(texts, min_size=1, max_size=30))
    def agree(values: list[bytes]) -> None:
        for assume_utc in policies:
            ns, problems = parse_instants(np.array(values, dtype=object), assume_utc)
            for i, v in enumerate(values):
                text, invalid = decode_value(v)
                expected = (
                    (None, "invalid_utf8" if invalid else None) if text is None else parse_instant(text, assume_utc)
                )
                got = (None if ns[i] == NAT else int(ns[i]), problems[i] if problems else None)
                assert got == expected, v

    agree()


CHECKS: tuple[Callable[[ModuleType, Path], None], ...] = (
    check_spec_round_trip,
    check_rules_agree,
    check_kernels_agree,
    check_batch_features_agree,
    check_request_paths_agree,
    check_statuses_match_batch_validation,
    check_pandera_and_evaluator_agree,
    check_timestamp_parsers_agree,
)


def _checks() -> Iterator[Any]:
    for module in _pipeline_modules():
        for check in CHECKS:
            yield pytest.param(module, check, id=f"{module.SPEC.name}-{check.__name__.removeprefix('check_')}")


@pytest.mark.parametrize(("module", "check"), list(_checks()))
def test_contract(module: ModuleType, check: Callable[[ModuleType, Path], None], tmp_path: Path) -> None:
    check(module, tmp_path)


def test_every_kernel_and_rule_operation_is_covered_by_a_pipeline() -> None:
    """The suite's pipelines use every kernel and every rule operation, so no lowering goes unchecked."""
    from inferline.features.rules import OPS

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
    from inferline.features.rules import RuleError, elementwise

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
    from inferline.features.rules import _round_trips, is_mojibake

    assert is_mojibake(text) == _round_trips(text)


def test_identity_keeps_the_sign_that_log1p_clamps() -> None:
    values = np.array([-3.5, 0.0, 2.0, np.nan])
    np.testing.assert_array_equal(KERNELS["identity"].vector(np, values, {}), [-3.5, 0.0, 2.0, 0.0])
    assert [KERNELS["identity"].scalar(v, {}) for v in (-3.5, None)] == [-3.5, 0.0]
    assert KERNELS["log1p"].scalar(-3.5, {}) == 0.0  # why a signed feature needs identity
