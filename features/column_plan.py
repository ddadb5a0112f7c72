"""One column's compiled checks, as the feature contract (``features.contract``) lowers them: ``ColumnPlan`` holds
a column's reasons in order, each with its scalar lowering (one wire value at a time: the request path's small
requests) and its vector lowering (a request's column, or a data set's); ``FeaturePlan`` is one feature bound to
its kernel and parameters.

A categorical column's values repeat, so the request path remembers each distinct wire value's entry (bounded by
``MEMO_MAX``). Copies of a unique value are found here too (``ColumnPlan.duplicates``; text by its look-alike key,
``vocabulary.lookalike_key``), and ``factorize_text`` gives a text column's distinct values (pandas' factorize,
NUL-safe).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from inferline.features.kernels import NAT, Kernel
from inferline.features.spec import Column
from inferline.features.vocabulary import TEXT_KINDS, lookalike_keys
from inferline.features.wire import (
    INVALID_UTF8,
    decode_column,
    decode_value,
    nfc_texts,
    parse_instant,
    parse_instants,
)

__all__ = ["DUPLICATE", "MEMO_MAX", "NULL", "ColumnPlan", "FeaturePlan", "factorize_text", "to_host"]

NULL = "null"
DUPLICATE = "duplicate"
MEMO_MAX = 4096  # remembered verdicts per categorical column (bounded: a flood of new values only clears it)


@dataclass(frozen=True)
class FeaturePlan:
    """One feature, compiled: its name, the input column it reads, its kernel and the kernel's parameters."""

    name: str
    source: str
    kernel: Kernel
    params: Mapping[str, Any]


