"""Declarative row rules: data, not code, lowered three ways from one definition.

A ``Rule`` is an operation name, its JSON-able arguments, a reason code and a human message. ``compile`` (in
``features.contract``) lowers every rule of a spec, once, to

- a **scalar** check (one Python value -> bool), for the per-row request path;
- a **vector** check (an array of values -> boolean mask) over the array namespace ``xp`` (numpy or cupy for
  numbers and timestamps; object arrays for text), for batches;
- a **pandera** ``Check``, for the schema users validate with and the contract suite compares against.

pandas and pandera are imported only by the pandera lowering: the scalar and vector lowerings need numpy alone
(and cupy where a GPU runs them). Every rule sees a column's non-null values only (nulls are the ``required``
flag's concern). Values arrive in their canonical form: ``float`` for numeric, ``int`` for integer and label,
``int`` nanoseconds since the epoch (UTC) for timestamps, ``str`` for id, categorical and text columns. The
contract suite (tests/unit/test_contract.py) checks that the three lowerings agree on every rule.

``elementwise(fn)`` is the escape hatch: any per-value Python function (module-level, so that a release can name
it). It runs value by value in every lowering, so it is slower than the declarative operations.
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np

from inferline.core.errors import UserError

__all__ = [
    "CODE_POINT_SETS",
    "CONTROL_CHARS",
    "DEFAULT_MAX_LENGTH",
    "Rule",
    "RuleError",
    "between",
    "elementwise",
    "finite",
    "forbid_chars",
    "forbid_code_points",
    "ge",
    "in_range",
    "is_mojibake",
    "le",
    "lookalike_key",
    "lookalike_keys",
    "matches",
    "max_length",
    "no_compatibility_chars",
    "no_mojibake",
    "normalized",
    "not_blank",
    "one_of",
    "rule_from_dict",
    "text_defaults",
    "tidy_whitespace",
]

# C0 controls other than tab, newline and carriage return, and DEL
CONTROL_CHARS = "".join(chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F))
# Named sets of code points that damaged or spoofed text carries (``forbid_code_points``), with the reason code each
# reports. Zero-width joiners (U+200C/U+200D) are their own set: Persian, Hindi and emoji sequences use them in
# genuine text, so only identifiers and categories forbid them by default.
CODE_POINT_SETS: dict[str, tuple[str, str, str]] = {
    # name: (characters, reason code, what it means)
    "c0": (
        CONTROL_CHARS,
        "control_chars",
        "C0 control characters (NUL, BEL, ESC ...; tab and newlines allowed) and DEL",
    ),
    "c1": ("".join(chr(c) for c in range(0x80, 0xA0)), "c1_control_chars", "C1 control characters U+0080-U+009F"),
    "zero_width": ("\u200b\u2060\u180e", "zero_width_chars", "zero-width space U+200B, word joiner U+2060, U+180E"),
    "joiners": ("\u200c\u200d", "zero_width_joiners", "zero-width (non-)joiners U+200C, U+200D"),
    "bidi": (
        "\u061c\u200e\u200f" + "".join(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))),
        "bidi_controls",
        "bidirectional controls (U+202A-U+202E, U+2066-U+2069, marks): text that displays unlike it compares",
    ),
    "bom": ("\ufeff", "bom", "the byte-order mark U+FEFF inside a value"),
    "replacement": ("\ufffd", "replacement_char", "U+FFFD: the text was decoded lossily upstream"),
}
# What a text, id or categorical column gets unless it declares its own (``text_defaults``)
DEFAULT_MAX_LENGTH: dict[str, int] = {"id": 256, "categorical": 256, "text": 10_000}
DEFAULT_CODE_POINTS: dict[str, tuple[str, ...]] = {
    "id": ("c0", "c1", "zero_width", "joiners", "bidi", "bom", "replacement"),
    "categorical": ("c0", "c1", "zero_width", "joiners", "bidi", "bom", "replacement"),
    "text": ("c0", "c1", "zero_width", "bom", "replacement"),
}
# Identifiers and categories also refuse what makes one value look like another (``text_defaults``): characters
# that Unicode NFKC folds into others (full-width digits, NBSP, thin spaces) and untidy white space (a trailing
# space). Their copies are found by their look-alike key (``lookalike_key``).
LOOKALIKE_KINDS = frozenset({"id", "categorical"})
NUMBER_KINDS = frozenset({"numeric", "integer", "label"})
TEXT_KINDS = frozenset({"id", "categorical", "text"})
ANY_KIND = NUMBER_KINDS | TEXT_KINDS | {"timestamp"}

ScalarCheck = Callable[[Any], bool]
VectorCheck = Callable[[Any, Any], Any]  # (xp, values) -> mask


class RuleError(UserError, ValueError):
    """A rule is malformed or does not fit its column."""


@dataclass(frozen=True)
class Rule:
    """One row rule. ``op`` names the operation, ``args`` its arguments (JSON-able), ``name`` the reason code
    (reported as ``<column>:<name>``) and ``message`` what a valid value looks like. ``fn`` is set only for
    ``elementwise`` rules (it is not part of the rule's identity: its import path in ``args`` is)."""

    op: str
    args: tuple[Any, ...]
    name: str
    message: str
    fn: Callable[[Any], bool] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise RuleError(f"unknown rule operation {self.op!r}; known: {sorted(OPS)}")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise RuleError(f"rule name {self.name!r} must be a lower-case identifier (it becomes a reason code)")

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "args": list(self.args), "name": self.name, "message": self.message}

    def fits(self, kind: str) -> bool:
        return kind in OPS[self.op].kinds

    def scalar(self) -> ScalarCheck:
        return OPS[self.op].scalar(self)

    def vector(self) -> VectorCheck:
        return OPS[self.op].vector(self)

    def pandera(self) -> Any:
        """The rule as a pandera ``Check`` (built-in checks where pandera has one)."""
        return OPS[self.op].pandera(self)


