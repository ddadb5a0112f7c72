"""Validation built from the pipeline spec.

Two entry points over the same ``Rule`` functions:

- ``validate_frame``: a data set (a Parquet file, a partition). pandera runs lazily so every failure is reported at
  once; structural breaks (missing/extra columns, dtype changes) fail the whole file with ``FileLevelError``; row
  failures send the row to quarantine with every reason (``column:rule``).
- ``coerce_request`` + ``row_reasons``: a served request (numpy arrays per column, as Triton hands them). It parses
  wire types (BYTES -> text, ISO-8601 -> UTC timestamps) and evaluates the same rules per row without pandera's
  per-call overhead, so one bad row gets a status and the rest of the batch is scored.

Rows in = rows valid + rows quarantined, always.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from inferline.features.backend import Columns
from inferline.features.errors import UserError
from inferline.features.spec import Column, PipelineSpec, Rule

__all__ = [
    "FileLevelError",
    "RuleVerdicts",
    "ValidationResult",
    "build_schema",
    "coerce_request",
    "first_reason",
    "normalize_frame",
    "row_reasons",
    "validate_frame",
]

NULL = "null"
DUPLICATE = "duplicate"


class FileLevelError(UserError, ValueError):
    """A whole file (or partition) breaks the schema: no row of it can be trusted."""

    def __init__(self, source: str, problems: list[dict[str, Any]]) -> None:
        self.source = source
        self.problems = problems
        lines = [
            f"  - column {p['column']!r}: {p['problem']} (received {p['received']}, expected {p['expected']})"
            for p in problems
        ]
        super().__init__(
            f"{source}: schema does not match pipeline spec:\n"
            + "\n".join(lines)
            + "\nFix the upstream export or bump the pipeline spec (features/pipelines/) and retrain; "
            "no value was cast silently."
        )


@dataclass
class ValidationResult:
    valid: pd.DataFrame
    quarantine: pd.DataFrame  # the failing rows, plus a `_reasons` column ("col:rule;col:rule")
    rows_in: int
    reason_counts: dict[str, int] = field(default_factory=dict)
    normalizations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_valid(self) -> int:
        return len(self.valid)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantine)

    @property
    def invalid_share(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_valid": self.rows_valid,
            "rows_quarantined": self.rows_quarantined,
            "reasons": dict(sorted(self.reason_counts.items())),
            "normalizations": self.normalizations,
        }


def _columns(spec: PipelineSpec, include_label: bool) -> tuple[Column, ...]:
    return spec.columns if include_label else spec.input_columns


def build_schema(spec: PipelineSpec, include_label: bool = True) -> pa.DataFrameSchema:
    """The pandera schema of a pipeline's raw data: exact dtypes (no coercion), nullability, rules, uniqueness."""
    columns = {
        c.name: pa.Column(
            c.raw_dtype,
            checks=[pa.Check(r.check, name=r.name, description=r.description, ignore_na=True) for r in c.rules],
            nullable=not c.required,
            unique=c.unique,
            coerce=False,
            required=True,
        )
        for c in _columns(spec, include_label)
    }
    return pa.DataFrameSchema(columns, strict=True, coerce=False, name=f"{spec.name}_v{spec.version}")


_ROW_CHECK_NAMES = {"not_nullable": NULL, "field_uniqueness": DUPLICATE}
_SURROGATE = "[\udc80-\udcff]"  # what surrogateescape makes of bytes that are not UTF-8
_EPOCH_NUMBER = re.compile(r"[+-]?\d{9,13}(?:\.\d+)?")


