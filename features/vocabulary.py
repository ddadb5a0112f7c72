"""The vocabulary the text rules speak: column kinds, the named sets of code points that damaged or spoofed text
carries, the defaults every text column gets, look-alike keys and mojibake.

Pure Python (``re``, ``unicodedata``): ``features.rules`` builds rules from these names and ``features.lowerings``
checks values with them; the duplicate checks (``features.duplicates``, the contract's) key text by
``lookalike_key``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

__all__ = [
    "ANY_KIND",
    "CODE_POINT_SETS",
    "CONTROL_CHARS",
    "DEFAULT_CODE_POINTS",
    "DEFAULT_MAX_LENGTH",
    "LOOKALIKE_KINDS",
    "MISREAD_PAIR",
    "NUMBER_KINDS",
    "TEXT_KINDS",
    "UNTIDY",
    "UNTIDY_JOINED",
    "is_mojibake",
    "lookalike_key",
    "lookalike_keys",
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

# white space at either end, a run of it, or a tab or line break (``\s`` is Unicode white space, as str.isspace)
UNTIDY = re.compile(r"\A\s|\s\Z|\s\s|[\t\n\r\x0b\x0c\x1c-\x1f\x85\u2028\u2029]")
UNTIDY_JOINED = re.compile(r"\s\x00|\x00\s|\A\s|\s\Z|\s\s|[\t\n\r\x0b\x0c\x1c-\x1f\x85\u2028\u2029]")


def lookalike_key(text: str) -> str:
    """The key under which values that look alike are one value: NFKC (which folds full-width digits, no-break
    and thin spaces and other compatibility characters into their plain forms), then white space trimmed and each
    run of it one space (a blank value is its own key: blanks are ``not_blank``'s concern). Two ids with one key
    are the same id to the duplicate checks (``features.duplicates``, the contract's)."""
    if text.isascii() and UNTIDY.search(text) is None:
        return text
    return " ".join(unicodedata.normalize("NFKC", text).split()) or text  # a blank value keys as itself


def lookalike_keys(values: Sequence[Any]) -> list[Any]:
    """``lookalike_key`` of each value (``None`` stays ``None``); the common case, plain ASCII with single
    spaces throughout, is one join and one regex search."""
    present = [v for v in values if v is not None]
    joined = "\x00".join(present)  # NUL is no white space: it forms no run across values
    if joined.isascii() and UNTIDY_JOINED.search(joined) is None:
        return list(values)
    return [None if v is None else lookalike_key(v) for v in values]


# by a continuation byte (0x80-0xBF: U+0080-U+00BF in latin-1; in cp1252, 0x80-0x9F are the characters below).
_LEADS = "\u00c2-\u00f4"
_CONTINUATIONS = "\u0080-\u00bf\u20ac\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u017d"
_CONTINUATIONS += "\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u017e\u0178"
MISREAD_PAIR = re.compile(f"[{_LEADS}][{_CONTINUATIONS}]")
MISREAD_RUN = re.compile(f"[{_LEADS}][{_CONTINUATIONS}]+")


def is_mojibake(text: str) -> bool:
    """UTF-8 bytes that were decoded as cp1252/latin-1 ("CafÃ©" for "Café"), also beside genuine non-ASCII text
    ("Café MÃ¼ller"): some run of a lead character and continuation characters re-encodes to a valid multi-byte
    UTF-8 sequence. Genuine text ("Café", "Müller", Cyrillic, CJK) holds no such run.

    Re-encoded text can only be valid multi-byte UTF-8 where a lead character is followed by a continuation
    character (``MISREAD_PAIR``), so text without such a pair is answered by one regex search, without the
    round trip (the contract suite checks that the shortcut never changes the answer)."""
    if text.isascii() or MISREAD_PAIR.search(text) is None:
        return False
    return _round_trips(text)


def _round_trips(text: str) -> bool:
    """Whether a run of misread characters in ``text`` re-encodes (cp1252, else latin-1) to one valid UTF-8
    sequence: 2, 3 or 4 bytes as its lead byte says."""
    if text.isascii():
        return False
    for run in MISREAD_RUN.findall(text):
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
