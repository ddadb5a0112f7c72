"""Each column's declared policy, applied to a data set before its validation (``features.validation``): what a
frame's cells become in their canonical dtypes, and the per-row reasons found on the way.

``normalize_frame`` converts timestamps to UTC (RFC 3339 text parsed with the request path's parser), text held
as objects to the string dtype (NFC where the column says so; bytes that are not UTF-8 are ``invalid_utf8``),
integers that arrived as floats to int64, and the number cells of a CSV column read as text (``number_cells``,
``integer_cells``, ``number_problem``) to numbers, each cell that is none its row's defect. Nothing is cast
silently; ``as_arrived`` keeps what arrived for the quarantine wherever the canonical form loses it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from inferline.features.column_plan import factorize_text
from inferline.features.spec import Column, PipelineSpec
from inferline.features.vocabulary import NUMBER_KINDS, TEXT_KINDS
from inferline.features.wire import INT64_MAX, INT64_MIN, nfc_texts, offset_of, parse_instant

__all__ = [
    "BEYOND_FLOAT64",
    "BEYOND_INT64",
    "NON_ASCII_DIGITS",
    "NOT_A_NUMBER",
    "NOT_INTEGER",
    "REASON_ADVICE",
    "Normalized",
    "as_arrived",
    "escape_undecodable",
    "integer_cells",
    "normalize_frame",
    "number_cells",
    "number_of",
    "number_problem",
]


def _columns(spec: PipelineSpec, include_label: bool) -> tuple[Column, ...]:
    return spec.columns if include_label else spec.input_columns


_SURROGATE = "[\udc80-\udcff]"  # what surrogateescape makes of bytes that are not UTF-8


@dataclass
class Normalized:
    """What ``normalize_frame`` made of a frame: the frame in canonical dtypes, the per-row reasons it found
    (``{reason: mask}``), the recorded normalizations, and the columns as they arrived where the canonical form
    loses what arrived for some rows (timestamps as text, naive or beyond nanoseconds; text that is not UTF-8;
    numbers as text; integers as floats): the quarantine shows those rows as they arrived (``as_arrived``), not
    the stand-in (NaT, null, 0)."""

    frame: pd.DataFrame
    reasons: dict[str, np.ndarray]
    notes: list[dict[str, Any]]
    originals: dict[str, pd.Series]


INT64_LIMIT = 2.0**63  # floats at or beyond it do not fit int64
# What each reason a value's parsing gives means and how to fix it (printed beside its count and an example)
REASON_ADVICE: dict[str, str] = {
    "not_a_number": "no number: write ASCII digits without thousands separators, units or currency signs",
    "non_ascii_digits": "digits other than ASCII 0-9 (full-width, Arabic-Indic ...): write ASCII digits",
    "beyond_float64": "beyond float64's range (|x| < 1.8e308): write a value within it, or a null where unknown",
    "beyond_int64": "outside int64's range (-2**63 to 2**63-1): write a value within it, or declare it numeric",
    "not_integer": "a fraction or infinity in an integer column: write whole numbers",
    "unparseable": "not RFC 3339 text: write e.g. '2026-03-01T12:00:00+01:00' (T or space, Z or +hh:mm)",
    "naive_timestamp": "no UTC offset: write one ('Z', '+01:00'), or declare timezone_policy='assume_utc'",
    "epoch_number": "an epoch number (its unit and zone would be guesses): write RFC 3339 text with an offset",
    "invalid_utf8": "bytes that are not UTF-8 (kept backslash-escaped in the quarantine): re-export as UTF-8",
    "out_of_bounds": "outside the years 1678-2261 that nanosecond timestamps hold",
}
NULL = "null"
# Reasons of a number column's cell (``<column>:<code>``), beside ``null``:
NOT_A_NUMBER = "not_a_number"  # text that no number notation reads ('abc', '2026-01-05', '0x1p-3', '1,234.50')
NON_ASCII_DIGITS = "non_ascii_digits"  # a number written in other digits ('１２３' full-width, '١٢٣' Arabic-Indic)
BEYOND_FLOAT64 = "beyond_float64"  # a number float64 cannot hold ('1e309' would become inf)
NOT_INTEGER = "not_integer"  # a fraction, NaN's kin inf, in an integer column
BEYOND_INT64 = "beyond_int64"  # a whole number outside int64 (a uint64 at or above 2**63, 1e19)
# The notation of a number in text: what pandas' CSV reader reads as one (ASCII digits, a sign, a decimal point,
# an exponent, white space around it; inf and infinity). ``re.ASCII``: ``\s`` and the digits are ASCII only.
_NUMBER_TEXT = re.compile(
    r"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity)\s*", re.ASCII | re.IGNORECASE
)
_INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def number_of(text: str, integer: bool) -> int | float | None:
    """``text`` as a value of its column when it is a number in ``_NUMBER_TEXT``'s notation that the column holds:
    an integer column's whole numbers within int64 as an exact ``int``, a float column's numbers within float64
    (inf only as written), else None."""
    if integer and _INTEGER_TEXT.fullmatch(text):
        n = int(text)
        return n if INT64_MIN <= n <= INT64_MAX else None
    if not _NUMBER_TEXT.fullmatch(text):
        return None
    x = float(text)
    if integer:
        return int(x) if math.isfinite(x) and x.is_integer() and abs(x) < INT64_LIMIT else None
    return None if math.isinf(x) and "inf" not in text.lower() else x  # '1e309' overflows: not the value sent


def number_cells(values: pd.Series, col: Column) -> pd.Series:
    """A number column's cells that arrived as text (a CSV column pandas could not read as numbers: one cell that
    is no number makes it text) -> an object Series where each cell in the notation of a number
    (``_NUMBER_TEXT``, what pandas reads as one) that the column holds is that number (``number_of``: an ``int``
    in an integer column), and every other cell keeps its text as it arrived: validation makes each such cell its
    row's defect (``number_problem``)."""
    integer = str(col.raw_dtype) == "int64"
    out = values.to_numpy(dtype=object, copy=True)
    for i, v in enumerate(out.tolist()):
        if isinstance(v, str):
            number = number_of(v, integer)
            if number is not None:
                out[i] = number
    return pd.Series(out, index=values.index, dtype=object)


