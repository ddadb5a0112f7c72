"""The lowerings of the rule operations (``features.rules``): for each operation, its scalar check (one value ->
bool), its vector check (``(xp, values) -> mask`` over numpy, cupy or object arrays) and its pandera ``Check``.

``OPS`` names each operation's ``Op``: its three lowerings and the column kinds it applies to. The scalar and
vector lowerings need numpy alone (the GPU check runs them where pandas is not installed): pandas and pandera are
imported only inside the pandera lowerings. A rule's arguments are read here too (``instant_ns`` for timestamp
bounds, ``import_function`` for an ``elementwise`` rule's function), so a bad one is a ``RuleError``.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from inferline.core.errors import UserError
from inferline.features.vocabulary import (
    ANY_KIND,
    CODE_POINT_SETS,
    MISREAD_PAIR,
    NUMBER_KINDS,
    TEXT_KINDS,
    UNTIDY,
    UNTIDY_JOINED,
    is_mojibake,
)

if TYPE_CHECKING:
    from inferline.features.rules import Rule

__all__ = ["OPS", "Op", "RuleError", "ScalarCheck", "VectorCheck", "chars_of", "import_function", "instant_ns"]

ScalarCheck = Callable[[Any], bool]
VectorCheck = Callable[[Any, Any], Any]  # (xp, values) -> mask


class RuleError(UserError, ValueError):
    """A rule is malformed or does not fit its column."""

    docs = "reference/contracts.md"


def chars_of(rule: Rule) -> str:
    """The characters a ``forbid_chars`` or ``forbid_code_points`` rule refuses."""
    if rule.op == "forbid_code_points":
        return "".join(CODE_POINT_SETS[x][0] for x in rule.args)
    return str(rule.args[0])


def import_function(path: str) -> Callable[[Any], bool]:
    from inferline.features.imports import ImportPathError, import_object

    try:
        target = import_object(path, "elementwise rule function")
    except ImportPathError as exc:
        raise RuleError(str(exc)) from exc
    if not callable(target):
        raise RuleError(f"elementwise rule function {path!r} is not callable")
    return target


# ---------------------------------------------------------------------------------------------- helpers


def instant_ns(text: str) -> int:
    """A rule's bound in the timestamp grammar every path reads (``features.wire.parse_instant``: RFC 3339, with an
    offset) -> nanoseconds since the epoch, exactly (the pandera lowering compares with the same instant)."""
    from inferline.features.wire import TIMESTAMP_GRAMMAR, parse_instant

    ns, problem = parse_instant(text, assume_utc=False) if isinstance(text, str) else (None, "unparseable")
    if problem == "naive_timestamp":
        raise RuleError(f"{text!r} has no offset; write the bound with one, e.g. '2026-03-01T00:00:00+00:00'")
    if ns is None:
        raise RuleError(f"{text!r} is not a timestamp bound; expected {TIMESTAMP_GRAMMAR}")
    return ns


# What UTF-8 becomes when read as cp1252 or latin-1: a lead byte (0xC2-0xF4, the same characters in both) followed


def _elementwise_check(fn: Callable[[Any], bool], rule: Rule) -> Any:
    import pandera.pandas as pa

    return pa.Check(fn, element_wise=True, name=rule.name, description=rule.message, ignore_na=True)


def _series_check(fn: Callable[[Any], Any], rule: Rule) -> Any:
    import pandera.pandas as pa

    return pa.Check(fn, name=rule.name, description=rule.message, ignore_na=True)


def _finite_series(s: Any) -> Any:
    import pandas as pd

    return pd.Series(np.isfinite(s.to_numpy(dtype="float64")), index=s.index)


def _utc_timestamp(text: str) -> Any:
    import pandas as pd

    return pd.Timestamp(instant_ns(text), tz="UTC")


def _builtin(method: str, *args: Any, rule: Rule, **kwargs: Any) -> Any:
    import pandera.pandas as pa

    return getattr(pa.Check, method)(
        *args, name=rule.name, error=rule.name, description=rule.message, ignore_na=True, **kwargs
    )


@dataclass(frozen=True)
class Op:
    """An operation's three lowerings and the column kinds it applies to."""

    kinds: frozenset[str]
    scalar: Callable[[Rule], ScalarCheck]
    vector: Callable[[Rule], VectorCheck]
    pandera: Callable[[Rule], Any]