class ColumnPlan:
    """One column's compiled checks: its reasons in order, each with its scalar and vector lowering."""

    def __init__(self, column: Column) -> None:
        self.name = column.name
        # a regression label is a float column: checked as numeric
        self.kind = "numeric" if column.kind == "label" and column.raw_dtype == "float64" else column.kind
        self.required = column.required
        self.unique = column.unique
        # which copies of a repeated value are duplicates: every copy, or all but the first (in row order)
        self.keep_first = column.duplicates == "all_but_first"
        self.assume_utc = column.timezone_policy == "assume_utc"
        self.nfc = column.normalization == "nfc"  # text is normalized before its rules and features see it
        # copies of a unique text value are found by their look-alike key (``vocabulary.lookalike_key``: NFKC, white
        # space trimmed), unless the column compares text as it is (``normalization="none"``)
        self.fold = column.kind in TEXT_KINDS and column.normalization != "none"
        self.null_reason = f"{column.name}:{NULL}"
        self.duplicate_reason = f"{column.name}:{DUPLICATE}"
        self.rules: list[tuple[str, Callable[[Any], bool], Callable[[Any, Any], Any]]] = [
            (f"{column.name}:{r.name}", r.scalar(), r.vector()) for r in column.rules
        ]
        self.remembered = column.kind == "categorical"  # values repeat: the request path remembers their entries
        self._cells: dict[tuple[str, ...], Callable[[Any], tuple[Any, ...]]] = {}
        self._memos: dict[tuple[str, ...], dict[Any, tuple[Any, ...]]] = {}
        self._tables: dict[tuple[str, ...], _Remembered] = {}

    def request_column(
        self, w: np.ndarray, n: int, feats: Sequence[FeaturePlan], outputs: dict[str, Any]
    ) -> tuple[list[str | None] | None, list[str | None] | None]:
        """The request path's vector lowering for one column: writes each feature it sources into ``outputs``
        and returns (parse reason per row, first rule reason per row), each None when no row has one."""
        if self.kind in TEXT_KINDS:
            return self._request_text(w, n, feats, outputs)
        parse: list[str | None] | None = None
        if self.kind == "timestamp":
            values, parse = self._request_instants(w, n)
        elif self.kind == "numeric":
            values = w.astype(np.float64, copy=False)
        else:
            values = w.astype(np.int64, copy=False)
        for f in feats:
            outputs[f.name] = f.kernel.vector(np, values, f.params)
        found: list[tuple[str, np.ndarray]] = []
        null = self.null_mask(np, values)
        any_null = bool(null.any())
        if any_null:
            if self.required:
                found.append((self.null_reason, null if parse is None else null & ~_present(parse)))
        for reason, _, check in self.rules:
            ok = check(np, values)
            if any_null:
                ok = ok | null
            if not ok.all():
                found.append((reason, ~ok))
        if not found:
            return parse, None
        fail: list[str | None] = [None] * n
        for reason, mask in reversed(found):
            for i in np.flatnonzero(mask).tolist():
                fail[i] = reason
        return parse, fail

    def _request_instants(self, w: np.ndarray, n: int) -> tuple[np.ndarray, list[str | None] | None]:
        if w.dtype.kind == "M":
            return w.astype("datetime64[ns]").view(np.int64), None
        ns, problems = parse_instants(w, self.assume_utc)
        if problems is None:
            return ns, None
        name = self.name
        return ns, [None if r is None else f"{name}:{r}" for r in problems]

    def _request_text(
        self, w: np.ndarray, n: int, feats: Sequence[FeaturePlan], outputs: dict[str, Any]
    ) -> tuple[list[str | None] | None, list[str | None] | None]:
        if self.remembered:
            return self._request_remembered(w, feats, outputs)
        texts, invalid = decode_column(w)
        if self.nfc:
            texts, _ = nfc_texts(texts)
        parse: list[str | None] | None = None
        if invalid:
            parse = [None] * n
            for i in invalid:
                parse[i] = f"{self.name}:{INVALID_UTF8}"
        for f in feats:
            outputs[f.name] = f.kernel.vector(np, texts, f.params)
        found: list[tuple[str, Any]] = []
        if None in texts:
            rows = np.array([t is not None for t in texts], dtype=bool)
            if self.required:
                null = ~rows
                if invalid:
                    null[invalid] = False
                if null.any():
                    found.append((self.null_reason, null))
            index = np.flatnonzero(rows)
            present: Any = [texts[i] for i in index.tolist()]
        else:
            index, present = None, texts
        if present:
            for reason, _, check in self.rules:
                ok = check(np, present)
                if not ok.all():
                    found.append((reason, ~ok if index is None else index[~ok]))
        fail: list[str | None] | None = None
        if found:
            fail = [None] * n
            for reason, where in reversed(found):
                for i in np.flatnonzero(where).tolist() if where.dtype == bool else where.tolist():
                    fail[i] = reason
        if self.unique and n > 1:
            fail = self.duplicates(texts, fail)
        return parse, fail

    def _request_remembered(
        self, w: np.ndarray, feats: Sequence[FeaturePlan], outputs: dict[str, Any]
    ) -> tuple[list[str | None] | None, list[str | None] | None]:
        """Categorical values repeat: each distinct wire value's entry (value, reasons, features) is computed once
        by the scalar lowering and remembered, so a request costs one dict lookup per value, and its features are
        gathered from the remembered entries as arrays (one index per row)."""
        table = self._tables.get(tuple(f.name for f in feats))
        if table is None:
            table = self._tables[tuple(f.name for f in feats)] = _Remembered(self.cell(feats), len(feats))
        index = table.index(w)
        for j, f in enumerate(feats):
            outputs[f.name] = table.features[j][index]
        parse = table.parse[index] if table.any_parse else None
        fail = table.fail[index] if table.any_fail else None
        fail_l = None if fail is None or not any(fail) else fail.tolist()
        if self.unique and len(w) > 1:
            fail_l = self.duplicates(table.values[index].tolist(), fail_l)
        return (None if parse is None or not any(parse) else parse.tolist()), fail_l

    def first_failing(self) -> Callable[[Any], str | None]:
        """A non-null canonical value -> the reason of the first rule it breaks, or None."""
        checks = [(reason, check) for reason, check, _ in self.rules]
        if len(checks) == 1:
            ((reason0, check0),) = checks

            def first1(v: Any) -> str | None:
                return None if check0(v) else reason0

            return first1

        def first(v: Any) -> str | None:
            for reason, check in checks:
                if not check(v):
                    return reason
            return None

        return first

    def cell(self, feats: Sequence[FeaturePlan]) -> Callable[[Any], tuple[Any, ...]]:
        """The scalar lowering of this column: one wire value -> ``(value, parse reason, first rule reason,
        *features)`` where ``features`` are the kernels of ``feats`` (the features this column feeds). For a
        categorical column the answer is remembered per wire value, so a repeated value costs one dict lookup."""
        key = tuple(f.name for f in feats)
        cached = self._cells.get(key)
        if cached is not None:
            return cached
        kernels = [(f.kernel.scalar, f.params) for f in feats]
        zeros = tuple(0 for _ in kernels)  # a row that fails is scored on neutral features
        null_entry = (None, None, self.null_reason if self.required else None, *(k(None, p) for k, p in kernels))
        invalid_entry = (None, f"{self.name}:{INVALID_UTF8}", None, *zeros)
        first = self.first_failing() if self.rules else None
        name, kind, assume_utc, nfc = self.name, self.kind, self.assume_utc, self.nfc

        features = _features_of(kernels)

        def finish(v: Any) -> tuple[Any, ...]:
            if first is not None:
                reason = first(v)
                if reason is not None:
                    return (v, None, reason, *zeros)
            return (v, None, None, *features(v))

        def text_of(v: Any) -> tuple[str | None, bool]:
            if type(v) is bytes:
                try:
                    return v.decode(), False
                except UnicodeDecodeError:
                    return None, True
            return decode_value(v)

        compute: Callable[[Any], tuple[Any, ...]]
        if kind in TEXT_KINDS:

            def compute(v: Any) -> tuple[Any, ...]:
                text, invalid = text_of(v)
                if invalid:
                    return invalid_entry
                if not text:
                    return null_entry
                return finish(unicodedata.normalize("NFC", text) if nfc and not text.isascii() else text)

        elif kind == "timestamp":

            def compute(v: Any) -> tuple[Any, ...]:
                if isinstance(v, np.datetime64):
                    return null_entry if np.isnat(v) else finish(int(v.astype("datetime64[ns]").astype("int64")))
                text, invalid = text_of(v)
                if invalid:
                    return invalid_entry
                if not text:
                    return null_entry
                ns, problem = parse_instant(text, assume_utc)
                if problem is not None:
                    return (None, f"{name}:{problem}", None, *zeros)
                return finish(ns)

        elif kind == "numeric":

            def compute(v: Any) -> tuple[Any, ...]:
                x = float(v)
                return null_entry if x != x else finish(x)

        else:

            def compute(v: Any) -> tuple[Any, ...]:
                return finish(int(v))

        cell = compute
        if self.remembered:
            memo: dict[Any, tuple[Any, ...]] = {}
            self._memos[key] = memo

            def cell(v: Any) -> tuple[Any, ...]:
                entry = memo.get(v)
                if entry is None:
                    if len(memo) >= MEMO_MAX:
                        memo.clear()
                    entry = memo[v] = compute(v)
                return entry

        self._cells[key] = cell
        return cell

    def duplicates(self, values: Sequence[Any], fail: list[str | None] | None) -> list[str | None] | None:
        """Mark repeated non-null values of a unique column (within the request) as duplicates, by the column's
        policy: every copy (``duplicates="all"``), or every copy after the first in row order. Text compares by
        its look-alike key (``self.fold``)."""
        if self.fold:
            values = lookalike_keys(values)
        present = [v for v in values if v is not None]
        if len(set(present)) == len(present):
            return fail
        dup = _duplicated(np.array(values, dtype=object), "text", self.keep_first)
        fail = fail or [None] * len(values)
        for i in np.flatnonzero(dup).tolist():
            if values[i] is not None and fail[i] is None:
                fail[i] = self.duplicate_reason
        return fail

    def null_mask(self, xp: Any, values: Any) -> Any:
        if self.kind in TEXT_KINDS:
            return np.fromiter((v is None for v in values), dtype=bool, count=len(values))
        if self.kind == "timestamp":
            return values == NAT
        if self.kind == "numeric":
            return xp.isnan(values)
        return xp.zeros(len(values), dtype=bool)

    def vector_reasons(self, xp: Any, values: Any, out: dict[str, Any]) -> None:
        """Every reason of every row, as masks (a data set's validation)."""
        if self.kind in TEXT_KINDS:
            self._text_reasons(values, out)
            return
        n = len(values)
        null = self.null_mask(xp, values)
        any_null = bool(null.any())
        if self.required and any_null:
            out[self.null_reason] = null
        if self.rules:
            present = values[~null] if any_null else values
            if len(present):
                for reason, _, check in self.rules:
                    ok = check(xp, present)
                    if not bool(ok.all()):
                        mask = xp.zeros(n, dtype=bool)
                        if any_null:
                            mask[xp.flatnonzero(~null)[~ok]] = True
                        else:
                            mask[~ok] = True
                        out[reason] = mask
        if self.unique and n > 1:
            dup = _duplicated(values, self.kind, self.keep_first) & ~to_host(null)
            if dup.any():
                out[self.duplicate_reason] = dup

    def _text_reasons(self, values: Any, out: dict[str, Any]) -> None:
        """Text rules are element-wise, so each distinct value is checked once: pandas' factorize (a C hash pass)
        gives every row its value's code, and the rules' vector lowering runs over the distinct values only."""
        codes, uniques = factorize_text(values)
        null = codes < 0
        if self.required and null.any():
            out[self.null_reason] = null
        if self.rules and len(uniques):
            distinct = uniques.tolist()
            for reason, _, check in self.rules:
                ok = np.asarray(check(np, distinct), dtype=bool)
                if not ok.all():
                    out[reason] = ~np.append(ok, True)[codes]  # code -1 (null) reads the appended True
        if self.unique and self.fold and len(uniques) > 1:  # look-alike values are one value to the copies' check
            keys = lookalike_keys(uniques.tolist())
            if keys != uniques.tolist():
                key_codes, uniques = factorize_text(keys)
                codes = np.append(key_codes, -1)[codes]  # code -1 (null) reads the appended -1
        if self.unique and len(codes) > 1 and len(uniques) < len(codes) - int(null.sum()):
            if self.keep_first:  # a copy is a duplicate when its value's code was seen in an earlier row
                dup = ~null & pd.Series(codes).duplicated(keep="first").to_numpy(dtype=bool)
            else:
                counts = np.bincount(codes[~null], minlength=len(uniques))
                dup = ~null & (np.append(counts, 0)[codes] > 1)
            if dup.any():
                out[self.duplicate_reason] = dup


