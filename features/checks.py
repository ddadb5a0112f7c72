"""Contract checks: what proves a pipeline spec honours the project's contracts, runnable on any pipeline.

Every stage lowers the same declarative spec several ways (rules as a scalar, a vector and a pandera check; kernels
as a scalar and a vector form; the request path row by row and column by column; batch validation and the served
status). Each check here drives one of those agreements with hypothesis, on values drawn from the pipeline's own
generated rows, the edge cases each kind of column meets on the wire (nulls, NaN and Inf, blank and damaged text,
naive and far-off timestamps) and anything hypothesis finds, and raises ``AssertionError`` when two lowerings
disagree. They were the test suite's own; they live here so that a user can run them on their own pipeline:

- ``run_checks(pipeline) -> CheckReport``: every check, each failure kept with a one-line reason;
- ``iter_checks(pipeline)``: the named checks (``Check``), one at a time, for a runner of one's own;
- ``parametrize_with_checks(pipelines)``: a ``pytest.mark.parametrize`` over (pipeline, check), in the manner of
  scikit-learn's, so a project's test suite runs each check as a test of its own;
- ``inferline check PIPELINE`` (``features.__main__``): the same at the command line.

A pipeline is given as a module (``SPEC`` and ``generate(n_rows, seed)``), its name (as ``--pipeline`` takes it:
a name in ``inferline.features.pipelines`` or an importable ``pkg.mod``), or a ``Pipeline``. hypothesis is a
dependency of the package for these checks; pytest is imported only inside ``parametrize_with_checks``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import string
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pandera.errors import SchemaErrors

from inferline.features.contract import compile_contract
from inferline.features.kernels import NAT
from inferline.features.rules import Rule
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

__all__ = [
    "CHECKS",
    "Check",
    "CheckReport",
    "CheckResult",
    "Pipeline",
    "PipelineLike",
    "as_pipeline",
    "check_names",
    "iter_checks",
    "parametrize_with_checks",
    "run_checks",
]

EXAMPLES = 60  # hypothesis examples per property: the test suite's budget, and `inferline check`'s default
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# the settings the checks run under: SETTINGS (hypothesis' example database included) when a test calls a check,
# run_checks' own (its example budget, no database folder left in the user's working directory) when it runs them
_SETTINGS: ContextVar[settings] = ContextVar("check_settings", default=SETTINGS)
REASON_CHARS = 400  # a failure's reason is one line, cut here (the falsifying example can be long)


@dataclass(frozen=True)
class Pipeline:
    """A pipeline under check: its spec and the generator of its synthetic rows (``generate(n_rows, seed=...)``,
    every spec column with its raw dtype), which the checks draw realistic values and frames from."""

    spec: PipelineSpec
    generate: Callable[..., pd.DataFrame]

    @property
    def name(self) -> str:
        return self.spec.name


PipelineLike = Pipeline | ModuleType | str


def as_pipeline(pipeline: PipelineLike) -> Pipeline:
    """``pipeline`` as a ``Pipeline``: a name is loaded as ``--pipeline`` loads it (``load_pipeline_module``; an
    unknown one is a ``SpecError`` naming the known pipelines), a module must define ``SPEC`` and ``generate``."""
    if isinstance(pipeline, Pipeline):
        return pipeline
    module = load_pipeline_module(pipeline) if isinstance(pipeline, str) else pipeline
    spec, generate = getattr(module, "SPEC", None), getattr(module, "generate", None)
    if not isinstance(spec, PipelineSpec):
        raise SpecError(f"module {module.__name__!r} defines no SPEC of type PipelineSpec")
    if not callable(generate):
        raise SpecError(
            f"module {module.__name__!r} defines no generate(n_rows, seed) function; the checks draw their rows "
            "from it (write one that returns a DataFrame of realistic rows with every spec column)"
        )
    return Pipeline(spec, generate)


# ------------------------------------------------------------------------------------------ value strategies
TEXT_EDGES = ["", " ", "\t", "ok", "Café", "CafÃ©", "a\x00b", "a\ufffdb", "#", "12345", "AB-12", "x" * 60, "Ünïcödé"]
# look-alikes (issue 30): padding, a run of spaces, a no-break and a thin space, full-width digits, a ligature
TEXT_EDGES += ["ok ", " ok", "o  k", "o\u00a0k", "o\u2009k", "１２", "ﬁle", "e\u0301"]


def _values(column: Column, samples: list[Any]) -> st.SearchStrategy[Any]:
    """Non-null canonical values of ``column``'s kind: the pipeline's own, edge cases, and anything hypothesis
    finds."""
    own = st.sampled_from(samples) if samples else st.nothing()
    if column.kind in ("id", "categorical", "text"):
        alphabet = st.sampled_from(string.ascii_letters + string.digits + " -_#é\x00\x1f\ufffdÃ©Ж")
        return st.one_of(own, st.sampled_from(TEXT_EDGES), st.text(alphabet, max_size=30), st.text(max_size=12))
    if column.kind == "numeric":
        edges = st.sampled_from([0.0, -0.0, 1e6, -1e6, 1e6 + 1, math.inf, -math.inf, 100.0, 100.5, -1.0])
        return st.one_of(own, edges, st.floats(allow_nan=False, width=64))
    if column.kind in ("integer", "label"):
        return st.one_of(own, st.integers(-(2**40), 2**40), st.sampled_from([0, 1, 2, 3, 4, 5, 8, -1]))
    return st.one_of(own, st.integers(-(2**62), 2**62), st.sampled_from([0, -1, 946684800 * 10**9]))


def _canonical_samples(spec: PipelineSpec, frame: pd.DataFrame, column: Column) -> list[Any]:
    """``column``'s canonical values in ``frame`` (nulls left out): what the pipeline's own rows look like."""
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


def _bound(check: Callable[..., None], *args: Any) -> Callable[[list[Any]], None]:
    """``check`` with its first arguments bound, as a plain function hypothesis can drive."""

    def agree(values: list[Any]) -> None:
        check(*args, values)

    return agree


# ------------------------------------------------------------------------------------------ checks
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
    for rule in column.rules:
        scalar = np.array([rule.scalar()(v) for v in values], dtype=bool)
        vector_input: Any = values
        if column.kind in ("numeric", "integer", "label", "timestamp"):
            vector_input = np.array(values, dtype="float64" if column.kind == "numeric" else "int64")
        vector = np.asarray(rule.vector()(np, vector_input), dtype=bool)
        assert scalar.tolist() == vector.tolist(), (column.name, rule, values)
        pandera = _pandera_ok(rule, _pandas_values(column, values))
        assert pandera.tolist() == scalar.tolist(), (column.name, rule, values)


def check_rules_agree(pipeline: Pipeline, workdir: Path) -> None:
    """Every rule: scalar lowering == vector lowering == pandera check, value by value."""
    spec = pipeline.spec
    frame = pipeline.generate(300, seed=5)
    for column in spec.columns:
        if column.rules:
            strategy = st.lists(_values(column, _canonical_samples(spec, frame, column)), min_size=1, max_size=25)
            _SETTINGS.get()(given(values=strategy)(_bound(_rule_lowerings_agree, column)))()


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


def check_kernels_agree(pipeline: Pipeline, workdir: Path) -> None:
    """Every feature's kernel: scalar form == vector form (parameters bound from a fitted state)."""
    spec = pipeline.spec
    frame = pipeline.generate(600, seed=6)
    contract = compile_contract(spec, fit_state(frame, spec))
    for plans in contract._by_source.values():
        for plan in plans:
            column = spec.column(plan.source)
            values = st.one_of(st.none(), _values(column, _canonical_samples(spec, frame, column)))
            strategy = st.lists(values, min_size=1, max_size=25)
            _SETTINGS.get()(given(values=strategy)(_bound(_kernel_forms_agree, plan, column)))()


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