_SHORT_INTEGER = re.compile(r"-?[0-9]{1,18}", re.ASCII)  # at most 18 digits: always within int64


def integer_cells(values: pd.Series, col: Column) -> pd.Series:
    """An integer column's CSV cells, read as text (pandas would read a column with a null as float64, and lose
    every whole number beyond 2**53) -> int64 when every cell is a short integer (one C pass), else
    ``number_cells``: nullable ``Int64`` (exact; each null its row's ``<column>:null``) when every cell is a
    number or a null, or an object Series holding the text of the cells that are no value of the column."""
    present = values.dropna()
    if len(present) == len(values) and present.str.fullmatch(_SHORT_INTEGER.pattern).all():
        return values.astype("int64")
    cells = number_cells(values, col)
    texts = [isinstance(v, str) for v in cells.tolist()]
    if not any(texts):
        return pd.Series(
            pd.array([None if pd.isna(v) else v for v in cells.tolist()], dtype="Int64"), index=cells.index
        )
    if sum(texts) == int(cells.notna().sum()):  # no cell is an integer: still a column of numbers where some are
        cells = _finite_numbers(cells)  # numbers (3.5: not_integer per row, as from Parquet), not a dtype break
        if not any(isinstance(v, str) for v in cells.tolist()):
            return cells.astype("float64")  # an integer column of floats: normalize_frame's per-row reasons
    return cells


def _finite_numbers(cells: pd.Series) -> pd.Series:
    """Each text cell in a number's notation with a finite value as that float (a CSV has no types: ``3.5`` in an
    integer column is a number that is no integer); the other cells as they are."""
    out = cells.to_numpy(dtype=object, copy=True)
    for i, v in enumerate(out.tolist()):
        if isinstance(v, str) and _NUMBER_TEXT.fullmatch(v) and math.isfinite(x := float(v)):
            out[i] = x
    return pd.Series(out, index=cells.index, dtype=object)


def number_problem(text: str, integer: bool = False) -> str:
    """Why ``text`` is not a value of a number column: its notation holds but the value does not fit
    (``beyond_float64``; in an integer column ``beyond_int64``, or ``not_integer`` for a fraction or inf), its
    digits are not ASCII (``non_ascii_digits``: Python's ``float`` would read them, inferline casts nothing
    silently), or it is no number (``not_a_number``)."""
    if _NUMBER_TEXT.fullmatch(text):
        if not integer:
            return BEYOND_FLOAT64
        x = float(text)
        return BEYOND_INT64 if (math.isinf(x) and "inf" not in text.lower()) or x.is_integer() else NOT_INTEGER
    folded = unicodedata.normalize("NFKC", text)  # full-width digits, signs and points -> ASCII
    digits = "".join(str(d) if (d := unicodedata.decimal(c, None)) is not None else c for c in folded)
    if digits != text and _NUMBER_TEXT.fullmatch(digits):
        return NON_ASCII_DIGITS
    return NOT_A_NUMBER


