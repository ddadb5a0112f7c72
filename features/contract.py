"""The compiled feature contract: a pipeline spec and its fitted state, lowered once, used by every stage.

``compile_contract(spec, state)`` returns a ``Contract``. It holds, built from the same declarative rules
(``features.rules``) and kernels (``features.kernels``):

- ``schema()``: the pandera schema of the raw data (built-in pandera checks where pandera has them);
- ``reasons(columns)``: the vectorized evaluator, ``{reason: mask}`` over canonical arrays (numpy, or cupy for
  numbers and timestamps), with every rule's parameters bound at compile time;
- ``featurize(arrays)``: the request path, wire tensors -> ``(features, status)``; small requests go row by row
  through the scalar lowering (no array overhead per call), larger ones through the vector lowering;
- ``features(frame)``: model inputs for a pandas/cuDF frame or canonical columns (training, batch, parity);
- ``validate(frame)``: a data set's validation: pandera checks the structure (columns, dtypes), the vector evaluator
  the rows, every failing row quarantined with all its reasons;
- ``inputs`` / ``model_inputs``: the tensor names, datatypes and shapes that configs, runners and clients use.

Reasons are ``<column>:<code>``: ``null``, ``duplicate``, a rule's name, or a parse failure (``invalid_utf8``,
``unparseable``, ``naive_timestamp``, ``epoch_number``; in files also a number cell's ``not_a_number``,
``non_ascii_digits``, ``beyond_float64``, ``beyond_int64``, ``not_integer``: ``features.validation``). Copies of a
unique text value are found by look-alike key (``rules.lookalike_key``) on every path. A row's status is its first
reason (parse failures first, then column by column in spec order), or ``ok``. tests/unit/test_contract.py checks that
every lowering agrees.
"""

from __future__ import annotations

import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from inferline.features.backend import array_namespace
from inferline.features.kernels import NAT, Kernel, resolve_kernel
from inferline.features.rules import TEXT_KINDS, lookalike_keys
from inferline.features.spec import Column, PipelineSpec, SpecError
from inferline.features.state import FeatureMatrix, FeatureState
from inferline.features.tensors import RaggedTensors, TensorPlan
from inferline.features.wire import (
    INVALID_UTF8,
    decode_column,
    decode_value,
    nfc_texts,
    parse_instant,
    parse_instants,
)

__all__ = ["Contract", "RaggedTensors", "TensorSpec", "compile_contract", "factorize_text", "model_outputs"]

NULL = "null"
DUPLICATE = "duplicate"
OK = "ok"
# requests of up to this many rows take the scalar path (measured: benchmarks/features_bench.py)
SCALAR_ROWS = 8
MEMO_MAX = 4096  # remembered verdicts per categorical column (bounded: a flood of new values only clears it)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as Triton declares it: name, datatype (``FP32``, ``INT64``, ``BYTES``...) and dims per row."""

    name: str
    datatype: str
    dims: tuple[int, ...]


def model_outputs(spec: PipelineSpec) -> tuple[TensorSpec, ...]:
    """What the scoring model answers per row: class ``probabilities`` and the ``predicted_class`` for a
    classifier (the decision threshold applies to binary tasks only; more classes take the argmax), one
    ``prediction`` for regression."""
    if spec.task == "regression":
        return (TensorSpec("prediction", "FP32", (1,)),)
    return (
        TensorSpec("probabilities", "FP32", (len(spec.classes),)),
        TensorSpec("predicted_class", "INT64", (1,)),
    )


class _ColumnPlan:
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
        # copies of a unique text value are found by their look-alike key (``rules.lookalike_key``: NFKC, white
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
        self, w: np.ndarray, n: int, feats: Sequence[_FeaturePlan], outputs: dict[str, Any]
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
        self, w: np.ndarray, n: int, feats: Sequence[_FeaturePlan], outputs: dict[str, Any]
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
        self, w: np.ndarray, feats: Sequence[_FeaturePlan], outputs: dict[str, Any]
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

    def cell(self, feats: Sequence[_FeaturePlan]) -> Callable[[Any], tuple[Any, ...]]:
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
            dup = _duplicated(values, self.kind, self.keep_first) & ~_host(null)
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


