"""The wire codec: how raw values travel between clients, Triton, the monitor and the feature contract.

One module for every direction, so that no stage spells an encoding of its own:

- rows (a DataFrame or dicts) -> wire tensors, one ``[n, 1]`` array per raw input column (``encode_rows``);
- wire tensors -> JSON lists and back (``to_json_columns`` / ``from_json_columns``: the monitor's samples);
- wire values -> canonical values (``decode_text``, ``parse_instant``): what the compiled contract reads.

Wire types per column kind: BYTES (UTF-8) for id, categorical, text and timestamps (RFC 3339 with its offset, so
that the timezone policy runs server-side), FP64 for numeric, INT64 for integer. An empty BYTES element and a NaN
are nulls. Values that are not valid UTF-8 travel as their raw bytes (``surrogateescape`` in JSON) and are reported
as ``<column>:invalid_utf8`` by the contract, never dropped.
"""

from __future__ import annotations

import operator
import re
import typing
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import attrgetter
from typing import Any

import numpy as np
import pandas as pd

from inferline.core.errors import UserError
from inferline.features.spec import Column, PipelineSpec

__all__ = [
    "INVALID_UTF8",
    "WireError",
    "decode_text",
    "decode_value",
    "encode_rows",
    "from_json_columns",
    "nfc_texts",
    "parse_instant",
    "shape_groups",
    "to_json_columns",
]

INVALID_UTF8 = "invalid_utf8"
UNPARSEABLE = "unparseable"
NAIVE = "naive_timestamp"
EPOCH_NUMBER = "epoch_number"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS_MIN, _NS_MAX = datetime(1678, 1, 1, tzinfo=UTC), datetime(2262, 1, 1, tzinfo=UTC)  # datetime64[ns] range
_MICROSECOND = timedelta(microseconds=1)
_US_MIN, _US_MAX = (_NS_MIN - _EPOCH) // _MICROSECOND, (_NS_MAX - _EPOCH) // _MICROSECOND
_EPOCH_TEXT = re.compile(r"[+-]?\d{9,13}(?:\.\d+)?")


class WireError(UserError, ValueError):
    """Rows that cannot be put on the wire (a missing column, a value of the wrong type)."""

    docs = "tutorials/bring-your-own-model.md#8-predict"


# ------------------------------------------------------------------------------------------ wire -> canonical
def nfc_texts(texts: Sequence[str | None]) -> tuple[list[str | None], int]:
    """Texts in Unicode NFC (the canonical form of a column declared ``normalization="nfc"``) and how many changed.
    The common case, everything already NFC, is one C pass over the values joined by a newline (a starter that
    composes with nothing, so the joined text is NFC exactly when every value is)."""
    joined = "\n".join(filter(None, texts))
    if joined.isascii() or unicodedata.is_normalized("NFC", joined):  # ASCII text is NFC: an O(1) check
        return list(texts), 0
    out = [t if not t or unicodedata.is_normalized("NFC", t) else unicodedata.normalize("NFC", t) for t in texts]
    return out, sum(a is not b for a, b in zip(out, texts, strict=True))


def decode_value(v: Any) -> tuple[str | None, bool]:
    """One BYTES element -> ``(text or None, invalid_utf8)``; an empty element is a null."""
    if isinstance(v, bytes):
        try:
            return (v.decode("utf-8") or None), False
        except UnicodeDecodeError:
            return None, True
    if v is None or v is pd.NA:
        return None, False
    if isinstance(v, float) and v != v:
        return None, False
    return (str(v) or None), False


def decode_text(values: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """A BYTES tensor -> (object array of text with None for null, mask of invalid UTF-8 or None if none)."""
    n = len(values)
    out = np.empty(n, dtype=object)
    bad: np.ndarray | None = None
    for i, v in enumerate(values):
        text, invalid = decode_value(v)
        out[i] = text
        if invalid:
            if bad is None:
                bad = np.zeros(n, dtype=bool)
            bad[i] = True
    return out, bad


# The timestamp grammar of every path: RFC 3339's ``date-time`` (section 5.6), a profile of ISO 8601, read exactly:
#   full-date ("T" / "t" / " ") hh ":" mm ":" ss ["." 1*9 digits] ["Z" / "z" / ("+" / "-") hh ":" mm]
# ASCII digits only; a fraction of up to 9 digits (nanoseconds, what the canonical form holds: never truncated);
# white space around the value is ignored. Without an offset a value is naive (the column's timezone policy
# decides), and so is a ``full-date`` alone (midnight). Anything else ISO 8601 or ``datetime.fromisoformat`` would
# read (basic format ``20260105T100000Z``, week dates, a comma fraction, minutes without seconds, ``+0000`` or
# ``+00`` offsets, any other separator) is ``unparseable``.
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:(?P<sep>[Tt ])(?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?)?",
    re.ASCII,
)
# the common case, checked over a whole column at once: an offset and at most microseconds, which
# ``datetime.fromisoformat`` reads exactly (after upper-casing ``t`` and ``z``)
_RFC3339_US = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})",
    re.ASCII,
)
TIMESTAMP_GRAMMAR = (
    "RFC 3339 text: 'YYYY-MM-DDThh:mm:ss[.fraction of up to 9 digits]' and an offset ('Z' or '+hh:mm'; 't', 'z' "
    "and a space for 'T' accepted), e.g. '2026-03-01T12:00:00+01:00'"
)