def _holds_text_and_numbers(s: pd.Series) -> bool:
    """An object column with both text and numbers in it: a number column read from text where some cells were
    numbers (``number_cells``). A column of text alone is a dtype break (numbers arrive as text)."""
    text = number = False
    for v in s.dropna().tolist():
        if isinstance(v, str):
            text = True
        elif isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_):
            number = True
        if text and number:
            return True
    return False


def normalize_frame(frame: pd.DataFrame, spec: PipelineSpec, include_label: bool = True) -> Normalized:
    """Apply each column's declared policy before validation, explicitly, and record every change.

    Timestamps: tz-aware values in another zone are converted to UTC; naive values are rejected per row
    (``to_utc``) or taken as UTC (``assume_utc``); RFC 3339 text (mixed offsets allowed) is parsed to UTC with the
    request path's parser (``features.wire.parse_instant``), epoch numbers in text are rejected. Text held as
    Python objects becomes the string dtype, and a column declared ``normalization="nfc"`` is normalized to NFC (as
    on the request path). An integer column that arrives as floats (what Parquet and CSV make of integers with a
    null) is cast when every value is whole; a null is ``<column>:null``, a fraction ``<column>:not_integer`` and a
    whole number outside int64 ``<column>:beyond_int64`` per row, as on every path. A number column holding both
    numbers and text (a CSV column with a cell that is no number, ``number_cells``) keeps its numbers, and each
    text cell is its row's defect (``number_problem``). Anything else (numbers in a timestamp column, a number
    column that is all text) is left for the schema to refuse: never a silent cast. ``Normalized.originals`` keeps
    what arrived wherever the canonical form loses it (``as_arrived``)."""
    frame = frame.copy(deep=False)  # columns are replaced, never changed in place
    reasons: dict[str, np.ndarray] = {}
    notes: list[dict[str, Any]] = []
    originals: dict[str, pd.Series] = {}
    for c in _columns(spec, include_label):
        if c.name not in frame.columns:
            continue
        s = arrived = frame[c.name]
        if c.kind == "timestamp":
            present = int(s.notna().sum())
            if s.dtype.kind == "M" or isinstance(s.dtype, pd.DatetimeTZDtype):
                s = _outside_ns_range(s, c, reasons)
                if f"{c.name}:out_of_bounds" in reasons:
                    originals[c.name] = arrived
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
                    originals[c.name] = arrived
            elif s.dtype == object or isinstance(s.dtype, pd.StringDtype):
                parsed, offsets = _parse_text_timestamps(s, c, reasons)
                frame[c.name] = pd.Series(pd.DatetimeIndex(parsed, tz="UTC"), index=s.index)
                originals[c.name] = arrived  # text: the quarantine shows it as it arrived, unparseable or not
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
                    originals[c.name] = arrived
            if isinstance(s.dtype, pd.StringDtype) and c.normalization == "nfc":
                s, changed = _nfc_column(s)
                if changed:
                    notes.append({"column": c.name, "action": "normalized_nfc", "rows": changed})
            frame[c.name] = s
        elif c.kind in NUMBER_KINDS and s.dtype == object and _holds_text_and_numbers(s):
            frame[c.name] = _numbers_from_cells(number_cells(s, c), c, reasons, notes)
            originals[c.name] = s
        elif str(c.raw_dtype) == "int64" and str(s.dtype) != "int64" and s.dtype.kind in "fiu":
            frame[c.name] = _as_int64(s, c, reasons, notes)
            originals[c.name] = s
    return Normalized(frame, reasons, notes, originals)