def _host(a: Any) -> np.ndarray:
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
    s = pd.Series(_host(values), dtype=object if kind in TEXT_KINDS else None)
    return s.duplicated(keep="first" if keep_first else False).to_numpy(dtype=bool)


def merge_reasons(parsed: Mapping[str, Any], checked: Mapping[str, Any]) -> dict[str, Any]:
    """Reasons found while parsing, then the rules' reasons; a value that failed to parse is reported as such, not
    also as a null (its parsed value is empty) or a duplicate (its parsed value is a stand-in that other failed
    rows share)."""
    merged = dict(parsed)
    failed: dict[str, Any] = {}
    for reason, mask in parsed.items():
        column = reason.split(":", 1)[0]
        failed[column] = failed[column] | mask if column in failed else mask
    for reason, mask in checked.items():
        column, code = reason.split(":", 1)
        if code in (NULL, DUPLICATE) and column in failed:
            mask = mask & ~failed[column]
            if not mask.any():
                continue
        merged[reason] = merged[reason] | mask if reason in merged else mask
    return merged


@dataclass(frozen=True)
class _FeaturePlan:
    name: str
    source: str
    kernel: Kernel
    params: Mapping[str, Any]


class Contract:
    """A spec and its fitted state, compiled. Cheap to call, not free to build: build one per loaded model (it
    remembers categorical verdicts, so it is owned, never shared between models). ``state`` may be None for a
    contract that only validates (before training has fitted one)."""

    def __init__(self, spec: PipelineSpec, state: FeatureState | None = None) -> None:
        if state is not None:
            state.check(spec)
        self.spec = spec
        self.state = state
        self.input_columns = spec.input_columns
        self._plans = {c.name: _ColumnPlan(c) for c in spec.columns if c.kind != "tensor"}
        self._tensors = [TensorPlan(c) for c in spec.tensor_columns]
        # text columns whose copies are found by look-alike key (``rules.lookalike_key``) on every path
        self.lookalike_columns = frozenset(name for name, plan in self._plans.items() if plan.fold)
        self._inputs = [self._plans[c.name] for c in self.input_columns if c.kind != "tensor"]
        self._input_names = [p.name for p in self._inputs]
        self._schemas: dict[bool, Any] = {}
        self.inputs = tuple(
            TensorSpec(c.name, c.triton_dtype, tuple(c.shape) if c.kind == "tensor" else (1,))
            for c in self.input_columns
        )
        self._numeric: list[_FeaturePlan] = []
        self._categorical: list[_FeaturePlan] = []
        for f in spec.features:
            kernel = resolve_kernel(f.kernel)
            if spec.column(f.source).kind not in kernel.kinds:
                raise SpecError(
                    f"feature {f.name!r}: kernel {f.kernel!r} reads {sorted(kernel.kinds)} columns, but {f.source!r} "
                    f"is {spec.column(f.source).kind}"
                )
            if kernel.output != f.output:
                raise SpecError(
                    f"feature {f.name!r}: kernel {f.kernel!r} gives a {kernel.output} feature, declared {f.output}"
                )
            params: dict[str, Any] = dict(f.params)
            if kernel.output == "categorical":
                vocabulary = state.vocabularies[f.name] if state is not None else []
                params["lookup"] = {v: i + 1 for i, v in enumerate(vocabulary)}
            plan = _FeaturePlan(f.name, f.source, kernel, params)
            (self._categorical if f.output == "categorical" else self._numeric).append(plan)
        self._by_source: dict[str, list[_FeaturePlan]] = {}
        for plan in (*self._numeric, *self._categorical):
            self._by_source.setdefault(plan.source, []).append(plan)
        # the tensors every stage agrees on: raw inputs (one per column), the model's inputs (``numeric`` and
        # ``categorical`` when the spec has such features, then each tensor column), the served outputs
        self.model_inputs = tuple(
            [TensorSpec("numeric", "FP32", (len(self._numeric),))] * bool(self._numeric)
            + [TensorSpec("categorical", "INT64", (len(self._categorical),))] * bool(self._categorical)
            + [TensorSpec(c.name, c.input_dtype, tuple(c.shape)) for c in spec.tensor_columns]
        )
        self.outputs = (*model_outputs(spec), TensorSpec("status", "BYTES", (1,)), TensorSpec("release", "BYTES", (1,)))
        mean = state.mean if state is not None else [0.0] * len(self._numeric)
        std = state.std if state is not None else [1.0] * len(self._numeric)
        self._mean = np.asarray(mean, dtype=np.float64)
        self._std = np.asarray(std, dtype=np.float64)
        self._row_cells = [p.cell(self._by_source.get(p.name, ())) for p in self._inputs]
        position = {
            f.name: (j, 3 + k)
            for j, p in enumerate(self._inputs)
            for k, f in enumerate(self._by_source.get(p.name, ()))
        }
        unreachable = [f.name for f in (*self._numeric, *self._categorical) if f.name not in position]
        if unreachable:
            raise SpecError(f"features {unreachable} read the label column; features must come from input columns")
        self._numeric_at = [
            (*position[f.name], m, s)
            for f, m, s in zip(self._numeric, self._mean.tolist(), self._std.tolist(), strict=True)
        ]
        self._categorical_at = [position[f.name] for f in self._categorical]

    # ------------------------------------------------------------------------------------------ schema
    def schema(self, include_label: bool = True) -> Any:
        """The pandera schema: exact dtypes (no coercion), nullability, every rule as a check, uniqueness."""
        if include_label not in self._schemas:
            import pandera.pandas as pa

            folds = self.lookalike_columns
            columns = {
                c.name: pa.Column(
                    c.raw_dtype,
                    # a tensor column's rules run per element (features.tensors), not as pandera checks
                    checks=[] if c.kind == "tensor" else [*(r.pandera() for r in c.rules), *_copies_check(c, folds)],
                    nullable=not c.required,
                    unique=c.unique and c.name not in folds,  # look-alike copies: checked on their keys instead
                    # the column's duplicate policy: every copy, or every copy after the first
                    report_duplicates="exclude_first" if c.duplicates == "all_but_first" else "all",
                    coerce=False,
                    required=True,
                )
                for c in self._columns(include_label)
            }
            self._schemas[include_label] = pa.DataFrameSchema(
                columns, strict=True, coerce=False, name=f"{self.spec.name}_v{self.spec.version}"
            )
        return self._schemas[include_label]

    def structure_schema(self, include_label: bool = True) -> Any:
        """The schema's structure alone (columns, dtypes, strictness): what pandera checks before our evaluator."""
        key = ("structure", include_label)
        if key not in self._schemas:
            import pandera.pandas as pa

            columns = {
                c.name: pa.Column(c.raw_dtype, nullable=True, coerce=False, required=True)
                for c in self._columns(include_label)
            }
            self._schemas[key] = pa.DataFrameSchema(columns, strict=True, coerce=False)  # type: ignore[index]
        return self._schemas[key]  # type: ignore[index]

    def _columns(self, include_label: bool) -> tuple[Column, ...]:
        return self.spec.columns if include_label else self.input_columns

    # ------------------------------------------------------------------------------------------ canonical columns
    def columns_of(self, frame: Any, include_label: bool = False, xp: ModuleType = np) -> dict[str, Any]:
        """A pandas or cuDF frame (raw dtypes), or a mapping of canonical arrays, -> canonical arrays."""
        if isinstance(frame, Mapping):
            return {c.name: frame[c.name] for c in self._columns(include_label) if c.name in frame}
        out: dict[str, Any] = {}
        gpu = type(frame).__module__.startswith("cudf")
        for c in self._columns(include_label):
            if c.name not in frame.columns:
                continue
            s = frame[c.name]
            if c.kind == "tensor":  # one value per row (features.tensors makes it dense)
                out[c.name] = s.to_arrow().to_pylist() if gpu else s.to_numpy(dtype=object)
                continue
            kind = self._plans[c.name].kind
            if gpu:
                out[c.name] = _cudf_canonical(s, kind)
            elif kind in TEXT_KINDS:
                out[c.name] = s.to_numpy(dtype=object, na_value=None)
            elif kind == "timestamp":
                out[c.name] = _timestamp_ns(s)
            elif kind == "numeric":
                out[c.name] = s.to_numpy(dtype="float64", na_value=np.nan)
            else:
                out[c.name] = s.to_numpy(dtype="int64")
            if xp is not np and kind not in TEXT_KINDS:
                out[c.name] = xp.asarray(out[c.name])
        return out

    # ------------------------------------------------------------------------------------------ vector lowering
    def reasons(self, columns: Mapping[str, Any], include_label: bool = False, xp: ModuleType = np) -> dict[str, Any]:
        """``{reason: mask}`` over canonical arrays, column by column in spec order."""
        out: dict[str, Any] = {}
        tensors = {p.name: p for p in self._tensors}
        for c in self._columns(include_label):
            if c.name not in columns:
                continue
            if c.name in tensors:
                out.update(tensors[c.name].reasons(xp, columns[c.name]))
            else:
                self._plans[c.name].vector_reasons(xp, columns[c.name], out)
        return out

    def features(self, frame: Any, xp: ModuleType | None = None) -> FeatureMatrix:
        """Model inputs for every row of a frame (pandas or cuDF) or canonical columns, on the frame's backend."""
        if xp is None:
            xp = array_namespace(frame)
        columns = self.columns_of(frame, xp=xp)
        n = _length(columns)
        return self._features(columns, n, xp)

    def raw_numeric(self, frame: Any, xp: ModuleType | None = None) -> Any:
        """The numeric features before standardization (float64 [n, k]): what ``fit_state`` fits statistics on."""
        xp = array_namespace(frame) if xp is None else xp
        columns = self.columns_of(frame, xp=xp)
        return self._raw_numeric(columns, _length(columns), xp)

    def _kernel(self, plan: _FeaturePlan, columns: Mapping[str, Any], xp: ModuleType, distinct: dict[str, Any]) -> Any:
        """One feature over a data set. Kernels are per value, so a text column's kernel runs over its distinct
        values only (pandas' factorize, one C hash pass; shared by the column's features) and is gathered back."""
        values = columns[plan.source]
        if self._plans[plan.source].kind not in TEXT_KINDS or len(values) < 64:
            return plan.kernel.vector(xp, values, plan.params)
        if plan.source not in distinct:
            codes, uniques = factorize_text(values)
            distinct[plan.source] = (codes, [*uniques.tolist(), None])  # code -1 (null) reads the appended None
        codes, uniques = distinct[plan.source]
        per_value = _host(plan.kernel.vector(np, np.array(uniques, dtype=object), plan.params))
        return xp.asarray(per_value[codes])

    def _raw_numeric(
        self, columns: Mapping[str, Any], n: int, xp: ModuleType, distinct: dict[str, Any] | None = None
    ) -> Any:
        if not self._numeric:
            return xp.zeros((n, 0), dtype="float64")
        distinct = {} if distinct is None else distinct
        return xp.stack([self._kernel(p, columns, xp, distinct) for p in self._numeric], axis=1)

    def _features(self, columns: Mapping[str, Any], n: int, xp: ModuleType) -> FeatureMatrix:
        distinct: dict[str, Any] = {}
        raw = self._raw_numeric(columns, n, xp, distinct)
        numeric = ((raw - xp.asarray(self._mean)) / xp.asarray(self._std)).astype("float32")
        if self._categorical:
            categorical = xp.stack([self._kernel(p, columns, xp, distinct) for p in self._categorical], axis=1).astype(
                "int64"
            )
        else:
            categorical = xp.zeros((n, 0), dtype="int64")
        tensors = {}
        for p in self._tensors:
            canonical, _ = p.canonical(columns[p.name])
            tensors[p.name] = p.model_input(xp, canonical, None)
        return FeatureMatrix(numeric=numeric, categorical=categorical, tensors=tensors)

    def shape_groups(self, frame: Any) -> list[np.ndarray]:
        """Row indices grouped by the shapes of their tensor values (one group when every row shares them, or
        when the spec has no tensor column): each group can be one model batch."""
        n = len(frame)
        if not self._tensors:
            return [np.arange(n)]
        columns = self.columns_of(frame)
        keys: list[tuple[Any, ...]] = [()] * n
        for p in self._tensors:
            canonical, _ = p.canonical(columns[p.name])
            if isinstance(canonical, list):
                keys = [(*k, None if a is None else a.shape) for k, a in zip(keys, canonical, strict=True)]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(k, []).append(i)
        return [np.asarray(g, dtype=np.int64) for g in groups.values()]

    def feeds(self, m: FeatureMatrix) -> dict[str, Any]:
        """The model's inputs by name, in ``model_inputs`` order."""
        available = {"numeric": m.numeric, "categorical": m.categorical, **m.tensors}
        return {t.name: available[t.name] for t in self.model_inputs}

    # ------------------------------------------------------------------------------------------ request path
    def featurize(self, arrays: Mapping[str, Any]) -> tuple[FeatureMatrix, np.ndarray]:
        """Wire tensors (one per raw input column, shape [n] or [n, 1]) -> ``(features, status)``. A row that
        breaks a rule gets its reason as status and neutral features (zeros, the unknown bucket), so it rides in
        the same batch as the others. A missing input raises ``KeyError`` naming it (a malformed request)."""
        names = self._input_names
        try:
            wire = [arrays[name] for name in names]
            dense = [np.asarray(arrays[p.name]) for p in self._tensors]
        except KeyError:
            everything = [c.name for c in self.input_columns]
            missing = [name for name in everything if name not in arrays]
            raise KeyError(
                f"request lacks input(s) {missing}; expected one tensor per raw column: {everything}"
            ) from None
        wire = [w if w.ndim == 1 else w.reshape(-1) for w in map(np.asarray, wire)]
        n = len(wire[0]) if wire else len(dense[0]) if dense else 0
        if not all(len(w) == n for w in (*wire, *dense)):
            rows = {c.name: len(arrays[c.name]) for c in self.input_columns}
            raise ValueError(f"request inputs hold different numbers of rows: {rows}; send one value per row in each")
        m, status = self._featurize_rows(wire, n) if n <= SCALAR_ROWS else self._featurize_vector(wire, n)
        if self._tensors:
            self._featurize_tensors(m, status, dense, n)
        return m, status

    def _featurize_tensors(self, m: FeatureMatrix, status: np.ndarray, dense: list[np.ndarray], n: int) -> None:
        """The tensor columns of a request: their reasons (for rows still ``ok``, in spec order) and inputs."""
        canonical = []
        for p, w in zip(self._tensors, dense, strict=True):
            values, found = p.canonical(w)
            found.update(p.rule_reasons(np, values, n) if not found else {})
            for reason, mask in found.items():
                for i in np.flatnonzero(mask).tolist():
                    if status[i] == OK:
                        status[i] = reason
            canonical.append(values)
        bad = status != OK
        for p, values in zip(self._tensors, canonical, strict=True):
            # a row the column's preprocess function raises on gets that reason; the rows beside it are scored
            m.tensors[p.name], failed = p.model_input_rows(np, values, bad)
            status[failed & ~bad] = p.reason["preprocess"]
        bad = status != OK
        if bad.any():
            m.numeric[bad] = 0.0
            m.categorical[bad] = 0

    def _featurize_vector(self, wire: list[np.ndarray], n: int) -> tuple[FeatureMatrix, np.ndarray]:
        """Column by column: numbers and timestamps through numpy, text value by value through the scalar
        lowering (with each categorical value's verdict and features remembered), first reasons only."""
        parse_first: list[str | None] | None = None
        rule_first: list[str | None] | None = None
        outputs: dict[str, Any] = {}
        for p, w in zip(self._inputs, wire, strict=True):
            parse, fail = p.request_column(w, n, self._by_source.get(p.name, ()), outputs)
            if parse is not None:
                parse_first = (
                    parse if parse_first is None else [a or b for a, b in zip(parse_first, parse, strict=True)]
                )
            if fail is not None:
                rule_first = fail if rule_first is None else [a or b for a, b in zip(rule_first, fail, strict=True)]
        if parse_first is None and rule_first is None:
            status = np.full(n, OK, dtype=object)
            bad = None
        else:
            first = parse_first or [None] * n
            second = rule_first or [None] * n
            status = np.array([a or b or OK for a, b in zip(first, second, strict=True)], dtype=object)
            bad = status != OK
        numeric = np.empty((n, len(self._numeric)), dtype=np.float64)
        for j, f in enumerate(self._numeric):
            numeric[:, j] = outputs[f.name]
        numeric = ((numeric - self._mean) / self._std).astype(np.float32)
        categorical = np.empty((n, len(self._categorical)), dtype=np.int64)
        for j, f in enumerate(self._categorical):
            categorical[:, j] = outputs[f.name]
        if bad is not None and bad.any():
            numeric[bad] = 0.0
            categorical[bad] = 0
        return FeatureMatrix(numeric=numeric, categorical=categorical), status

    def _featurize_rows(self, wire: list[np.ndarray], n: int) -> tuple[FeatureMatrix, np.ndarray]:
        """Row by row through each column's scalar lowering (``_ColumnPlan.cell``): no array work per value."""
        numeric_at, categorical_at = self._numeric_at, self._categorical_at
        if n == 1:  # the commonest request: one value per column
            entries = [cell(w[0]) for cell, w in zip(self._row_cells, wire, strict=True)]
            reason = next((e[1] for e in entries if e[1] is not None), None) or next(
                (e[2] for e in entries if e[2] is not None), None
            )
            status = np.array([reason or OK], dtype=object)
            if reason is None:
                numeric = np.array([[(entries[j][k] - m) / s for j, k, m, s in numeric_at]], dtype=np.float32)
                categorical = np.array([[entries[j][k] for j, k in categorical_at]], dtype=np.int64)
            else:
                numeric = np.zeros((1, len(numeric_at)), dtype=np.float32)
                categorical = np.zeros((1, len(categorical_at)), dtype=np.int64)
            return FeatureMatrix(numeric=numeric, categorical=categorical), status
        columns = [[cell(v) for v in w] for cell, w in zip(self._row_cells, wire, strict=True)]
        if n > 1:
            for j, p in enumerate(self._inputs):
                if p.unique:
                    fail = p.duplicates([e[0] for e in columns[j]], None)
                    if fail is not None:
                        columns[j] = [
                            e if r is None or e[2] else (e[0], e[1], r, *e[3:])
                            for e, r in zip(columns[j], fail, strict=True)
                        ]
        zeros_n = [0.0] * len(numeric_at)
        zeros_c = [0] * len(categorical_at)
        numeric_rows: list[list[float]] = []
        categorical_rows: list[list[int]] = []
        status = np.empty(n, dtype=object)
        for i in range(n):
            entries = [c[i] for c in columns]
            reason = None
            for e in entries:
                if e[1] is not None:
                    reason = e[1]
                    break
            else:
                for e in entries:
                    if e[2] is not None:
                        reason = e[2]
                        break
            if reason is None:
                status[i] = OK
                numeric_rows.append([(entries[j][k] - m) / s for j, k, m, s in numeric_at])
                categorical_rows.append([entries[j][k] for j, k in categorical_at])
            else:
                status[i] = reason
                numeric_rows.append(zeros_n)
                categorical_rows.append(zeros_c)
        numeric = np.array(numeric_rows, dtype=np.float32).reshape(n, len(numeric_at))
        categorical = np.array(categorical_rows, dtype=np.int64).reshape(n, len(categorical_at))
        return FeatureMatrix(numeric=numeric, categorical=categorical), status

    # ------------------------------------------------------------------------------------------ data sets
    def row_reasons(self, frame: Any, include_label: bool = False) -> dict[str, Any]:
        """Per-row failures of a frame (raw dtypes) or canonical columns as ``{reason: mask}``."""
        return self.reasons(self.columns_of(frame, include_label), include_label)

    def validate(
        self, frame: pd.DataFrame, source: str = "<frame>", include_label: bool = True, keep: Sequence[str] = ()
    ) -> Any:
        """A data set's ``ValidationResult`` (see ``features.validation.validate_frame``); ``keep`` names columns
        outside the spec that ride along unvalidated (a row number) into the valid rows and the quarantine."""
        from inferline.features.validation import validate_with

        return validate_with(self, frame, source, include_label, keep)

    def check_structure(self, frame: pd.DataFrame, include_label: bool = True) -> Any:
        """pandera's lazy failure cases of the structure schema (an empty frame when the structure holds)."""
        from pandera.errors import SchemaErrors

        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The behavior of DataFrame concatenation with empty", FutureWarning)
                self.structure_schema(include_label).validate(frame, lazy=True)
        except SchemaErrors as exc:
            return exc.failure_cases
        return None