def _wire_rows(spec: PipelineSpec, frame: pd.DataFrame) -> dict[str, np.ndarray]:
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


def check_request_paths_agree(pipeline: Pipeline, workdir: Path) -> None:
    """The request path's scalar (row by row) and vector (column by column) lowerings give the same status and
    the same features for every row, and an ``ok`` row's features equal the batch features of the same row."""
    spec = pipeline.spec
    pool = pipeline.generate(400, seed=7)
    contract = compile_contract(spec, fit_state(pipeline.generate(800, seed=8), spec))
    names = [c.name for c in spec.input_columns]

    @_SETTINGS.get()
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


def check_statuses_match_batch_validation(pipeline: Pipeline, workdir: Path) -> None:
    """A served row is refused exactly when batch validation quarantines it, and its status is one of the
    reasons batch validation gives (defects a DataFrame can hold: nulls, rule breaks, duplicates)."""
    spec = pipeline.spec
    pool = pipeline.generate(300, seed=9).drop(columns=[spec.label])
    contract = compile_contract(spec, fit_state(pipeline.generate(600, seed=10), spec))

    @_SETTINGS.get()
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
        _, status = contract.featurize(_wire_rows(spec, frame))
        quarantined_ids = set(result.quarantine.iloc[:, 1])  # column 0 is _reasons; the first input comes next
        refused = [i for i, s in enumerate(status) if s != "ok"]
        assert len(refused) == result.rows_quarantined
        assert {frame.iloc[i, 0] for i in refused} == quarantined_ids
        by_first = {row[1]: set(row[0].split(";")) for row in result.quarantine.itertuples(index=False)}
        for i in refused:
            assert status[i] in by_first[frame.iloc[i, 0]], (status[i], by_first[frame.iloc[i, 0]])
        assert len(reasons) == result.rows_quarantined

    agree()