def _nfc_column(s: pd.Series) -> tuple[pd.Series, int]:
    """A string column in NFC and how many rows changed; each distinct value is checked once."""
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
    is ``<column>:null`` (int64 has no null, on the wire either), each fraction or infinity ``<column>:not_integer``
    and each whole value outside int64 (a uint64 at or above 2**63) ``<column>:beyond_int64``; those rows hold 0
    as a stand-in (``Normalized.originals`` keeps what arrived)."""
    if s.dtype.kind in "iu":  # numpy or nullable integers: compared exactly, never through float64
        null = s.isna().to_numpy(dtype=bool)
        whole = np.ones(len(s), dtype=bool)
        beyond = np.zeros(len(s), dtype=bool)
        if s.dtype.kind == "u":
            beyond[~null] = s[~null].to_numpy(dtype="uint64") > np.iinfo(np.int64).max
    else:
        values = s.to_numpy(dtype="float64", na_value=np.nan)
        null = np.isnan(values)
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(values) & (np.floor(values) == values)
        beyond = whole & (np.abs(values) >= INT64_LIMIT)
    bad = ~null & ~whole
    for code, mask in ((NULL, null), (NOT_INTEGER, bad), (BEYOND_INT64, beyond)):
        if mask.any():
            reasons[f"{col.name}:{code}"] = mask
    ints = np.zeros(len(s), dtype=np.int64)
    ok = ~null & ~bad & ~beyond
    ints[ok] = s[ok].to_numpy(dtype="float64" if s.dtype.kind == "f" else "int64").astype(np.int64)
    notes.append({"column": col.name, "action": f"{s.dtype}_to_int64", "rows": int(ok.sum())})
    return pd.Series(ints, index=s.index)


def _numbers_from_cells(
    cells: pd.Series, col: Column, reasons: dict[str, np.ndarray], notes: list[dict[str, Any]]
) -> pd.Series:
    """A number column's cells (``number_cells``: numbers, nulls and the text that is none) -> float64, or int64
    for an integer column; each cell that is no value of the column is its row's reason (``number_problem``,
    ``not_integer``, ``beyond_int64``) with a stand-in (NaN, 0), so one bad cell costs only its row."""
    integer = str(col.raw_dtype) == "int64"
    n = len(cells)
    out = np.zeros(n, dtype=np.int64) if integer else np.full(n, np.nan)
    found: dict[str, np.ndarray] = {}

    def mark(code: str, i: int) -> None:
        found.setdefault(f"{col.name}:{code}", np.zeros(n, dtype=bool))[i] = True

    for i, v in enumerate(cells.tolist()):
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            if integer:
                mark(NULL, i)
        elif isinstance(v, str):
            mark(number_problem(v, integer), i)
        elif not isinstance(v, int | float | np.number) or isinstance(v, bool | np.bool_):
            mark(NOT_A_NUMBER, i)
        elif not integer:
            try:
                out[i] = float(v)
            except OverflowError:  # an int beyond float64
                mark(BEYOND_FLOAT64, i)
        elif isinstance(v, int | np.integer):
            if INT64_MIN <= int(v) <= INT64_MAX:
                out[i] = int(v)
            else:
                mark(BEYOND_INT64, i)
        elif not math.isfinite(x := float(v)) or not x.is_integer():
            mark(NOT_INTEGER, i)
        elif abs(x) >= INT64_LIMIT:
            mark(BEYOND_INT64, i)
        else:
            out[i] = int(x)
    reasons.update(found)
    refused = np.zeros(n, dtype=bool)
    for mask in found.values():
        refused |= mask
    converted = int((~refused & cells.notna().to_numpy(dtype=bool)).sum())
    notes.append({"column": col.name, "action": f"text_to_{'int64' if integer else 'float64'}", "rows": converted})
    return pd.Series(out, index=cells.index)


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
    """RFC 3339 text -> UTC ``datetime64[ns]`` with the request path's parser (``features.wire.parse_instant``);
    each refused value's reason goes into ``reasons``; returns the values and the offsets seen."""
    n = len(s)
    out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    offsets: set[str] = set()
    assume_utc = col.timezone_policy == "assume_utc"
    for i, v in enumerate(s):
        if v is None or v is pd.NA or (isinstance(v, float) and v != v):
            continue
        text = str(v)
        if not text:  # an empty string is a null, as on the request path (the wire has no other null for text);
            continue  # white space alone is text, unparseable there and here
        ns, problem = parse_instant(text, assume_utc)
        if problem is not None:
            reasons.setdefault(f"{col.name}:{problem}", np.zeros(n, dtype=bool))[i] = True
        else:
            out[i] = ns
            offset = offset_of(text)
            if offset is not None:
                offsets.add(offset)
    return out.view("datetime64[ns]"), offsets


def escape_undecodable(text: str) -> str:
    """Text read with ``surrogateescape`` (bytes that are not UTF-8 as lone surrogates, which no Parquet or JSON
    file can hold) -> the same text backslash-escaped, losslessly: each backslash doubled, each byte that is not
    UTF-8 as ``\\xHH`` (its hex value), everything else as it was. Text without such bytes is returned as it is.
    The quarantine holds a value escaped this way exactly where its row's reasons include
    ``<column>:invalid_utf8``."""
    if not any(0xDC80 <= ord(c) <= 0xDCFF for c in text):
        return text
    raw = text.replace("\\", "\\\\").encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def as_arrived(values: pd.Series) -> pd.Series:
    """A column as it arrived, in a form a Parquet file holds: text stays text (bytes that are not UTF-8
    backslash-escaped, ``escape_undecodable``); a column of numbers and text (numbers as text, one cell not a
    number) becomes text, each number as Python writes it; timestamps and numbers stay what they were."""
    if values.dtype != object and not isinstance(values.dtype, pd.StringDtype):
        return values
    texts = [None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v) for v in values]
    return pd.Series([None if t is None else escape_undecodable(t) for t in texts], index=values.index, dtype="string")