def parse_instant(text: str, assume_utc: bool) -> tuple[int | None, str | None]:
    """RFC 3339 text (the grammar above, ``_RFC3339``) -> ``(nanoseconds since the epoch in UTC, None)`` or
    ``(None, reason)``.

    A value with an offset is converted to UTC; a naive value is taken as UTC when ``assume_utc``, else refused
    (``naive_timestamp``). An epoch number is refused (``epoch_number``: its unit and zone would be guesses), and
    so are text outside the grammar and a date outside what nanosecond timestamps hold (``unparseable``). The
    calendar (months, days, leap years, hours 0-23, offsets below 24 hours) is ``datetime``'s."""
    value = text.strip()
    m = _RFC3339.fullmatch(value)
    if m is None:
        return None, EPOCH_NUMBER if _EPOCH_TEXT.fullmatch(value) else UNPARSEABLE
    offset = m["offset"]
    if offset is None and not assume_utc:
        return None, NAIVE
    base = f"{m['date']}T{m['time'] or '00:00:00'}"
    try:
        dt = datetime.fromisoformat(base + ("+00:00" if offset is None or offset in "Zz" else offset))
    except ValueError:
        return None, UNPARSEABLE
    us = (dt - _EPOCH) // _MICROSECOND
    if not _US_MIN <= us < _US_MAX:
        return None, UNPARSEABLE
    fraction = m["fraction"]
    return us * 1000 + (int(fraction.ljust(9, "0")) if fraction else 0), None


def offset_of(text: str) -> str | None:
    """The UTC offset an RFC 3339 text carries (``+0100``; ``Z`` is ``+0000``), None when it has none or is no
    such text: for normalization notes."""
    m = _RFC3339.fullmatch(text.strip())
    if m is None or m["offset"] is None:
        return None
    offset = m["offset"]
    return "+0000" if offset in "Zz" else offset.replace(":", "")


# ------------------------------------------------------------------------------------------ rows -> wire
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _refuse(col: Column, row: int, value: Any, expected: str) -> WireError:
    return WireError(
        f"column {col.name!r}, row {row}: {repr(value)[:40]} cannot be sent as {col.triton_dtype} "
        f"(expected {expected}); fix or drop the row"
    )