def _number_op(
    scalar: Callable[[Sequence[Any]], ScalarCheck],
    vector: Callable[[Sequence[Any]], VectorCheck],
    pandera: Callable[[Rule], Any],
) -> Op:
    return Op(NUMBER_KINDS | {"tensor"}, lambda r: scalar(r.args), lambda r: vector(r.args), pandera)


def _matches_op() -> Op:
    def scalar(rule: Rule) -> ScalarCheck:
        full = re.compile(str(rule.args[0])).fullmatch
        return lambda v: full(v) is not None

    def vector(rule: Rule) -> VectorCheck:
        full = re.compile(str(rule.args[0])).fullmatch
        return lambda xp, v: np.array([m is not None for m in map(full, v)], dtype=bool)

    def pandera(rule: Rule) -> Any:
        return _builtin("str_matches", f"(?:{rule.args[0]})\\Z", rule=rule)

    return Op(TEXT_KINDS, scalar, vector, pandera)


def _forbid_op() -> Op:
    """Forbidden characters (``forbid_chars``, ``forbid_code_points``): one regex search per value; over a column,
    one search over all values joined (the common case, no forbidden character anywhere, costs one pass in C)."""

    def scalar(rule: Rule) -> ScalarCheck:
        chars = chars_of(rule)
        if len(chars) == 1:
            return lambda v: chars not in v
        search = _forbidden(chars).search
        return lambda v: search(v) is None

    def vector(rule: Rule) -> VectorCheck:
        chars = chars_of(rule)
        search = _forbidden(chars).search
        sep = next(c for c in "\n\t |~a" if c not in chars)
        printable_sep = next(c for c in " |~a" if c not in chars)
        unprintable = not any(c.isprintable() for c in chars)  # control characters: str.isprintable rules them out

        finditer = _forbidden(chars).finditer

        def run(xp: Any, v: Any) -> Any:
            if unprintable and _JOINED.of(v, printable_sep).isprintable():
                return np.ones(len(v), dtype=bool)
            joined = _JOINED.of(v, sep)
            if search(joined) is None:
                return np.ones(len(v), dtype=bool)
            # the separator is never forbidden, so every match lies in one value: find it by its offset
            lengths = np.fromiter(map(len, v), dtype=np.int64, count=len(v)) + len(sep)
            starts = np.cumsum(lengths) - lengths
            at = np.fromiter((m.start() for m in finditer(joined)), dtype=np.int64)
            ok = np.ones(len(v), dtype=bool)
            ok[np.searchsorted(starts, at, side="right") - 1] = False
            return ok

        return run

    def pandera(rule: Rule) -> Any:
        pattern = _forbidden(chars_of(rule)).pattern
        return _series_check(lambda s: ~s.str.contains(pattern, regex=True), rule)

    return Op(TEXT_KINDS, scalar, vector, pandera)


class _JoinCache(threading.local):
    """The values of one column joined by a separator: a column's text rules run one after another over the same
    list of distinct values, so its forbidden-character rules share one join per separator. Per thread (Dask
    workers score partitions in threads); the cache holds the list it was built from, so its identity is valid."""

    def __init__(self) -> None:
        self.values: Any = None
        self.joined: dict[str, str] = {}

    def of(self, values: Any, sep: str) -> str:
        if self.values is not values:
            self.values, self.joined = values, {}
        text = self.joined.get(sep)
        if text is None:
            text = self.joined[sep] = sep.join(values)
        return text


_JOINED = _JoinCache()


def _tidy(v: str) -> bool:
    return UNTIDY.search(v) is None or v.isspace()  # a blank value is not_blank's concern


def _tidy_vector(xp: Any, v: Any) -> Any:
    """One regex search over all values joined by a NUL (no white space, so it forms no run across values) for
    the common case, every value tidy; value by value otherwise."""
    if UNTIDY_JOINED.search(_JOINED.of(v, "\x00")) is None:
        return np.ones(len(v), dtype=bool)
    return np.fromiter(map(_tidy, v), dtype=bool, count=len(v))