def _copies_check(column: Column, folds: frozenset[str]) -> list[Any]:
    """A unique column's pandera check for look-alike copies, where its copies are found by key."""
    return [_lookalike_copies(column)] if column.unique and column.name in folds else []


def _lookalike_copies(column: Column) -> Any:
    """pandera's uniqueness of a text column, on look-alike keys (``rules.lookalike_key``): the copies the
    column's ``duplicates`` policy refuses fail the check ``field_uniqueness``."""
    import pandera.pandas as pa

    keep: Any = "first" if column.duplicates == "all_but_first" else False

    def unique_keys(s: pd.Series) -> pd.Series:
        keys = pd.Series(lookalike_keys(s.tolist()), index=s.index, dtype=object)
        return ~keys.duplicated(keep=keep)

    # named as pandera names its own uniqueness check, so that reports read alike either way
    return pa.Check(unique_keys, name="field_uniqueness", ignore_na=True)


def _timestamp_ns(s: pd.Series) -> np.ndarray:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy(dtype="datetime64[ns]").view("int64")


def _cudf_canonical(s: Any, kind: str) -> Any:  # pragma: no cover - exercised where cuDF is installed
    """A cuDF column -> canonical form: numbers and timestamps as cupy arrays, text as a host object array."""
    if kind in TEXT_KINDS:
        return np.array(s.to_arrow().to_pylist(), dtype=object)
    if kind == "timestamp":
        return s.astype("datetime64[ns]").astype("int64").fillna(NAT).to_cupy()
    if kind == "numeric":
        return s.astype("float64").fillna(np.nan).to_cupy()
    return s.astype("int64").to_cupy()


def _length(columns: Mapping[str, Any]) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def compile_contract(spec: PipelineSpec, state: FeatureState | None = None) -> Contract:
    """Compile ``spec`` (and its fitted ``state``: needed for features, not for validation) into a ``Contract``."""
    return Contract(spec, state)