class _Remembered:
    """The distinct wire values of a categorical column seen so far, as arrays: each value's id, and per id its
    canonical value, parse reason, first rule reason and feature values. Bounded: past ``MEMO_MAX`` values it starts
    over (an exact cache: a value is recomputed, never answered wrongly)."""

    def __init__(self, cell: Callable[[Any], tuple[Any, ...]], n_features: int) -> None:
        self.cell = cell
        self.n_features = n_features
        self._reset()

    def _reset(self) -> None:
        self.ids: dict[Any, int] = {}
        self.entries: list[tuple[Any, ...]] = []
        self._arrays()

    def _arrays(self) -> None:
        columns = list(zip(*self.entries, strict=True)) if self.entries else [()] * (3 + self.n_features)
        self.values = np.array(columns[0], dtype=object)
        self.parse = np.array(columns[1], dtype=object)
        self.fail = np.array(columns[2], dtype=object)
        self.any_parse = any(columns[1])
        self.any_fail = any(columns[2])
        self.features = [np.array(c) for c in columns[3:]]

    def index(self, w: np.ndarray) -> np.ndarray:
        ids = self.ids
        found = np.fromiter(map(ids.get, w, repeat(-1, len(w))), dtype=np.int64, count=len(w))
        if (found < 0).any():
            new = {v for v, i in zip(w, found.tolist(), strict=True) if i < 0}
            if len(ids) + len(new) > MEMO_MAX:
                self._reset()
                ids = self.ids
                new = set(w)
            for v in new:
                ids[v] = len(self.entries)
                self.entries.append(self.cell(v))
            self._arrays()
            found = np.fromiter(map(ids.get, w), dtype=np.int64, count=len(w))
        return found