def check_pandera_and_evaluator_agree(pipeline: Pipeline, workdir: Path) -> None:
    """The full pandera schema (every rule as a pandera check) and the contract's vector evaluator find the same
    failing (row, reason) pairs on the same frame."""
    spec = pipeline.spec
    pool = pipeline.generate(300, seed=11)
    contract = compile_contract(spec)
    codes = {"not_nullable": "null", "field_uniqueness": "duplicate"}

    @_SETTINGS.get()
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

    @_SETTINGS.get()
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


# ------------------------------------------------------------------------------------------ running them
CheckFunction = Callable[[Pipeline, Path], None]


@dataclass(frozen=True)
class Check:
    """One named check: ``check(pipeline, workdir)`` returns when the pipeline honours the contract it names and
    raises ``AssertionError`` (with what disagreed) when not; ``workdir`` is an empty folder it may write to."""

    name: str
    func: CheckFunction

    @property
    def description(self) -> str:
        """The first sentence of the check's docstring: what it proves."""
        return " ".join((self.func.__doc__ or "").split()).partition(". ")[0].rstrip(".")

    def __call__(self, pipeline: Pipeline, workdir: Path) -> None:
        self.func(pipeline, workdir)

    def __repr__(self) -> str:  # pytest shows it in a failing test's parameters
        return f"Check({self.name})"


def _named(func: CheckFunction) -> Check:
    return Check(func.__name__.removeprefix("check_"), func)


CHECKS: tuple[Check, ...] = tuple(
    map(
        _named,
        (
            check_generate_is_deterministic,
            check_spec_round_trip,
            check_rules_agree,
            check_kernels_agree,
            check_batch_features_agree,
            check_request_paths_agree,
            check_statuses_match_batch_validation,
            check_pandera_and_evaluator_agree,
            check_timestamp_parsers_agree,
        ),
    )
)


def check_names() -> list[str]:
    """The checks' names, in the order they run."""
    return [check.name for check in CHECKS]