def _merge_reasons(parsed: Mapping[str, np.ndarray], checked: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reasons found while parsing, then the rules' reasons; a value that failed to parse is reported as such, not
    also as a null (its parsed value is empty). Used by both the dataset and the request path."""
    merged = dict(parsed)
    failed: dict[str, np.ndarray] = {}
    for reason, mask in parsed.items():
        column = reason.split(":", 1)[0]
        failed[column] = failed[column] | mask if column in failed else mask
    for reason, mask in checked.items():
        column, code = reason.split(":", 1)
        if code == NULL and column in failed:
            mask = mask & ~failed[column]
            if not mask.any():
                continue
        merged[reason] = merged[reason] | mask if reason in merged else mask
    return merged


def normalize_frame(
    frame: pd.DataFrame, spec: PipelineSpec, include_label: bool = True
) -> tuple[pd.DataFrame, dict[str, np.ndarray], list[dict[str, Any]]]:
    """Apply each column's declared policy before validation, explicitly: ``(frame, row reasons, normalizations)``.

    Timestamps: tz-aware values in another zone are converted to UTC; naive values are rejected per row
    (``to_utc``) or taken as UTC (``assume_utc``); ISO-8601 text (mixed offsets allowed) is parsed to UTC with the
    request path's parser, epoch numbers in text are rejected. Text held as Python objects becomes the string dtype.
    Every change is recorded. Anything else (numbers in a timestamp column, text in a number column) is left for
    the schema to refuse: never a silent cast."""
    frame = frame.copy()
    reasons: dict[str, np.ndarray] = {}
    notes: list[dict[str, Any]] = []
    for c in _columns(spec, include_label):
        if c.name not in frame.columns:
            continue
        s = frame[c.name]
        present = int(s.notna().sum())
        if c.kind == "timestamp":
            if isinstance(s.dtype, pd.DatetimeTZDtype):
                if str(s.dtype.tz) != "UTC":
                    notes.append(
                        {"column": c.name, "action": "converted_to_utc", "from": str(s.dtype.tz), "rows": present}
                    )
                frame[c.name] = s.dt.tz_convert("UTC").astype(c.raw_dtype)
            elif s.dtype.kind == "M":
                if c.timezone_policy == "assume_utc":
                    frame[c.name] = s.dt.tz_localize("UTC").astype(c.raw_dtype)
                    notes.append({"column": c.name, "action": "naive_assumed_utc", "rows": present})
                else:
                    reasons[f"{c.name}:naive_timestamp"] = s.notna().to_numpy(dtype=bool)
                    frame[c.name] = pd.Series(pd.NaT, index=s.index, dtype=c.raw_dtype)
            elif s.dtype == object or isinstance(s.dtype, pd.StringDtype):
                text = np.array([None if pd.isna(v) else str(v) for v in s], dtype=object)
                offsets: set[str] = set()
                parsed = _parse_timestamps(text, c, reasons, offsets)
                frame[c.name] = pd.Series(pd.DatetimeIndex(parsed, tz="UTC"), index=s.index)
                notes.append(
                    {"column": c.name, "action": "parsed_iso8601_to_utc", "rows": present, "offsets": sorted(offsets)}
                )
        elif c.kind in ("id", "categorical", "text") and s.dtype == object:
            if all(isinstance(v, str) for v in s.dropna()):
                s = s.astype("string")
                damaged = s.str.contains(_SURROGATE, regex=True).fillna(False).to_numpy(dtype=bool)
                if damaged.any():
                    reasons[f"{c.name}:invalid_utf8"] = damaged
                    s = s.where(~damaged)
                frame[c.name] = s
    return frame, reasons, notes


def validate_frame(
    frame: pd.DataFrame, spec: PipelineSpec, source: str = "<frame>", include_label: bool = True
) -> ValidationResult:
    """Validate a data set lazily; raise ``FileLevelError`` for structural breaks, quarantine failing rows."""
    frame, parse_reasons, notes = normalize_frame(frame.reset_index(drop=True), spec, include_label)
    schema = build_schema(spec, include_label)
    cases: Any  # pandera's failure cases: index, check, column, failure_case
    try:
        with warnings.catch_warnings():
            # pandas' notice about concatenating all-NA frames, raised inside pandera's own failure-case report
            warnings.filterwarnings("ignore", "The behavior of DataFrame concatenation with empty", FutureWarning)
            schema.validate(frame, lazy=True)
        cases = pd.DataFrame(columns=["index", "check", "column", "failure_case"])
    except SchemaErrors as exc:
        cases = exc.failure_cases
    structural = cases[cases["index"].isna()]
    if len(structural):
        problems = []
        for case in structural.itertuples():
            check = str(case.check)
            column = case.column if isinstance(case.column, str) else str(case.failure_case)
            if check == "column_in_dataframe":
                problem, received, expected = "missing", "no such column", "present"
                column = str(case.failure_case)
            elif check == "column_in_schema":
                problem, received, expected = "unexpected column", "present", "absent (strict schema)"
                column = str(case.failure_case)
            elif check.startswith("dtype("):
                problem, received = "dtype changed", str(case.failure_case)
                expected = str(spec.column(column).raw_dtype)
            else:
                problem, received, expected = check, str(case.failure_case), "see spec"
            problems.append({"column": column, "problem": problem, "received": received, "expected": expected})
        raise FileLevelError(source, problems)
    n = len(frame)
    checked: dict[str, np.ndarray] = {}
    for case in cases.itertuples():
        reason = f"{case.column}:{_ROW_CHECK_NAMES.get(str(case.check), str(case.check))}"
        checked.setdefault(reason, np.zeros(n, dtype=bool))[int(case.index)] = True
    merged = _merge_reasons(parse_reasons, checked)
    bad = np.zeros(n, dtype=bool)
    for mask in merged.values():
        bad |= mask
    reasons = {int(i): [r for r, mask in merged.items() if mask[i]] for i in np.flatnonzero(bad)}
    counts = {r: int(mask.sum()) for r, mask in merged.items()}
    return ValidationResult(
        valid=frame[~bad].reset_index(drop=True),
        quarantine=_quarantine(frame[bad], reasons),
        rows_in=len(frame),
        reason_counts=counts,
        normalizations=notes,
    )


def _quarantine(rows: pd.DataFrame, reasons: Mapping[int, list[str]]) -> pd.DataFrame:
    out = rows.copy()
    out.insert(
        0, "_reasons", pd.Series([";".join(sorted(reasons[i])) for i in rows.index], index=rows.index, dtype="string")
    )
    return out.reset_index(drop=True)


def _series(frame: pd.DataFrame | Columns, col: Column) -> pd.Series:
    """The column as a pandas Series of its raw dtype (rules are written against pandas)."""
    if not isinstance(frame, Columns):
        return frame[col.name]
    values = frame[col.name]
    if col.kind == "timestamp":
        return pd.Series(pd.DatetimeIndex(values, tz="UTC"))
    if col.kind in ("id", "categorical", "text"):
        return pd.Series(values, dtype="string")
    return pd.Series(values)


class RuleVerdicts:
    """Remembered per-value verdicts of element-wise rules on string columns, owned by whoever serves requests
    repeatedly (one per loaded preprocess model, per monitor, per benchmark app) and passed to
    ``featurize_request``/``coerce_request``/``row_reasons``. Exact, not an approximation: each distinct value's
    verdict is computed once by the spec's own rule. Bounded: a flood of distinct values only clears a rule's
    entries, they never grow past ``max_per_rule``."""

    def __init__(self, max_per_rule: int = 4096) -> None:
        self.max_per_rule = max_per_rule
        self._by_rule: dict[Rule, dict[str, bool]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_rule.values())

    def passed(self, rule: Rule, values: np.ndarray) -> np.ndarray:
        """``ok`` per value (None counts as passing: nulls are the ``required`` check's concern)."""
        verdicts = self._by_rule.setdefault(rule, {})
        unseen = sorted({v for v in values if v is not None and v not in verdicts})
        if unseen:
            if len(verdicts) + len(unseen) > self.max_per_rule:
                verdicts.clear()
            ok_unseen = rule.check(pd.Series(unseen, dtype="string")).to_numpy(dtype=bool)
            verdicts.update(zip(unseen, ok_unseen.tolist(), strict=True))
        return np.fromiter(
            (True if v is None else verdicts.get(v, True) for v in values), dtype=bool, count=len(values)
        )


def _remembered_reasons(values: np.ndarray, col: Column, out: dict[str, np.ndarray], verdicts: RuleVerdicts) -> None:
    """String columns whose values repeat (categories, merchant descriptors) on the request path: rules are
    element-wise, so each distinct value's verdict is computed once and remembered in ``verdicts``."""
    n = len(values)
    null = np.fromiter((v is None for v in values), dtype=bool, count=n)
    if col.required and null.any():
        out[f"{col.name}:{NULL}"] = null
    for rule in col.rules:
        ok = verdicts.passed(rule, values)
        if not ok.all():
            out[f"{col.name}:{rule.name}"] = ~ok


def row_reasons(
    frame: pd.DataFrame | Columns,
    spec: PipelineSpec,
    include_label: bool = False,
    verdicts: RuleVerdicts | None = None,
) -> dict[str, np.ndarray]:
    """Per-row failures as ``{reason: boolean mask}``, evaluating the spec's rules directly (serving path).
    ``verdicts``: the caller's remembered verdicts for repeating string values (None: remembered for this call
    only)."""
    verdicts = RuleVerdicts() if verdicts is None else verdicts
    out: dict[str, np.ndarray] = {}
    n = len(frame)
    for c in _columns(spec, include_label):
        if isinstance(frame, Columns) and c.kind in ("categorical", "text") and not c.unique:
            _remembered_reasons(frame[c.name], c, out, verdicts)
            continue
        s = _series(frame, c)
        null = s.isna().to_numpy(dtype=bool)
        if c.required and null.any():
            out[f"{c.name}:{NULL}"] = null
        present = s[~null] if null.any() else s
        for rule in c.rules:
            if len(present) == 0:
                break
            ok = rule.check(present).to_numpy(dtype=bool)
            if not ok.all():
                mask = np.zeros(n, dtype=bool)
                mask[np.flatnonzero(~null)[~ok]] = True
                out[f"{c.name}:{rule.name}"] = mask
        if c.unique and n > 1:
            dup = s.duplicated(keep=False).to_numpy(dtype=bool) & ~null
            if dup.any():
                out[f"{c.name}:{DUPLICATE}"] = dup
    return out


def first_reason(reasons: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """One status per row: ``ok`` or the first failing reason in spec order."""
    status = np.full(n, "ok", dtype=object)
    for reason, mask in reversed(list(reasons.items())):
        status[mask] = reason
    return status


def _decode(values: np.ndarray, name: str, reasons: dict[str, np.ndarray]) -> np.ndarray:
    """BYTES tensor -> object array of text (None for null: an empty string on the wire), recording invalid UTF-8
    as a row reason (the row is not dropped)."""
    out = np.empty(len(values), dtype=object)
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, bytes | np.bytes_):
            try:
                out[i] = v.decode("utf-8") or None
            except UnicodeDecodeError:
                out[i] = None
                bad[i] = True
        elif v is None or v is pd.NA:
            out[i] = None
        else:
            out[i] = str(v) or None
    if bad.any():
        reasons[f"{name}:invalid_utf8"] = bad
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_MIN, _NS_MAX = datetime(1678, 1, 1, tzinfo=UTC), datetime(2262, 1, 1, tzinfo=UTC)  # datetime64[ns] range


def _parse_timestamps(
    text: np.ndarray, col: Column, reasons: dict[str, np.ndarray], offsets: set[str] | None = None
) -> np.ndarray:
    """ISO-8601 text -> UTC ``datetime64[ns]`` (NaT where null, unparseable, or naive under the ``to_utc`` policy).

    Values with an offset are converted to UTC; naive values are rejected (``to_utc``) or taken as UTC
    (``assume_utc``). Dates outside what nanosecond timestamps can hold are unparseable."""
    n = len(text)
    out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    unparseable = np.zeros(n, dtype=bool)
    naive = np.zeros(n, dtype=bool)
    epoch = np.zeros(n, dtype=bool)
    for i, value in enumerate(text):
        if value is None:
            continue
        if _EPOCH_NUMBER.fullmatch(value.strip()):
            epoch[i] = True  # a number where ISO-8601 text belongs: its unit and zone are guesses, so refuse it
            continue
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            unparseable[i] = True
            continue
        if dt.tzinfo is None:
            if col.timezone_policy == "to_utc":
                naive[i] = True
                continue
            dt = dt.replace(tzinfo=UTC)
        elif offsets is not None:
            offsets.add(dt.strftime("%z") or "+0000")
        if not _NS_MIN <= dt < _NS_MAX:
            unparseable[i] = True
            continue
        out[i] = (dt - _EPOCH) // timedelta(microseconds=1) * 1000
    if unparseable.any():
        reasons[f"{col.name}:unparseable"] = unparseable
    if naive.any():
        reasons[f"{col.name}:naive_timestamp"] = naive
    if epoch.any():
        reasons[f"{col.name}:epoch_number"] = epoch
    return out.view("datetime64[ns]")


def coerce_request(
    arrays: Mapping[str, np.ndarray], spec: PipelineSpec, verdicts: RuleVerdicts | None = None
) -> tuple[Columns, dict[str, np.ndarray]]:
    """Wire arrays (one per raw column, shape [n] or [n, 1]) -> canonical ``Columns`` and the per-row reasons found
    while parsing and checking rules (``verdicts``: see ``RuleVerdicts``). Missing required inputs raise
    ``KeyError`` naming them (a malformed request, not a bad row)."""
    missing = [c.name for c in spec.input_columns if c.name not in arrays]
    if missing:
        raise KeyError(
            f"request lacks input(s) {missing}; expected one tensor per raw column: "
            f"{[c.name for c in spec.input_columns]}"
        )
    reasons: dict[str, np.ndarray] = {}
    columns = Columns()
    for c in spec.input_columns:
        values = np.asarray(arrays[c.name]).reshape(-1)
        if c.kind in ("id", "categorical", "text"):
            columns[c.name] = _decode(values, c.name, reasons)
        elif c.kind == "timestamp":
            if values.dtype.kind in "OSU":
                columns[c.name] = _parse_timestamps(_decode(values, c.name, reasons), c, reasons)
            else:
                columns[c.name] = np.asarray(values, dtype="datetime64[ns]")
        elif c.kind == "numeric":
            columns[c.name] = values.astype("float64")
        else:  # integer
            columns[c.name] = values.astype("int64")
    return columns, _merge_reasons(reasons, row_reasons(columns, spec, verdicts=verdicts))
