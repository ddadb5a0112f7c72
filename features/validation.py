"""Validation of data sets, built from the compiled contract (``features.contract``).

``validate_frame``: a data set (a Parquet file, a partition). Each column's declared policy is applied first
(``normalize_frame``: timezones, ISO-8601 text, text held as objects); pandera checks the structure lazily, so that
every structural break (missing/extra columns, dtype changes) is reported at once as ``FileLevelError``; the
contract's vector evaluator checks the rows, and every failing row goes to quarantine with all its reasons
(``column:code``). ``build_schema`` is the full pandera schema of the same rules, for users and for the contract
suite. Rows in = rows valid + rows quarantined, always.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from inferline.features.errors import UserError
from inferline.features.spec import Column, PipelineSpec
from inferline.features.wire import offset_of, parse_instant

if TYPE_CHECKING:
    from inferline.features.contract import Contract

__all__ = [
    "FileLevelError",
    "ValidationResult",
    "build_schema",
    "normalize_frame",
    "validate_frame",
    "validate_with",
]


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


def build_schema(spec: PipelineSpec, include_label: bool = True) -> Any:
    """The pandera schema of a pipeline's raw data: exact dtypes (no coercion), nullability, rules, uniqueness."""
    from inferline.features.contract import compile_contract

    return compile_contract(spec).schema(include_label)


_SURROGATE = "[\udc80-\udcff]"  # what surrogateescape makes of bytes that are not UTF-8


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
            if s.dtype.kind == "M" or isinstance(s.dtype, pd.DatetimeTZDtype):
                s = _outside_ns_range(s, c, reasons)
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
                parsed, offsets = _parse_text_timestamps(s, c, reasons)
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


NS_MIN, NS_MAX = pd.Timestamp.min, pd.Timestamp.max  # what int64 nanoseconds since the epoch can hold


def _outside_ns_range(s: pd.Series, col: Column, reasons: dict[str, np.ndarray]) -> pd.Series:
    """Timestamps a file stores at a coarser unit (``timestamp[us]``) may lie outside the years 1677-2262 that the
    canonical form (int64 nanoseconds) can hold: each such row is ``<column>:out_of_bounds`` and its value null,
    so one bad value never fails its file or partition."""
    unit: Any = s.dt.unit
    if unit == "ns":
        return s
    naive = s.dt.tz_convert("UTC").dt.tz_localize(None) if isinstance(s.dtype, pd.DatetimeTZDtype) else s
    outside = (naive.notna() & ((naive < NS_MIN.as_unit(unit)) | (naive > NS_MAX.as_unit(unit)))).to_numpy(bool)
    if not outside.any():
        return s
    reasons[f"{col.name}:out_of_bounds"] = outside
    return s.mask(outside)


def _parse_text_timestamps(s: pd.Series, col: Column, reasons: dict[str, np.ndarray]) -> tuple[np.ndarray, set[str]]:
    """ISO-8601 text -> UTC ``datetime64[ns]`` with the request path's parser (``features.wire.parse_instant``);
    each refused value's reason goes into ``reasons``; returns the values and the offsets seen."""
    n = len(s)
    out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    offsets: set[str] = set()
    assume_utc = col.timezone_policy == "assume_utc"
    for i, v in enumerate(s):
        if v is None or v is pd.NA or (isinstance(v, float) and v != v):
            continue
        text = str(v)
        if not text.strip():
            continue  # an empty string is a null, as on the request path (the wire has no other null for text)
        ns, problem = parse_instant(text, assume_utc)
        if problem is not None:
            reasons.setdefault(f"{col.name}:{problem}", np.zeros(n, dtype=bool))[i] = True
        else:
            out[i] = ns
            offset = offset_of(text)
            if offset is not None:
                offsets.add(offset)
    return out.view("datetime64[ns]"), offsets


def validate_frame(
    frame: pd.DataFrame, spec: PipelineSpec, source: str = "<frame>", include_label: bool = True
) -> ValidationResult:
    """Validate a data set; raise ``FileLevelError`` for structural breaks, quarantine failing rows. Compiles the
    contract for this call (``Contract.validate`` reuses a compiled one)."""
    from inferline.features.contract import compile_contract

    return validate_with(compile_contract(spec), frame, source, include_label)


def _structural_problems(cases: Any, spec: PipelineSpec) -> list[dict[str, Any]]:
    problems = []
    for case in cases.itertuples():
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
            kind = spec.column(column).kind if column in {c.name for c in spec.columns} else None
            if kind in ("numeric", "integer", "label") and not _is_dtype_name(received):
                problem = "numbers arrive as text"
                received = f"text values such as {received!r}"
                expected = (
                    f"{expected} numbers: write them without thousands separators, units or currency signs "
                    "(1234.50, not '1,234.50')"
                )
        else:
            problem, received, expected = check, str(case.failure_case), "see spec"
        problems.append({"column": column, "problem": problem, "received": received, "expected": expected})
    return problems


def _is_dtype_name(text: str) -> bool:
    try:
        pd.api.types.pandas_dtype(text)
    except TypeError:
        return False
    return True


def validate_with(
    contract: Contract,
    frame: pd.DataFrame,
    source: str = "<frame>",
    include_label: bool = True,
    keep: Sequence[str] = (),
) -> ValidationResult:
    """``validate_frame`` with a compiled contract: normalize, pandera for the structure, the contract's vector
    evaluator for the rows (measured faster than pandera's own lazy row checks: benchmarks/validation_bench.py)."""
    from inferline.features.contract import merge_reasons

    spec = contract.spec
    frame = frame.reset_index(drop=True)
    kept = frame[list(keep)] if keep else None
    if keep:
        frame = frame.drop(columns=list(keep))
    frame, parse_reasons, notes = normalize_frame(frame, spec, include_label)
    cases = contract.check_structure(frame, include_label)
    if cases is not None and len(cases):
        raise FileLevelError(source, _structural_problems(cases, spec))
    n = len(frame)
    checked = contract.row_reasons(frame, include_label)
    merged = merge_reasons(parse_reasons, checked)
    bad = np.zeros(n, dtype=bool)
    for mask in merged.values():
        bad |= mask
    reasons = {int(i): [r for r, mask in merged.items() if mask[i]] for i in np.flatnonzero(bad)}
    counts = {r: int(mask.sum()) for r, mask in merged.items()}
    if kept is not None:
        frame = pd.concat([kept, frame], axis=1)
    return ValidationResult(
        valid=frame[~bad].reset_index(drop=True),
        quarantine=_quarantine(frame[bad], reasons),
        rows_in=n,
        reason_counts=counts,
        normalizations=notes,
    )


def _quarantine(rows: pd.DataFrame, reasons: Mapping[int, list[str]]) -> pd.DataFrame:
    out = rows.copy()
    out.insert(
        0, "_reasons", pd.Series([";".join(sorted(reasons[i])) for i in rows.index], index=rows.index, dtype="string")
    )
    return out.reset_index(drop=True)