def iter_checks(pipeline: PipelineLike, only: Sequence[str] | None = None) -> Iterator[Check]:
    """The checks that apply to ``pipeline`` (every check applies to every pipeline today), those named in
    ``only`` when given. ``pipeline`` is loaded first, so an unknown pipeline fails before any check runs."""
    as_pipeline(pipeline)
    unknown = sorted(set(only or ()) - set(check_names()))
    if unknown:
        raise ValueError(f"no check named {unknown}; the checks are {check_names()}")
    for check in CHECKS:
        if only is None or check.name in only:
            yield check


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome on one pipeline: ``reason`` is the failure in one line (None when it passed)."""

    pipeline: str
    check: str
    passed: bool
    reason: str | None
    seconds: float

    def line(self) -> str:
        """``passed  NAME (1.2 s)`` or ``FAILED  NAME (1.2 s): reason``."""
        if self.passed:
            return f"passed  {self.check} ({self.seconds:.1f} s)"
        return f"FAILED  {self.check} ({self.seconds:.1f} s): {self.reason}"


@dataclass(frozen=True)
class CheckReport:
    """Every check run on one pipeline, in order."""

    pipeline: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    def summary(self) -> str:
        """One line: how many checks ran on the pipeline and how many failed."""
        n = len(self.results)
        if self.passed:
            return f"{self.pipeline}: all {n} checks passed"
        return f"{self.pipeline}: {len(self.failed)} of {n} checks failed ({', '.join(r.check for r in self.failed)})"


def _reason(exc: BaseException) -> str:
    """A failure in one line: the exception's type and message (the first of several distinct failures hypothesis
    found, saying how many), then the failing example hypothesis noted on it, cut at ``REASON_CHARS``."""
    found = 1
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        found = max(found, len(exc.exceptions))
        exc = exc.exceptions[0]
    message = str(exc).strip()
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if found > 1:
        text += f" (the first of {found} distinct failures)"
    for note in getattr(exc, "__notes__", []):
        if note.startswith(("Failing test case", "Falsifying example")):
            text += f" | {note}"
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


def run_checks(
    pipeline: PipelineLike,
    *,
    only: Sequence[str] | None = None,
    examples: int = EXAMPLES,
    on_result: Callable[[CheckResult], None] | None = None,
) -> CheckReport:
    """Run every check (or those named in ``only``) on ``pipeline`` and report each: a check that raises fails
    with its reason in one line, and the next check still runs. ``examples`` is hypothesis' budget per property
    (more finds rarer disagreements, slower); no example database is written. ``on_result`` is called as each
    check ends (``inferline check`` prints its line there)."""
    target = as_pipeline(pipeline)
    chosen = list(iter_checks(target, only))
    budget = settings(SETTINGS, max_examples=examples, database=None)
    results = []
    for check in chosen:
        started = time.perf_counter()
        token = _SETTINGS.set(budget)
        try:
            # what a check (or the pipeline's generate) prints is dropped: the report is one line per check
            with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
                check(target, Path(tmp))
        except Exception as exc:  # noqa: BLE001 - any exception is this check's failure; the next check runs
            result = CheckResult(target.name, check.name, False, _reason(exc), time.perf_counter() - started)
        else:
            result = CheckResult(target.name, check.name, True, None, time.perf_counter() - started)
        finally:
            _SETTINGS.reset(token)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return CheckReport(target.name, tuple(results))


def parametrize_with_checks(pipelines: Iterable[PipelineLike]) -> Any:
    """A ``pytest.mark.parametrize`` over ``(pipeline, check)``: every check on every pipeline, each a test of its
    own with the id ``<pipeline>-<check>``. The test calls ``check(pipeline, tmp_path)``::

        @parametrize_with_checks(["fraud", "my_project.pipelines.loans"])
        def test_contract(pipeline, check, tmp_path):
            check(pipeline, tmp_path)

    pytest is imported here, so the package does not depend on it."""
    import pytest

    params = [
        pytest.param(target, check, id=f"{target.name}-{check.name}")
        for target in map(as_pipeline, pipelines)
        for check in iter_checks(target)
    ]
    return pytest.mark.parametrize(("pipeline", "check"), params)