def _tidy_series(s: Any) -> Any:
    return ~s.str.contains(UNTIDY.pattern, regex=True) | (s.str.strip().str.len() == 0)


def _compatible(v: str) -> bool:
    """No compatibility character: NFKC leaves the NFC form as it is (ASCII text: always)."""
    if v.isascii():
        return True
    canonical = unicodedata.normalize("NFC", v)
    return unicodedata.is_normalized("NFKC", canonical)


def _compatible_vector(xp: Any, v: Any) -> Any:
    if _JOINED.of(v, "\n").isascii():
        return np.ones(len(v), dtype=bool)
    return np.fromiter(map(_compatible, v), dtype=bool, count=len(v))


def _not_blank_vector(xp: Any, v: Any) -> Any:
    return np.fromiter(map(bool, v), dtype=bool, count=len(v)) & ~np.fromiter(
        map(str.isspace, v), dtype=bool, count=len(v)
    )


def _no_mojibake_vector(xp: Any, v: Any) -> Any:
    ascii_only = np.fromiter(map(str.isascii, v), dtype=bool, count=len(v))  # ASCII text is never mojibake
    if ascii_only.all():
        return ascii_only
    rows = np.flatnonzero(~ascii_only)
    others = [v[i] for i in rows.tolist()]
    ok = np.ones(len(v), dtype=bool)
    if MISREAD_PAIR.search("\n".join(others)) is not None:  # the separator is ASCII: it forms no pair
        ok[rows] = [not is_mojibake(x) for x in others]
    return ok


def _ge(a: Sequence[Any]) -> ScalarCheck:
    m = a[0]
    return lambda v: bool(v >= m)


def _ge_vector(a: Sequence[Any]) -> VectorCheck:
    m = a[0]
    return lambda xp, v: v >= m


def _le(a: Sequence[Any]) -> ScalarCheck:
    m = a[0]
    return lambda v: bool(v <= m)


def _le_vector(a: Sequence[Any]) -> VectorCheck:
    m = a[0]
    return lambda xp, v: v <= m


def _between(a: Sequence[Any]) -> ScalarCheck:
    lo, hi = a[0], a[1]
    return lambda v: bool(lo <= v <= hi)


def _between_vector(a: Sequence[Any]) -> VectorCheck:
    lo, hi = a[0], a[1]
    return lambda xp, v: (v >= lo) & (v <= hi)


def _max_length_scalar(rule: Rule) -> ScalarCheck:
    n = int(rule.args[0])
    return lambda v: len(v) <= n


def _max_length_vector(rule: Rule) -> VectorCheck:
    n = int(rule.args[0])
    return lambda xp, v: np.fromiter(map(len, v), dtype=np.int64, count=len(v)) <= n


def _forbidden(chars: str) -> re.Pattern[str]:
    return re.compile("[" + "".join(re.escape(c) for c in chars) + "]")


def _form(rule: Rule) -> Literal["NFC", "NFD", "NFKC", "NFKD"]:
    return cast(Literal["NFC", "NFD", "NFKC", "NFKD"], str(rule.args[0]))


def _normalized_vector(rule: Rule) -> VectorCheck:
    """One C pass over all values joined by a newline (a starter that composes with nothing, so the joined text
    is normalized exactly when every value is); value by value only when it is not."""
    form = _form(rule)

    def run(xp: Any, v: Any) -> Any:
        joined = _JOINED.of(v, "\n")
        if joined.isascii() or unicodedata.is_normalized(form, joined):
            return np.ones(len(v), dtype=bool)
        return np.fromiter((unicodedata.is_normalized(form, x) for x in v), dtype=bool, count=len(v))

    return run


def _timestamp_range(rule: Rule) -> tuple[int, int]:
    return instant_ns(rule.args[0]), instant_ns(rule.args[1])


def _elementwise_fn(rule: Rule) -> Callable[[Any], bool]:
    return rule.fn if rule.fn is not None else import_function(str(rule.args[0]))


