"""Validation of data sets, built from the compiled contract (``features.contract``).

``validate_frame``: a data set (a Parquet file, a partition). Each column's declared policy is applied first
(``normalize_frame``: timezones, ISO-8601 text, text held as objects); pandera checks the structure lazily, so that
every structural break (missing/extra columns, dtype changes) is reported at once as ``FileLevelError``; the
contract's vector evaluator checks the rows, and every failing row goes to quarantine with all its reasons
(``column:code``). ``build_schema`` is the full pandera schema of the same rules, for users and for the contract
suite. Rows in = rows valid + rows quarantined, always.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from inferline.features.errors import UserError
from inferline.features.rules import TEXT_KINDS
from inferline.features.spec import Column, PipelineSpec
from inferline.features.wire import nfc_texts, offset_of, parse_instant

if TYPE_CHECKING:
    from inferline.features.contract import Contract

__all__ = [
    "FileLevelError",
    "Normalized",
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
        unreadable = all(p["column"] == "<file>" for p in problems)
        heading = "cannot be read" if unreadable else "schema does not match pipeline spec"
        advice = (
            "Nothing of this file was used."
            if unreadable
            else "Fix the upstream export or bump the pipeline spec (features/pipelines/) and retrain; "
            "no value was cast silently."
        )
        super().__init__(f"{source}: {heading}:\n" + "\n".join(lines) + "\n" + advice)


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


@dataclass
class Normalized:
    """What ``normalize_frame`` made of a frame: the frame in canonical dtypes, the per-row reasons it found
    (``{reason: mask}``), the recorded normalizations, and the original values of columns it changed lossily
    for some rows (those rows' quarantine shows what arrived, not the stand-in)."""

    frame: pd.DataFrame
    reasons: dict[str, np.ndarray]
    notes: list[dict[str, Any]]
    originals: dict[str, pd.Series]


INT64_LIMIT = 2.0**63  # floats at or beyond it do not fit int64


def normalize_frame(frame: pd.DataFrame, spec: PipelineSpec, include_label: bool = True) -> Normalized:
    """Apply each column's declared policy before validation, explicitly, and record every change.

    Timestamps: tz-aware values in another zone are converted to UTC; naive values are rejected per row
    (``to_utc``) or taken as UTC (``assume_utc``); ISO-8601 text (mixed offsets allowed) is parsed to UTC with the
    request path's parser, epoch numbers in text are rejected. Text held as Python objects becomes the string dtype,
    and a column declared ``normalization="nfc"`` is normalized to NFC (as on the request path). An integer column
    that arrives as floats (what Parquet and CSV make of integers with a null) is cast when every value is whole;
    a null is ``<column>:null`` and a fraction ``<column>:not_integer`` per row, as on every path. Anything else
    (numbers in a timestamp column, text in a number column) is left for the schema to refuse: never a silent
    cast."""
    frame = frame.copy(deep=False)  # columns are replaced, never changed in place
    reasons: dict[str, np.ndarray] = {}
    notes: list[dict[str, Any]] = []
    originals: dict[str, pd.Series] = {}
    for c in _columns(spec, include_label):
        if c.name not in frame.columns:
            continue
        s = frame[c.name]
        if c.kind == "timestamp":
            present = int(s.notna().sum())
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
        elif c.kind in TEXT_KINDS:
            if s.dtype == object and all(isinstance(v, str) for v in s.dropna()):
                s = s.astype("string")
                damaged = s.str.contains(_SURROGATE, regex=True).fillna(False).to_numpy(dtype=bool)
                if damaged.any():
                    reasons[f"{c.name}:invalid_utf8"] = damaged
                    s = s.where(~damaged)
            if isinstance(s.dtype, pd.StringDtype) and c.normalization == "nfc":
                s, changed = _nfc_column(s)
                if changed:
                    notes.append({"column": c.name, "action": "normalized_nfc", "rows": changed})
            frame[c.name] = s
        elif str(c.raw_dtype) == "int64" and str(s.dtype) != "int64" and s.dtype.kind in "fiu":
            frame[c.name] = _as_int64(s, c, reasons, notes)
            originals[c.name] = s
    return Normalized(frame, reasons, notes, originals)


def _nfc_column(s: pd.Series) -> tuple[pd.Series, int]:
    """A string column in NFC and how many rows changed; each distinct value is checked once."""
    from inferline.features.contract import factorize_text

    values = s.to_numpy(dtype=object, na_value=None)  # type: ignore[call-overload]
    joined = "\n".join(filter(None, values))
    if joined.isascii() or unicodedata.is_normalized("NFC", joined):  # the common case: one C pass (ASCII: none)
        return s, 0
    codes, uniques = factorize_text(values)
    texts, changed = nfc_texts(uniques.tolist())
    if not changed:
        return s, 0
    moved = np.fromiter((a is not b for a, b in zip(texts, uniques, strict=True)), dtype=bool, count=len(texts))
    rows = int(np.append(moved, False)[codes].sum())
    return pd.Series(np.array([*texts, None], dtype=object)[codes], index=s.index, dtype="string"), rows


def _as_int64(s: pd.Series, col: Column, reasons: dict[str, np.ndarray], notes: list[dict[str, Any]]) -> pd.Series:
    """An integer column that arrived as floats (or another integer width): whole values become int64; each null
    is ``<column>:null`` (int64 has no null, on the wire either) and each fraction, infinity or value beyond int64
    ``<column>:not_integer``; those rows hold 0 as a stand-in (``Normalized.originals`` keeps what arrived)."""
    values = s.to_numpy(dtype="float64", na_value=np.nan)
    null = np.isnan(values)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(values) & (np.floor(values) == values) & (np.abs(values) < INT64_LIMIT)
    if s.dtype.kind in "iu" and not isinstance(s.dtype, pd.api.extensions.ExtensionDtype):
        whole = s.to_numpy() <= np.iinfo(np.int64).max if s.dtype.kind == "u" else np.ones(len(s), dtype=bool)
        null = np.zeros(len(s), dtype=bool)
    bad = ~null & ~whole
    if null.any():
        reasons[f"{col.name}:null"] = null
    if bad.any():
        reasons[f"{col.name}:not_integer"] = bad
    ints = np.zeros(len(s), dtype=np.int64)
    ok = ~null & ~bad
    ints[ok] = s[ok].to_numpy(dtype="float64" if s.dtype.kind == "f" else "int64").astype(np.int64)
    notes.append({"column": col.name, "action": f"{s.dtype}_to_int64", "rows": int(ok.sum())})
    return pd.Series(ints, index=s.index)


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


def _structural_problems(cases: Any, spec: PipelineSpec, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """pandera's failure cases as one problem per column: what was received (the dtype, or a few of the values
    that break it with their types, and how many), what was expected, and how to fix it."""
    problems: list[dict[str, Any]] = []
    dtype_breaks: dict[str, list[Any]] = {}
    for case in cases.itertuples():
        check = str(case.check)
        if check == "column_in_dataframe":
            problems.append(
                {"column": str(case.failure_case), "problem": "missing", "received": "no such column",
                 "expected": "present (add it upstream, or drop it from the spec and retrain)"}
            )  # fmt: skip
        elif check == "column_in_schema":
            problems.append(
                {"column": str(case.failure_case), "problem": "unexpected column", "received": "present",
                 "expected": "absent (strict schema: drop it upstream, or declare it in the spec)"}
            )  # fmt: skip
        elif check.startswith("dtype("):
            dtype_breaks.setdefault(str(case.column), []).append(case.failure_case)
        else:
            problems.append(
                {"column": str(case.column), "problem": check, "received": str(case.failure_case),
                 "expected": "see the pipeline spec"}
            )  # fmt: skip
    for name, failures in dtype_breaks.items():
        problems.append(_dtype_problem(spec.column(name), frame[name] if name in frame.columns else None, failures))
    return problems


def _dtype_problem(col: Column, values: pd.Series | None, failures: list[Any]) -> dict[str, Any]:
    expected = str(col.raw_dtype)
    whole_column = len(failures) == 1 and isinstance(failures[0], str) and _is_dtype_name(failures[0])
    received = failures[0] if whole_column else None
    offending: list[Any] = []
    if values is not None and values.dtype == object:
        wanted = str if col.kind in TEXT_KINDS else (int, float)
        offending = [v for v in values.dropna().tolist() if not isinstance(v, wanted) or isinstance(v, bool)]
    elif not whole_column:
        offending = failures
    problem = "dtype changed"
    if offending:
        received = f"{len(offending)} value(s) of another type, such as {_examples(offending)}"
    if col.kind in ("numeric", "integer", "label") and offending and all(isinstance(v, str) for v in offending):
        problem = "numbers arrive as text"
        not_numbers = [v for v in offending if not _is_number(v)]
        received = f"{len(offending)} value(s) as text"
        if not_numbers:
            received += f", {len(not_numbers)} of them not a number, such as {_examples(not_numbers)}"
        else:
            received += f", such as {_examples(offending)}"
        expected = (
            f"{expected} numbers: write them without thousands separators, units or currency signs "
            "(1234.50, not '1,234.50')"
        )
    elif col.kind in TEXT_KINDS:
        expected = f"{expected}: text values (write the column as strings upstream, e.g. '1042', not 1042)"
    elif col.kind == "timestamp":
        expected = f"{expected}: timestamps, or ISO-8601 text with an offset ('2026-03-01T12:00:00+01:00')"
    else:
        expected = f"{expected} (fix the upstream export, or change the column's kind in the spec and retrain)"
    return {"column": col.name, "problem": problem, "received": received, "expected": expected}


def _examples(values: list[Any]) -> str:
    distinct = list(dict.fromkeys(map(_hashable, values[:50])))[:3]
    return ", ".join(_shorten(f"{v!r}", 40) + f" ({type(v).__name__})" for v in distinct)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _hashable(v: Any) -> Any:
    try:
        hash(v)
    except TypeError:
        return repr(v)
    return v


def _shorten(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    normalized = normalize_frame(frame, spec, include_label)
    frame, parse_reasons, notes = normalized.frame, normalized.reasons, normalized.notes
    cases = contract.check_structure(frame, include_label)
    if cases is not None and len(cases):
        raise FileLevelError(source, _structural_problems(cases, spec, frame))
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
    refused = frame[bad]
    if normalized.originals and bad.any():
        refused = refused.copy()
        for name, values in normalized.originals.items():
            refused[name] = values[bad].to_numpy()
    return ValidationResult(
        valid=frame[~bad].reset_index(drop=True),
        quarantine=_quarantine(refused, reasons),
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