def _features_of(kernels: list[tuple[Callable[[Any, Any], Any], Any]]) -> Callable[[Any], tuple[Any, ...]]:
    """One value -> the tuple of its kernels' outputs, specialized by count (no per-call loop for the usual one
    or two kernels per column)."""
    if not kernels:
        return lambda v: ()
    if len(kernels) == 1:
        ((k0, p0),) = kernels
        return lambda v: (k0(v, p0),)
    if len(kernels) == 2:
        (k0, p0), (k1, p1) = kernels
        return lambda v: (k0(v, p0), k1(v, p1))
    return lambda v: tuple([k(v, p) for k, p in kernels])


def _present(parse: list[str | None]) -> np.ndarray:
    return np.fromiter((r is not None for r in parse), dtype=bool, count=len(parse))


def to_host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def factorize_text(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, distinct values)`` of a text column, code -1 for a null: pandas' factorize (one C hash pass),
    except where a value holds a NUL. pandas' string hash table compares C strings, which end at a NUL, so
    ``"Uber\\x00trip"`` would share the code of an earlier ``"Uber"`` and be judged (and featurized) as that value;
    then every value is its own exact key (a dict pass). A NUL can only hide in a code that repeats, and finding one
    costs a join over the values."""
    a = np.asarray(values, dtype=object)
    codes, uniques = pd.factorize(a, use_na_sentinel=True)
    if len(uniques) == len(a) - int((codes < 0).sum()) or "\x00" not in "".join(a[codes >= 0].tolist()):
        return codes, np.asarray(uniques, dtype=object)
    index: dict[str, int] = {}
    exact = np.fromiter(
        (-1 if v is None or v is pd.NA else index.setdefault(v, len(index)) for v in a.tolist()), np.int64, len(a)
    )
    return exact, np.array(list(index), dtype=object)


def _duplicated(values: Any, kind: str, keep_first: bool = False) -> np.ndarray:
    """Rows whose value another row holds too: every copy, or (``keep_first``) every copy after the first."""
    s = pd.Series(to_host(values), dtype=object if kind in TEXT_KINDS else None)
    return s.duplicated(keep="first" if keep_first else False).to_numpy(dtype=bool)