def rule_from_dict(d: dict[str, Any]) -> Rule:
    """The inverse of ``Rule.to_dict`` (an ``elementwise`` rule re-imports its function by name)."""
    try:
        op, args, name, message = d["op"], tuple(d["args"]), d["name"], d["message"]
    except (KeyError, TypeError) as exc:
        raise RuleError(f"a serialized rule needs op, args, name and message; received {d!r}") from exc
    if op == "elementwise":
        return elementwise(_import_function(str(args[0])), name=name, message=message)
    return Rule(op, _tuples(args), name, message)


def _tuples(args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(tuple(a) if isinstance(a, list) else a for a in args)


# ---------------------------------------------------------------------------------------------- constructors
def ge(minimum: float, *, name: str = "below_minimum", message: str | None = None) -> Rule:
    """value >= ``minimum`` (numbers)."""
    return Rule("ge", (minimum,), name, message or f">= {minimum}")


def le(maximum: float, *, name: str = "above_maximum", message: str | None = None) -> Rule:
    """value <= ``maximum`` (numbers)."""
    return Rule("le", (maximum,), name, message or f"<= {maximum}")


def between(minimum: float, maximum: float, *, name: str = "out_of_range", message: str | None = None) -> Rule:
    """``minimum`` <= value <= ``maximum`` (numbers)."""
    if not minimum <= maximum:
        raise RuleError(f"between({minimum}, {maximum}): the minimum must not exceed the maximum")
    return Rule("between", (minimum, maximum), name, message or f"between {minimum} and {maximum}")


def finite(*, name: str = "not_finite", message: str = "a finite number (no NaN, no Inf)") -> Rule:
    return Rule("finite", (), name, message)


def one_of(values: Iterable[Any], *, name: str = "unknown_value", message: str | None = None) -> Rule:
    """value in ``values`` (text or numbers)."""
    allowed = tuple(values)
    if not allowed:
        raise RuleError("one_of() needs at least one allowed value")
    return Rule("one_of", (allowed,), name, message or f"one of {allowed}")


def matches(pattern: str, *, name: str = "bad_format", message: str | None = None) -> Rule:
    """The whole value matches the regular expression ``pattern`` (text)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise RuleError(f"matches({pattern!r}): not a regular expression ({exc})") from exc
    return Rule("matches", (pattern,), name, message or f"matches {pattern}")


def not_blank(*, name: str = "empty", message: str = "not blank") -> Rule:
    """Text with at least one character that is not white space."""
    return Rule("not_blank", (), name, message)


def max_length(n: int, *, name: str = "too_long", message: str | None = None) -> Rule:
    """At most ``n`` characters (text)."""
    return Rule("max_length", (int(n),), name, message or f"at most {n} characters")


def forbid_chars(chars: str, *, name: str = "forbidden_chars", message: str | None = None) -> Rule:
    """None of the characters in ``chars`` (text), e.g. ``CONTROL_CHARS`` or ``"\\ufffd"``."""
    if not chars:
        raise RuleError("forbid_chars() needs at least one character")
    return Rule("forbid_chars", (chars,), name, message or f"none of {chars!r}")


def forbid_code_points(*sets: str, name: str | None = None, message: str | None = None) -> Rule:
    """None of the code points of the named ``sets`` (text): see ``CODE_POINT_SETS`` ("c0", "c1", "zero_width",
    "joiners", "bidi", "bom", "replacement"). The reason code is the set's own for one set."""
    unknown = [x for x in sets if x not in CODE_POINT_SETS]
    if not sets or unknown:
        raise RuleError(
            f"forbid_code_points{sets!r}: expected one or more of {sorted(CODE_POINT_SETS)}"
            + (f"; unknown: {unknown}" if unknown else "")
        )
    default_name = CODE_POINT_SETS[sets[0]][1] if len(sets) == 1 else "forbidden_code_points"
    described = "; ".join(CODE_POINT_SETS[x][2] for x in sets)
    return Rule("forbid_code_points", tuple(sets), name or default_name, message or f"no {described}")


def normalized(form: str = "NFC", *, name: str | None = None, message: str | None = None) -> Rule:
    """Text already in Unicode normalization ``form`` (NFC, NFD, NFKC, NFKD): the rule of a column declared
    ``normalization="refuse"``; ``"nfc"`` columns are normalized before their rules run instead."""
    if form not in ("NFC", "NFD", "NFKC", "NFKD"):
        raise RuleError(f"normalized({form!r}): expected NFC, NFD, NFKC or NFKD")
    return Rule(
        "normalized",
        (form,),
        name or f"not_{form.lower()}",
        message or f"text in Unicode {form} (the same text in another form compares and featurizes differently)",
    )


def no_compatibility_chars(
    *,
    name: str = "compatibility_chars",
    message: str = (
        "no characters that Unicode NFKC folds into others (full-width letters and digits, no-break and thin "
        "spaces, ligatures, superscripts): such text looks like other text but compares unlike it"
    ),
) -> Rule:
    """Text whose NFC and NFKC forms agree (Python's ``unicodedata``): no compatibility character, so that a value
    that looks like another is that other value. Canonical forms (NFC vs NFD) are the column's normalization's
    concern, not this rule's."""
    return Rule("no_compatibility_chars", (), name, message)


def tidy_whitespace(
    *,
    name: str = "whitespace",
    message: str = "no white space at either end, no run of white space, no tab or line break (single spaces)",
) -> Rule:
    """Text without white space at either end, runs of white space, or tabs and line breaks (``str.isspace``'s
    white space): ``"tx-1 "`` looks like ``"tx-1"``. A blank value is ``not_blank``'s concern, not this rule's."""
    return Rule("tidy_whitespace", (), name, message)


def lookalike_key(text: str) -> str:
    """The key under which values that look alike are one value: NFKC (which folds full-width digits, no-break
    and thin spaces and other compatibility characters into their plain forms), then white space trimmed and each
    run of it one space (a blank value is its own key: blanks are ``not_blank``'s concern). Two ids with one key
    are the same id to the duplicate checks (``features.duplicates``, the contract's)."""
    if text.isascii() and _UNTIDY.search(text) is None:
        return text
    return " ".join(unicodedata.normalize("NFKC", text).split()) or text  # a blank value keys as itself


def lookalike_keys(values: Sequence[Any]) -> list[Any]:
    """``lookalike_key`` of each value (``None`` stays ``None``); the common case, plain ASCII with single
    spaces throughout, is one join and one regex search."""
    present = [v for v in values if v is not None]
    joined = "\x00".join(present)  # NUL is no white space: it forms no run across values
    if joined.isascii() and _UNTIDY_JOINED.search(joined) is None:
        return list(values)
    return [None if v is None else lookalike_key(v) for v in values]


def text_defaults(kind: str, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    """``rules`` plus what protects every text, id and categorical column unless it declares its own: a
    ``max_length`` (``DEFAULT_MAX_LENGTH``) and ``forbid_code_points`` for each set of ``DEFAULT_CODE_POINTS``
    that the column's own ``forbid_chars``/``forbid_code_points`` rules do not already cover; an id or
    categorical column also ``no_compatibility_chars`` and ``tidy_whitespace`` (look-alike values)."""
    out = list(rules)
    names = {r.name for r in rules}
    if not any(r.op == "max_length" for r in rules):
        out.append(
            max_length(DEFAULT_MAX_LENGTH[kind], name="too_long" if "too_long" not in names else "over_max_length")
        )
    covered = set("".join(_chars_of(r) for r in rules if r.op in ("forbid_chars", "forbid_code_points")))
    for key in DEFAULT_CODE_POINTS[kind]:
        chars, reason, _ = CODE_POINT_SETS[key]
        if not set(chars) <= covered:
            out.append(forbid_code_points(key, name=reason if reason not in names else f"{key}_code_points"))
    if kind in LOOKALIKE_KINDS:
        ops = {r.op for r in rules}
        if "no_compatibility_chars" not in ops:
            reason = "compatibility_chars"
            out.append(no_compatibility_chars(name=reason if reason not in names else "nfkc_compatibility_chars"))
        if "tidy_whitespace" not in ops:
            out.append(tidy_whitespace(name="whitespace" if "whitespace" not in names else "untidy_whitespace"))
    return tuple(out)


def _chars_of(rule: Rule) -> str:
    """The characters a ``forbid_chars`` or ``forbid_code_points`` rule refuses."""
    if rule.op == "forbid_code_points":
        return "".join(CODE_POINT_SETS[x][0] for x in rule.args)
    return str(rule.args[0])


def in_range(earliest: str, latest: str, *, name: str = "out_of_range", message: str | None = None) -> Rule:
    """``earliest`` <= timestamp < ``latest``, both RFC 3339 text with an offset (timestamps)."""
    lo, hi = _instant_ns(earliest), _instant_ns(latest)
    if not lo < hi:
        raise RuleError(f"in_range({earliest!r}, {latest!r}): earliest must come before latest")
    return Rule("in_range", (earliest, latest), name, message or f"from {earliest} to before {latest}")


def no_mojibake(
    *, name: str = "mojibake", message: str = "not UTF-8 mis-decoded as cp1252/latin-1 (e.g. 'Ã©' for 'é')"
) -> Rule:
    """Text that is not UTF-8 decoded as cp1252 or latin-1 (see ``is_mojibake``)."""
    return Rule("no_mojibake", (), name, message)


def elementwise(fn: Callable[[Any], bool], *, name: str, message: str) -> Rule:
    """Escape hatch: ``fn(value) -> bool`` per non-null value. ``fn`` must be a module-level function (a release
    names it as ``module:qualname``). Slower than the declarative operations: it runs once per value everywhere."""
    path = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    if "<" in path or path.startswith(":") or path.endswith(":"):
        raise RuleError(
            f"elementwise() needs a module-level function so that a release can name it; received {fn!r} "
            "(a lambda or a nested function): define it with `def` at the top of a module"
        )
    return Rule("elementwise", (path,), name, message, fn=fn)


def _import_function(path: str) -> Callable[[Any], bool]:
    from inferline.features.imports import ImportPathError, import_object

    try:
        target = import_object(path, "elementwise rule function")
    except ImportPathError as exc:
        raise RuleError(str(exc)) from exc
    if not callable(target):
        raise RuleError(f"elementwise rule function {path!r} is not callable")
    return target


# ---------------------------------------------------------------------------------------------- helpers


def _instant_ns(text: str) -> int:
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
# by a continuation byte (0x80-0xBF: U+0080-U+00BF in latin-1; in cp1252, 0x80-0x9F are the characters below).
_LEADS = "\u00c2-\u00f4"
_CONTINUATIONS = "\u0080-\u00bf\u20ac\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u017d"
_CONTINUATIONS += "\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u017e\u0178"
_MISREAD_PAIR = re.compile(f"[{_LEADS}][{_CONTINUATIONS}]")
_MISREAD_RUN = re.compile(f"[{_LEADS}][{_CONTINUATIONS}]+")


def is_mojibake(text: str) -> bool:
    """UTF-8 bytes that were decoded as cp1252/latin-1 ("CafÃ©" for "Café"), also beside genuine non-ASCII text
    ("Café MÃ¼ller"): some run of a lead character and continuation characters re-encodes to a valid multi-byte
    UTF-8 sequence. Genuine text ("Café", "Müller", Cyrillic, CJK) holds no such run.

    Re-encoded text can only be valid multi-byte UTF-8 where a lead character is followed by a continuation
    character (``_MISREAD_PAIR``), so text without such a pair is answered by one regex search, without the
    round trip (the contract suite checks that the shortcut never changes the answer)."""
    if text.isascii() or _MISREAD_PAIR.search(text) is None:
        return False
    return _round_trips(text)


def _round_trips(text: str) -> bool:
    """Whether a run of misread characters in ``text`` re-encodes (cp1252, else latin-1) to one valid UTF-8
    sequence: 2, 3 or 4 bytes as its lead byte says."""
    if text.isascii():
        return False
    for run in _MISREAD_RUN.findall(text):
        for encoding in ("cp1252", "latin-1"):
            try:
                raw = run.encode(encoding)
            except UnicodeError:
                continue
            need = 2 if raw[0] < 0xE0 else 3 if raw[0] < 0xF0 else 4
            if len(raw) >= need:
                try:
                    raw[:need].decode("utf-8")
                except UnicodeError:
                    continue
                return True
    return False


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

    return pd.Timestamp(_instant_ns(text), tz="UTC")


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
        chars = _chars_of(rule)
        if len(chars) == 1:
            return lambda v: chars not in v
        search = _forbidden(chars).search
        return lambda v: search(v) is None

    def vector(rule: Rule) -> VectorCheck:
        chars = _chars_of(rule)
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
        pattern = _forbidden(_chars_of(rule)).pattern
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


# white space at either end, a run of it, or a tab or line break (``\s`` is Unicode white space, as str.isspace)
_UNTIDY = re.compile(r"\A\s|\s\Z|\s\s|[\t\n\r\x0b\x0c\x1c-\x1f\x85\u2028\u2029]")
_UNTIDY_JOINED = re.compile(r"\s\x00|\x00\s|\A\s|\s\Z|\s\s|[\t\n\r\x0b\x0c\x1c-\x1f\x85\u2028\u2029]")


def _tidy(v: str) -> bool:
    return _UNTIDY.search(v) is None or v.isspace()  # a blank value is not_blank's concern


def _tidy_vector(xp: Any, v: Any) -> Any:
    """One regex search over all values joined by a NUL (no white space, so it forms no run across values) for
    the common case, every value tidy; value by value otherwise."""
    if _UNTIDY_JOINED.search(_JOINED.of(v, "\x00")) is None:
        return np.ones(len(v), dtype=bool)
    return np.fromiter(map(_tidy, v), dtype=bool, count=len(v))


def _tidy_series(s: Any) -> Any:
    return ~s.str.contains(_UNTIDY.pattern, regex=True) | (s.str.strip().str.len() == 0)


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
    if _MISREAD_PAIR.search("\n".join(others)) is not None:  # the separator is ASCII: it forms no pair
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
    return _instant_ns(rule.args[0]), _instant_ns(rule.args[1])


def _elementwise_fn(rule: Rule) -> Callable[[Any], bool]:
    return rule.fn if rule.fn is not None else _import_function(str(rule.args[0]))


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