OPS: dict[str, Op] = {
    "ge": _number_op(_ge, _ge_vector, lambda r: _builtin("ge", r.args[0], rule=r)),
    "le": _number_op(_le, _le_vector, lambda r: _builtin("le", r.args[0], rule=r)),
    "between": _number_op(_between, _between_vector, lambda r: _builtin("in_range", r.args[0], r.args[1], rule=r)),
    "finite": Op(
        frozenset({"numeric", "tensor"}),
        lambda r: math.isfinite,
        lambda r: lambda xp, v: xp.isfinite(v),
        lambda r: _series_check(_finite_series, r),
    ),
    "one_of": Op(
        NUMBER_KINDS | TEXT_KINDS,
        lambda r: frozenset(r.args[0]).__contains__,
        lambda r: _one_of_vector(r.args[0]),
        lambda r: _builtin("isin", list(r.args[0]), rule=r),
    ),
    "matches": _matches_op(),
    "forbid_chars": _forbid_op(),
    "forbid_code_points": _forbid_op(),
    "normalized": Op(
        TEXT_KINDS,
        lambda r: lambda v: unicodedata.is_normalized(_form(r), v),
        _normalized_vector,
        lambda r: _elementwise_check(lambda v: unicodedata.is_normalized(_form(r), v), r),
    ),
    "not_blank": Op(
        TEXT_KINDS,
        lambda r: lambda v: v != "" and not v.isspace(),
        lambda r: _not_blank_vector,
        lambda r: _series_check(lambda s: s.str.strip().str.len() > 0, r),
    ),
    "max_length": Op(
        TEXT_KINDS,
        _max_length_scalar,
        _max_length_vector,
        lambda r: _builtin("str_length", max_value=r.args[0], rule=r),
    ),
    "in_range": Op(
        frozenset({"timestamp"}),
        lambda r: _in_range_scalar(*_timestamp_range(r)),
        lambda r: _in_range_vector(*_timestamp_range(r)),
        lambda r: _builtin(
            "in_range",
            _utc_timestamp(r.args[0]),
            _utc_timestamp(r.args[1]),
            include_max=False,
            rule=r,
        ),
    ),
    "no_compatibility_chars": Op(
        TEXT_KINDS,
        lambda r: _compatible,
        lambda r: _compatible_vector,
        lambda r: _elementwise_check(_compatible, r),
    ),
    "tidy_whitespace": Op(
        TEXT_KINDS,
        lambda r: _tidy,
        lambda r: _tidy_vector,
        lambda r: _series_check(_tidy_series, r),
    ),
    "no_mojibake": Op(
        TEXT_KINDS,
        lambda r: lambda v: not is_mojibake(v),
        lambda r: _no_mojibake_vector,
        lambda r: _elementwise_check(lambda v: not is_mojibake(v), r),
    ),
    "elementwise": Op(
        ANY_KIND,
        lambda r: _elementwise_scalar(_elementwise_fn(r)),
        lambda r: _elementwise_vector(_elementwise_fn(r)),
        lambda r: _elementwise_check(_elementwise_fn(r), r),
    ),
}


def _in_range_scalar(lo: int, hi: int) -> ScalarCheck:
    return lambda v: lo <= v < hi


def _in_range_vector(lo: int, hi: int) -> VectorCheck:
    return lambda xp, v: (v >= lo) & (v < hi)


def _elementwise_scalar(fn: Callable[[Any], bool]) -> ScalarCheck:
    return lambda v: bool(fn(v))


def _elementwise_vector(fn: Callable[[Any], bool]) -> VectorCheck:
    return lambda xp, v: np.array([bool(fn(x)) for x in v], dtype=bool)


def _one_of_vector(values: Sequence[Any]) -> VectorCheck:
    allowed = frozenset(values)
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)

    def run(xp: Any, v: Any) -> Any:
        if numeric and getattr(v, "dtype", np.dtype(object)).kind in "fiu":
            return xp.isin(v, xp.asarray(list(values)))
        return np.fromiter(map(allowed.__contains__, v), dtype=bool, count=len(v))

    return run
