"""The contract checks themselves: each drives one agreement between two lowerings of a pipeline spec.

Every stage lowers the same declarative spec several ways (rules as a scalar, a vector and a pandera check; kernels
as a scalar and a vector form; the request path row by row and column by column; batch validation and the served
status). Each ``check_*`` function here is one check of ``features.checks``' registry (``CHECKS``, named without its
``check_`` prefix): ``check(pipeline, workdir)`` returns when the two agree and raises ``AssertionError`` (with what
disagreed) when not. The properties draw from ``features.check_strategies`` and run under its settings.

hypothesis is imported inside each check that uses it, never at module import: ``features.checks`` imports this
module to name its checks, and importing that must not load hypothesis (``inferline --help``, ``inferline generate``).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pandera.errors import SchemaErrors

from inferline.features.check_strategies import (
    TEXT_EDGES,
    canonical_samples,
    check_settings,
    damage,
    set_edge,
    tensor_rows,
    values_of,
    wire_arrays,
)
from inferline.features.contract import compile_contract
from inferline.features.kernels import NAT
from inferline.features.rules import Rule
from inferline.features.spec import Column, SpecError, read_spec, spec_from_dict, write_spec
from inferline.features.state import fit_state
from inferline.features.tensors import TensorPlan
from inferline.features.validation import validate_with
from inferline.features.wire import decode_value, parse_instant, parse_instants

if TYPE_CHECKING:
    from hypothesis import strategies as st

    from inferline.features.checks import Pipeline

__all__ = [
    "check_batch_features_agree",
    "check_generate_is_deterministic",
    "check_kernels_agree",
    "check_pandera_and_evaluator_agree",
    "check_request_paths_agree",
    "check_rules_agree",
    "check_spec_round_trip",
    "check_statuses_match_batch_validation",
    "check_timestamp_parsers_agree",
]


def _pandas_values(column: Column, values: list[Any]) -> pd.Series:
    """Canonical values as the raw dtype pandera sees."""
    if column.kind == "timestamp":
        return pd.Series(pd.to_datetime(np.array(values, dtype="int64"), utc=True))
    return pd.Series(values, dtype=column.raw_dtype)


def _pandera_ok(rule: Rule, series: pd.Series) -> np.ndarray:
    """Which values of ``series`` pass ``rule``'s pandera check, as booleans."""
    result = rule.pandera()(series)
    return np.asarray(result.check_output, dtype=bool)


def _bound(check: Callable[..., None], *args: Any) -> Callable[[list[Any]], None]:
    """``check`` with its first arguments bound, as a plain function hypothesis can drive."""

    def agree(values: list[Any]) -> None:
        check(*args, values)

    return agree


def check_spec_round_trip(pipeline: Pipeline, workdir: Path) -> None:
    """The spec survives its snapshot unchanged, and an edited snapshot is refused."""
    spec = pipeline.spec
    again = spec_from_dict(json.loads(json.dumps(spec.describe())))
    assert again.describe() == spec.describe() and again.feature_hash() == spec.feature_hash()
    path = workdir / "spec.json"
    write_spec(spec, path)
    assert read_spec(path).feature_hash() == spec.feature_hash()
    data = json.loads(path.read_text())
    data["spec"]["columns"][0]["required"] = not data["spec"]["columns"][0]["required"]
    path.write_text(json.dumps(data))
    try:
        read_spec(path)
    except SpecError as exc:
        assert "edited after it was written" in str(exc), str(exc)
    else:
        raise AssertionError("a spec snapshot edited after it was written was read back without a SpecError")


def _rule_lowerings_agree(column: Column, values: list[Any]) -> None:
    """One example of ``check_rules_agree``: each of ``column``'s rules gives the same verdicts three ways."""
    for rule in column.rules:
        scalar = np.array([rule.scalar()(v) for v in values], dtype=bool)
        vector_input: Any = values
        if column.kind in ("numeric", "integer", "label", "timestamp"):
            vector_input = np.array(values, dtype="float64" if column.kind == "numeric" else "int64")
        vector = np.asarray(rule.vector()(np, vector_input), dtype=bool)
        assert scalar.tolist() == vector.tolist(), (column.name, rule, values)
        pandera = _pandera_ok(rule, _pandas_values(column, values))
        assert pandera.tolist() == scalar.tolist(), (column.name, rule, values)