def _utf8(col: Column, row: int, text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(col, row, text, "valid Unicode text, no lone surrogates") from None


def _number(col: Column, row: int, value: Any) -> float:
    if value is None or value is pd.NA or value is pd.NaT:
        return float("nan")  # the FP64 wire's null
    if isinstance(value, bool | str | bytes) or not isinstance(value, int | float | np.number):
        raise _refuse(col, row, value, "a number or a null")
    try:
        return float(value)
    except OverflowError:
        raise _refuse(col, row, value, "a number within float64's range") from None


def _integer(col: Column, row: int, value: Any, refused: dict[int, str] | None = None) -> int:
    """One INT64 wire value. A null or a value that is no int64 (a fraction, text, a whole number beyond int64)
    is refused, or, with ``refused``, recorded there as the row's reason (``<column>:null``,
    ``<column>:not_integer``, ``<column>:beyond_int64``: what validation reports for it) and sent as a stand-in
    0."""
    integral = isinstance(value, int | np.integer) and not isinstance(value, bool)
    if not integral and isinstance(value, float | np.floating) and np.isfinite(value) and float(value).is_integer():
        integral, value = True, int(value)
    if not integral or not INT64_MIN <= int(value) <= INT64_MAX:
        beyond = ", received a whole number outside it" if integral else ""
        if refused is None:
            raise _refuse(
                col, row, value, f"an integer within int64's range{beyond}, not null: the INT64 wire has no null"
            )
        null = value is None or value is pd.NA or (isinstance(value, float | np.floating) and np.isnan(value))
        refused.setdefault(row, f"{col.name}:{'null' if null else 'beyond_int64' if integral else 'not_integer'}")
        return 0
    return int(value)


def _encode_tensor(col: Column, values: pd.Series, refused: dict[int, str] | None = None) -> np.ndarray:
    """A tensor column as its wire tensor ``[n, *shape]`` in its declared dtype. A row that is not such an array
    (null, empty, wrong dtype or shape) is refused naming column, row and the reason, or, with ``refused``,
    recorded there as the row's reason (``<column>:empty``...) and sent as zeros of the other rows' shape, so
    that it costs only itself."""
    from inferline.features.tensors import TensorPlan

    plan = TensorPlan(col, load_preprocess=False)  # the wire carries raw rows: the user's function runs server-side
    rows: list[np.ndarray | None] = []
    for i, v in enumerate(values):
        a, problem = plan._row(v)
        if a is None:
            if refused is None:
                raise WireError(
                    f"column {col.name!r} row {i}: {problem}; expected an array of {col.dtype} with shape "
                    f"{list(col.shape)} (-1: any size) per row"
                )
            refused.setdefault(i, f"{col.name}:{problem}")
        rows.append(a)
    shapes = {a.shape for a in rows if a is not None}
    if len(shapes) > 1:
        raise WireError(
            f"column {col.name!r}: rows of {len(shapes)} shapes {sorted(shapes)[:3]} in one call; one request holds "
            "one shape: pad them to one length, or send each shape in its own call"
        )
    # a refused row's stand-in: zeros of the others' shape (a variable dimension of 1 when no row is good)
    shape = next(iter(shapes), tuple(max(d, 1) for d in col.shape))
    stand_in = np.zeros(shape, dtype=plan.dtype)
    if rows:
        return np.stack([stand_in if a is None else a for a in rows])
    return np.zeros((0, *(max(d, 0) for d in col.shape)), dtype=plan.dtype)


def _encode_column(col: Column, values: pd.Series, refused: dict[int, str] | None = None) -> np.ndarray:
    """One column as its wire tensor ``[n, 1]``; a value the wire cannot carry is refused naming column and row
    (an integer column's null or fraction goes to ``refused`` instead, where given: see ``_integer``)."""
    if col.kind == "tensor":
        return _encode_tensor(col, values, refused)
    if col.triton_dtype == "BYTES":
        if col.kind == "timestamp" and pd.api.types.is_datetime64_any_dtype(values):
            text = [("" if pd.isna(v) else v.isoformat()) for v in values]
        else:
            text = ["" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]
        return np.array([_utf8(col, i, t) for i, t in enumerate(text)], dtype=np.object_).reshape(-1, 1)
    kind = values.dtype.kind
    if col.triton_dtype == "FP64":
        if kind in "fiu":  # already numeric: one vectorised cast
            return values.to_numpy(dtype=np.float64, na_value=np.nan).reshape(-1, 1)
        return np.array([_number(col, i, v) for i, v in enumerate(values)], dtype=np.float64).reshape(-1, 1)
    if kind == "i" or (kind == "u" and str(values.dtype) != "uint64"):
        return values.to_numpy(dtype=np.int64).reshape(-1, 1)
    return np.array([_integer(col, i, v, refused) for i, v in enumerate(values)], dtype=np.int64).reshape(-1, 1)


def encode_rows(
    rows: pd.DataFrame | Sequence[Mapping[str, Any]],
    spec: PipelineSpec | Sequence[Column],
    refused: dict[int, str] | None = None,
) -> dict[str, np.ndarray]:
    """Rows -> one wire tensor ``[n, 1]`` per input column of ``spec`` (a spec, or its input columns); a tensor
    column's tensor is ``[n, *shape]``. ``refused`` (row -> reason) receives the rows whose integer value the
    INT64 wire cannot carry (a null, a fraction), instead of refusing the call: the client answers them with
    that reason as their status, as validation quarantines them."""
    inputs = spec.input_columns if isinstance(spec, PipelineSpec) else tuple(spec)
    if isinstance(rows, pd.DataFrame):
        frame = rows
    else:
        try:
            frame = pd.DataFrame(list(rows))
        except OverflowError:  # an integer beyond 64 bits: keep the values as given, the encoder names them
            frame = pd.DataFrame(list(rows), dtype=object)
    missing = [c.name for c in inputs if c.name not in frame.columns]
    if missing:
        raise WireError(f"rows lack column(s) {missing}; expected every input column: {[c.name for c in inputs]}")
    return {c.name: _encode_column(c, frame[c.name], refused) for c in inputs}


def shape_groups(rows: pd.DataFrame, spec: PipelineSpec) -> list[np.ndarray]:
    """Positions of ``rows`` grouped by the shapes of their values in the spec's tensor columns with a variable
    dimension (token ids of different lengths), in order of first appearance: one request carries one shape, so
    each group goes in requests of its own. One group when no such column varies; the rows the wire refuses (a
    null, the wrong rank) make one more group, each answered with its reason."""
    from inferline.features.tensors import TensorPlan

    variable = [c for c in spec.tensor_columns if -1 in c.shape and c.name in rows.columns]
    if not variable:
        return [np.arange(len(rows))]
    keys: list[tuple[Any, ...]] = [()] * len(rows)
    for c in variable:
        plan = TensorPlan(c, load_preprocess=False)
        shapes = [a.shape if a is not None else None for a, _ in map(plan._row, rows[c.name])]
        keys = [(*k, shape) for k, shape in zip(keys, shapes, strict=True)]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [np.asarray(g, dtype=np.int64) for g in groups.values()]


# ------------------------------------------------------------------------------------------ wire <-> JSON
def _json_column(values: np.ndarray) -> list[Any]:
    flat = np.asarray(values).reshape(-1)
    if flat.dtype == np.object_:
        return [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in flat]
    if flat.dtype.kind == "f":
        return [None if np.isnan(v) else float(v) for v in flat]
    return [int(v) for v in flat]


def to_json_columns(arrays: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
    """Wire tensors -> JSON lists: text (invalid UTF-8 as surrogate escapes, so nothing is lost), numbers, None
    for NaN."""
    return {name: _json_column(values) for name, values in arrays.items()}


def from_json_columns(columns: Mapping[str, list[Any]], spec: PipelineSpec | Sequence[Column]) -> dict[str, np.ndarray]:
    """The inverse of ``to_json_columns`` for every input column of ``spec``: the wire tensors."""
    inputs = spec.input_columns if isinstance(spec, PipelineSpec) else tuple(spec)
    missing = [c.name for c in inputs if c.name not in columns]
    if missing:
        raise WireError(f"samples lack column(s) {missing}; send every input column: {[c.name for c in inputs]}")
    arrays: dict[str, np.ndarray] = {}
    for c in inputs:
        values = columns[c.name]
        if c.triton_dtype == "BYTES":
            arrays[c.name] = np.array([str(v).encode("utf-8", "surrogateescape") for v in values], dtype=np.object_)
        elif c.triton_dtype == "FP64":
            arrays[c.name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            arrays[c.name] = np.array([_integer(c, i, v) for i, v in enumerate(values)], dtype=np.int64)
    return arrays


# ------------------------------------------------------------------------------------------ columns
def decode_column(values: Any) -> tuple[list[str | None], list[int] | None]:
    """A BYTES tensor -> (text per element with None for null, indices of invalid UTF-8 or None). One pass in
    C for the common case (every element valid UTF-8 bytes); element by element otherwise."""
    try:
        texts: list[str | None] = list(map(bytes.decode, values))
    except (TypeError, UnicodeDecodeError):
        decoded, bad = decode_text(values)
        return decoded.tolist(), (np.flatnonzero(bad).tolist() if bad is not None else None)
    if "" in texts:
        texts = [t or None for t in texts]
    return texts, None


_S_LO = (_NS_MIN - _EPOCH) // timedelta(seconds=1)
_S_HI = (_NS_MAX - _EPOCH) // timedelta(seconds=1)
_DELTA = attrgetter("days", "seconds", "microseconds")


def parse_instants(values: Any, assume_utc: bool) -> tuple[np.ndarray, list[str | None] | None]:
    """A BYTES tensor of RFC 3339 text -> (int64 ns in UTC with NaT for null or refused, reason code per element
    or None when none was refused); the same result as ``parse_instant`` on each value. The common case (every
    value in the grammar with an offset and at most microseconds, ``_RFC3339_US``) runs the grammar's regex,
    ``datetime.fromisoformat`` and the subtraction of the epoch as C loops (``map``), in integers throughout, so no
    precision is lost. Anything else is parsed value by value."""
    n = len(values)
    out = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    texts, invalid = decode_column(values)
    present = typing.cast(list[str], texts)  # checked just below: no None in it
    if invalid is None and None not in texts and all(map(_RFC3339_US.fullmatch, present)):
        try:  # the grammar holds, so upper-casing touches only 't' and 'z'
            parsed = list(map(datetime.fromisoformat, map(str.upper, present)))
        except ValueError:  # a day or hour the calendar has not: value by value, for the reason
            parsed = None
        if parsed is not None:  # every value has an offset (the regex requires one): all aware
            parts = np.array(list(map(_DELTA, map(operator.sub, parsed, repeat(_EPOCH, n)))), dtype=np.int64)
            seconds = parts[:, 0] * 86_400 + parts[:, 1]  # days, seconds and microseconds since the epoch
            inside = (seconds >= _S_LO) & (seconds < _S_HI)
            if inside.all():
                return seconds * 1_000_000_000 + parts[:, 2] * 1000, None
    reasons: list[str | None] | None = None
    bad = set(invalid or ())
    for i, text in enumerate(texts):
        if text is None:
            if i not in bad:
                continue
            problem: str | None = INVALID_UTF8
        else:
            ns, problem = parse_instant(text, assume_utc)
            if problem is None:
                out[i] = ns
                continue
        reasons = reasons or [None] * n
        reasons[i] = problem
    return out, reasons
