"""Declarative row rules: data, not code, lowered three ways from one definition.

A ``Rule`` is an operation name, its JSON-able arguments, a reason code and a human message. ``compile`` (in
``features.contract``) lowers every rule of a spec, once, to

- a **scalar** check (one Python value -> bool), for the per-row request path;
- a **vector** check (an array of values -> boolean mask) over the array namespace ``xp`` (numpy or cupy for
  numbers and timestamps; object arrays for text), for batches;
- a **pandera** ``Check``, for the schema users validate with and the contract suite compares against.

This module holds the rule type and its constructors; each operation's lowerings are ``features.lowerings.OPS``,
and the names the text rules speak (column kinds, code point sets, defaults, look-alike keys, mojibake) are
``features.vocabulary``.
pandas and pandera are imported only by the pandera lowering: the scalar and vector lowerings need numpy alone
(and cupy where a GPU runs them). Every rule sees a column's non-null values only (nulls are the ``required``
flag's concern). Values arrive in their canonical form: ``float`` for numeric, ``int`` for integer and label,
``int`` nanoseconds since the epoch (UTC) for timestamps, ``str`` for id, categorical and text columns. The
contract checks (``features.checks``, ``inferline check``; tests/unit/test_contract.py) prove that the three lowerings
agree on every rule.

``elementwise(fn)`` is the escape hatch: any per-value Python function (module-level, so that a release can name
it). It runs value by value in every lowering, so it is slower than the declarative operations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from inferline.features.lowerings import (
    OPS,
    RuleError,
    ScalarCheck,
    VectorCheck,
    chars_of,
    import_function,
    instant_ns,
)
from inferline.features.vocabulary import (
    CODE_POINT_SETS,
    DEFAULT_CODE_POINTS,
    DEFAULT_MAX_LENGTH,
    LOOKALIKE_KINDS,
)

__all__ = [
    "Rule",
    "between",
    "elementwise",
    "finite",
    "forbid_chars",
    "forbid_code_points",
    "ge",
    "in_range",
    "le",
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
        return elementwise(import_function(str(args[0])), name=name, message=message)
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
    """A finite number: no NaN, no infinity (numbers)."""
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
    """None of the characters in ``chars`` (text), e.g. ``features.vocabulary.CONTROL_CHARS`` or ``"\\ufffd"``."""
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
    covered = set("".join(chars_of(r) for r in rules if r.op in ("forbid_chars", "forbid_code_points")))
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


def in_range(earliest: str, latest: str, *, name: str = "out_of_range", message: str | None = None) -> Rule:
    """``earliest`` <= timestamp < ``latest``, both RFC 3339 text with an offset (timestamps)."""
    lo, hi = instant_ns(earliest), instant_ns(latest)
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