def _tensor_rule_lowerings_agree(column: Column, rows: list[Any]) -> None:
    """One example of ``check_rules_agree`` for a tensor column, whose rules run per element (a row fails when any
    of its elements does): the scalar lowering element by element == the vector lowering over the rows one by one
    (a Parquet list column) == over them as one dense batch (a request), where they share a shape."""
    plan = TensorPlan(column, load_preprocess=False)
    n = len(rows)
    by_row = plan.rule_reasons(np, rows, n)
    dense = plan.rule_reasons(np, np.stack(rows), n) if len({r.shape for r in rows}) == 1 else by_row
    for rule in column.rules:
        check, reason = rule.scalar(), f"{column.name}:{rule.name}"
        scalar = [not all(check(v) for v in row.reshape(-1).tolist()) for row in rows]
        for found in (by_row, dense):
            got = np.asarray(found.get(reason, np.zeros(n, dtype=bool)), dtype=bool).tolist()
            assert got == scalar, (column.name, rule, rows)


def check_rules_agree(pipeline: Pipeline, workdir: Path) -> None:
    """Every rule: scalar lowering == vector lowering == pandera check, value by value (a tensor column's: element
    by element, and over its rows one by one and as a batch)."""
    from hypothesis import given
    from hypothesis import strategies as st

    spec = pipeline.spec
    frame = pipeline.generate(300, seed=5)
    for column in spec.columns:
        if column.rules and column.kind == "tensor":
            strategy = st.lists(tensor_rows(column, canonical_samples(spec, frame, column)), min_size=1, max_size=25)
            check_settings()(given(values=strategy)(_bound(_tensor_rule_lowerings_agree, column)))()
        elif column.rules:
            strategy = st.lists(values_of(column, canonical_samples(spec, frame, column)), min_size=1, max_size=25)
            check_settings()(given(values=strategy)(_bound(_rule_lowerings_agree, column)))()


def _kernel_forms_agree(plan: Any, column: Column, values: list[Any]) -> None:
    """One example of ``check_kernels_agree``: ``plan``'s kernel gives the same features in both forms."""
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


def check_kernels_agree(pipeline: Pipeline, workdir: Path) -> None:
    """Every feature's kernel: scalar form == vector form (parameters bound from a fitted state)."""
    from hypothesis import given
    from hypothesis import strategies as st

    spec = pipeline.spec
    frame = pipeline.generate(600, seed=6)
    contract = compile_contract(spec, fit_state(frame, spec))
    for plans in contract._by_source.values():
        for plan in plans:
            column = spec.column(plan.source)
            values = st.one_of(st.none(), values_of(column, canonical_samples(spec, frame, column)))
            strategy = st.lists(values, min_size=1, max_size=25)
            check_settings()(given(values=strategy)(_bound(_kernel_forms_agree, plan, column)))()


def check_batch_features_agree(pipeline: Pipeline, workdir: Path) -> None:
    """A data set's features (each text column's kernels over its distinct values, gathered back) equal every
    kernel run over every value."""
    spec = pipeline.spec
    frame = pipeline.generate(500, seed=12)
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


def _broken_tensor(column: Column, value: Any, data: st.DataObject) -> Any:
    """A damaged value of a tensor column: none (a required column), a row of the wrong rank, or ``value`` with
    one element set to an edge of the column's datatype."""
    from hypothesis import strategies as st

    kinds = ["rank", "element", *(["null"] if column.required else [])]
    kind = data.draw(st.sampled_from(kinds), label="tensor damage")
    if kind == "null":
        return None
    row = np.array(value, copy=True)
    if kind == "rank" or not row.size:
        return np.zeros((1,) * (len(column.shape) + 1), dtype=row.dtype)
    set_edge(row, column, data.draw)
    return row


def check_request_paths_agree(pipeline: Pipeline, workdir: Path) -> None:
    """The request path's scalar (row by row) and vector (column by column) lowerings give the same status and
    the same features for every row, and an ``ok`` row's features equal the batch features of the same row."""
    from hypothesis import given
    from hypothesis import strategies as st

    spec = pipeline.spec
    pool = pipeline.generate(400, seed=7)
    contract = compile_contract(spec, fit_state(pipeline.generate(800, seed=8), spec))
    names = [c.name for c in spec.input_columns if c.kind != "tensor"]  # tensor columns: a reason and input after
    tensors = [c.name for c in spec.tensor_columns]

    @check_settings()
    @given(start=st.integers(0, 350), n=st.integers(1, 40), data=st.data())
    def agree(start: int, n: int, data: st.DataObject) -> None:
        rows = pool.iloc[start : start + n].drop(columns=[spec.label])
        arrays, touched = damage(spec, rows, data)
        wire = [arrays[name] for name in names]
        by_row, status_rows = contract._featurize_rows(wire, len(rows))
        by_column, status_columns = contract._featurize_vector(wire, len(rows))
        assert status_rows.tolist() == status_columns.tolist()
        np.testing.assert_allclose(by_row.numeric, by_column.numeric, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(by_row.categorical, by_column.categorical)
        ok = status_rows == "ok"
        bad = ~ok
        assert not by_row.numeric[bad].any() and not by_row.categorical[bad].any(), "bad rows get neutral features"
        request, status = contract.featurize(arrays) if tensors else (by_row, status_rows)
        if tensors:  # a row the other columns refuse keeps their reason; else its first tensor reason, as in batch
            found = contract.reasons({name: list(arrays[name]) for name in tensors})
            for i in range(len(rows)):
                row_reasons = [reason for reason, mask in found.items() if mask[i]]
                first = status_rows[i] if status_rows[i] != "ok" else row_reasons[0] if row_reasons else "ok"
                assert status[i] == first or status[i].endswith(":preprocess"), (i, status[i], first)
        clean = (status == "ok") & ~np.isin(np.arange(len(rows)), list(touched))
        if clean.any():
            batch = contract.features(rows.reset_index(drop=True)[clean])
            np.testing.assert_allclose(batch.numeric, by_row.numeric[clean], rtol=0, atol=1e-6)
            np.testing.assert_array_equal(batch.categorical, by_row.categorical[clean])
            for name in tensors:
                np.testing.assert_allclose(batch.tensors[name], request.tensors[name][clean], rtol=0, atol=1e-6)

    agree()


def check_statuses_match_batch_validation(pipeline: Pipeline, workdir: Path) -> None:
    """A served row is refused exactly when batch validation quarantines it, and its status is one of the
    reasons batch validation gives (defects a DataFrame can hold: nulls, rule breaks, duplicates)."""
    from hypothesis import given
    from hypothesis import strategies as st

    spec = pipeline.spec
    pool = pipeline.generate(300, seed=9).drop(columns=[spec.label])
    contract = compile_contract(spec, fit_state(pipeline.generate(600, seed=10), spec))

    @check_settings()
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
            elif column.kind == "tensor":
                value = _broken_tensor(column, frame.at[i, column.name], data)
            else:
                value = data.draw(st.sampled_from([-1, 4, 0]))
            frame.at[i, column.name] = value
        frame = frame.astype({c.name: c.raw_dtype for c in spec.input_columns})
        numbered = frame.assign(_row=np.arange(len(frame)))  # rows named by position: a spec need not have an id
        result = validate_with(contract, numbered, include_label=False, keep=["_row"])
        reasons = {
            int(i): set(r.split(";"))
            for i, r in zip(result.quarantine["_row"], result.quarantine["_reasons"], strict=True)
        }
        carried: dict[int, str] = {}  # rows the wire cannot carry (a tensor of the wrong shape): the client answers
        _, status = contract.featurize(wire_arrays(spec, frame, carried))  # them with that reason, sent as zeros
        for row, reason in carried.items():
            if status[row] == "ok":
                status[row] = reason
        refused = [i for i, s in enumerate(status) if s != "ok"]
        assert refused == sorted(reasons), (refused, sorted(reasons))
        for i in refused:
            assert status[i] in reasons[i], (i, status[i], reasons[i])

    agree()


def check_pandera_and_evaluator_agree(pipeline: Pipeline, workdir: Path) -> None:
    """The full pandera schema (every rule as a pandera check) and the contract's vector evaluator find the same
    failing (row, reason) pairs on the same frame."""
    from hypothesis import given
    from hypothesis import strategies as st

    spec = pipeline.spec
    pool = pipeline.generate(300, seed=11)
    contract = compile_contract(spec)
    codes = {"not_nullable": "null", "field_uniqueness": "duplicate"}

    @check_settings()
    @given(data=st.data())
    def agree(data: st.DataObject) -> None:
        frame = pool.sample(data.draw(st.integers(1, 40)), random_state=data.draw(st.integers(0, 999)))
        frame = frame.reset_index(drop=True).astype(object)
        for _ in range(data.draw(st.integers(0, 10))):
            i = data.draw(st.integers(0, len(frame) - 1))
            column = data.draw(st.sampled_from(spec.columns))
            if column.kind in ("id", "categorical", "text"):
                value: Any = data.draw(st.one_of(st.none(), st.sampled_from(TEXT_EDGES)))
            elif column.kind == "numeric":
                value = data.draw(st.sampled_from([None, -5.0, math.inf, -math.inf, 1e7, 101.0, 0.5]))
            elif column.kind == "timestamp":
                value = data.draw(st.sampled_from([None, pd.Timestamp("1999-12-31T23:59:59", tz="UTC")]))
            elif column.kind == "tensor":  # pandera sees a row's presence only (its rules run per element)
                value = None
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
        rows = cases[["index", "column", "check"]].itertuples(index=False, name=None)
        by_pandera = {(int(i), f"{column}:{codes.get(str(check), str(check))}") for i, column, check in rows}
        found = contract.row_reasons(frame, include_label=True)
        by_contract = {(int(i), reason) for reason, mask in found.items() for i in np.flatnonzero(mask)}
        assert by_contract == by_pandera

    agree()


def check_timestamp_parsers_agree(pipeline: Pipeline, workdir: Path) -> None:
    """The array parser of RFC 3339 text equals ``parse_instant`` value by value, for each timestamp column's
    policy."""
    from hypothesis import given
    from hypothesis import strategies as st

    spec = pipeline.spec
    policies = {c.timezone_policy == "assume_utc" for c in spec.columns if c.kind == "timestamp"} or {False}
    when = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
    offset = st.one_of(st.none(), st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timedelta(minutes=m)))

    def iso(dt: datetime, off: timedelta | None, sep: str, z: bool) -> bytes:
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

    @check_settings()
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


def check_generate_is_deterministic(pipeline: Pipeline, workdir: Path) -> None:
    """``generate`` gives the same rows for the same seed, with every spec column in its raw dtype: the checks
    above (and a user's own tests) replay a failure by its seed."""
    spec = pipeline.spec
    first, again = pipeline.generate(200, seed=3), pipeline.generate(200, seed=3)
    assert isinstance(first, pd.DataFrame), f"generate() returned {type(first).__name__}, not a DataFrame"
    missing = [c.name for c in spec.columns if c.name not in first.columns]
    assert not missing, f"generate() rows lack the spec's columns {missing}"
    wrong = {c.name: str(first[c.name].dtype) for c in spec.columns if first[c.name].dtype != c.raw_dtype}
    assert not wrong, f"generate() columns not in their raw dtype: {wrong}"
    pd.testing.assert_frame_equal(first, again, obj="generate(200, seed=3) called twice")
