"""Tensor columns: a model input per row that is an array (an image FP32 [3, H, W], token ids INT64 [-1], a feature
vector FP32 [n]), validated and optionally preprocessed by the compiled contract like every other column.

A tensor column declares its Triton datatype and per-row shape (``-1`` for a variable dimension). Its canonical
form is a dense array ``[n, *shape]`` (a request, or a data set whose rows share one shape) or a list of per-row
arrays (``None`` for a null row) when rows come from Parquet. A Parquet file holds a tensor column as a list column:
nested lists that match the shape, or one flat list of ``prod(shape)`` values when the shape is fixed.

Reasons, each ``<column>:<code>``:

- ``null``: the row has no value (a required column);
- ``empty``: the row has no elements (a variable dimension of length 0, e.g. no token ids): no model can score
  it, so it is refused whether or not the column is required;
- ``dtype``: the values are not of the declared datatype and cannot be held by it exactly (text, a fractional
  number in an integer tensor, a value outside the integer type's range);
- ``shape``: the row's shape does not match the declared one (rank, or a fixed dimension);
- the column's rules (``finite``, ``ge``, ``le``, ``between``): the row fails when any of its elements does.

On the request path Triton has checked the datatype and the fixed dimensions of the whole request; the rules run per
row, and a row that fails gets its reason as ``status`` and zeros as its model input, like any other column.
``preprocess`` (``"pkg.mod:fn"``, ``fn(xp, batch) -> batch``) runs over the valid batch, on the array namespace
of the data (numpy, or cupy on a GPU), and its result is cast to ``model_dtype``. When it raises, the batch is
split in halves until the rows it raises on are found alone (``isolate_rows``): those rows get the reason
``<column>:preprocess`` and zeros as their model input, the rows beside them are preprocessed as usual, and the
user's error is logged once per column (a function that raises on every row gives every row that reason).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inferline.core.errors import UserError
from inferline.features.spec import TENSOR_DTYPES, Column, SpecError

__all__ = ["PreprocessFailed", "TensorPlan", "isolate_rows", "numpy_dtype", "parquet_rows"]

DTYPE, SHAPE, NULL, EMPTY, PREPROCESS = "dtype", "shape", "null", "empty", "preprocess"
log = logging.getLogger(__name__)
# stored datatypes no PyTorch layer takes as input: a column of one must say what its model receives (model_dtype)
NARROW = frozenset({"UINT8", "INT8", "INT16", "BOOL"})


def numpy_dtype(triton: str) -> np.dtype[Any]:
    return np.dtype(TENSOR_DTYPES[triton])


def parquet_rows(column: Column, values: Sequence[Any]) -> list[Any]:
    """A tensor column's rows as a Parquet list column holds them: an array of more than one dimension flattened
    when the column's shape is fixed (read back into the shape), nested lists when it has a variable dimension.
    pyarrow writes neither such array as it is ("Can only convert 1-dimensional array values")."""
    fixed = all(d > 0 for d in column.shape)
    return [(v.reshape(-1) if fixed else v.tolist()) if isinstance(v, np.ndarray) and v.ndim > 1 else v for v in values]


def _nested(v: Any) -> Any:
    """pyarrow's nested lists come back as object arrays of arrays: turn them into nested Python lists."""
    if isinstance(v, np.ndarray) and v.dtype == object:
        return [_nested(x) for x in v]
    if isinstance(v, list | tuple):
        return [_nested(x) for x in v]
    return v


class TensorPlan:
    """One tensor column, compiled: its per-row checks and its model input."""

    def __init__(self, column: Column, load_preprocess: bool = True) -> None:
        """``load_preprocess=False``: the column's checks only (a client encoding rows), never importing the
        user's preprocessing module."""
        assert column.dtype is not None
        if column.dtype in NARROW and column.model_dtype is None:
            raise SpecError(
                f"tensor column {column.name!r} is {column.dtype} and declares no model_dtype, so the model would "
                f"receive {column.dtype}, which PyTorch layers do not take (convolutions and linear layers need "
                "floats, embeddings INT64); declare model_dtype='FP32' (with preprocess= to scale the values), "
                f"or model_dtype={column.dtype!r} if the model really takes them as they are (an ONNX file)"
            )
        self.name = column.name
        self.required = column.required
        self.shape = tuple(column.shape)
        self.dtype = numpy_dtype(column.dtype)
        self.model_dtype = numpy_dtype(column.input_dtype)
        self.reason = {code: f"{column.name}:{code}" for code in (DTYPE, SHAPE, NULL, EMPTY, PREPROCESS)}
        self.rules: list[tuple[str, Callable[[Any, Any], Any]]] = [
            (f"{column.name}:{r.name}", r.vector()) for r in column.rules
        ]
        self.preprocess: Callable[[Any, Any], Any] | None = None
        self.preprocess_path = column.preprocess
        self._logged = False  # the user's preprocessing error is logged once per compiled column
        if column.preprocess and load_preprocess:
            from inferline.features.imports import import_object

            fn = import_object(column.preprocess, f"preprocessing function of tensor column {column.name!r}")
            if not callable(fn):
                raise TypeError(f"preprocess {column.preprocess!r} of column {column.name!r} is not callable")
            self.preprocess = fn

    # ------------------------------------------------------------------------------------------ canonical form
    def fits(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.shape) and all(d == -1 or d == s for d, s in zip(self.shape, shape, strict=True))

    def _row(self, v: Any) -> tuple[np.ndarray | None, str | None]:
        """One stored value -> (array of the declared dtype, None) or (None, reason code)."""
        if v is None or (isinstance(v, float) and v != v):
            return None, NULL
        try:
            a = np.asarray(v)
            if a.dtype == object:
                a = np.asarray(_nested(v))
        except (ValueError, TypeError):
            return None, SHAPE  # ragged nesting
        if a.dtype.kind not in "biuf":
            return None, DTYPE
        if self.dtype.kind in "iub" and a.dtype.kind == "f":
            if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
                return None, DTYPE
        if self.dtype.kind in "iu" and a.size:
            info = np.iinfo(self.dtype)
            if a.min() < info.min or a.max() > info.max:
                return None, DTYPE
        if a.size == 0 and a.ndim == len(self.shape):
            return None, EMPTY
        if not self.fits(a.shape):
            fixed = all(d > 0 for d in self.shape)
            if fixed and a.ndim == 1 and a.size == int(np.prod(self.shape)):
                a = a.reshape(self.shape)  # a flat list column of a fixed shape
            else:
                return None, SHAPE
        return a.astype(self.dtype, copy=False), None

    def canonical(self, values: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """Stored values (a dense array, or one value per row) -> (canonical form, ``{reason: mask}``)."""
        if isinstance(values, np.ndarray) and values.dtype != object:
            n = len(values)
            if not self.fits(values.shape[1:]) or values.dtype.kind not in "biuf":
                return values, {self.reason[SHAPE if values.dtype.kind in "biuf" else DTYPE]: np.ones(n, dtype=bool)}
            if n and values.size == 0:  # one request of empty rows (Triton carries one shape per request)
                return values.astype(self.dtype, copy=False), {self.reason[EMPTY]: np.ones(n, dtype=bool)}
            return values.astype(self.dtype, copy=False), {}
        rows: list[np.ndarray | None] = []
        found: dict[str, np.ndarray] = {}
        n = len(values)
        for i, v in enumerate(values):
            a, code = self._row(v)
            rows.append(a)
            if code is not None and (code != NULL or self.required):  # EMPTY always: no model scores it
                found.setdefault(self.reason[code], np.zeros(n, dtype=bool))[i] = True
        shapes = {a.shape for a in rows if a is not None}
        if len(shapes) == 1:  # one shape: dense, a refused row held as zeros (its reason says why)
            (shape,) = shapes
            zero = np.zeros(shape, dtype=self.dtype)
            return np.stack([zero if a is None else a for a in rows]), found
        if not shapes and all(d > 0 for d in self.shape):
            return np.zeros((n, *self.shape), dtype=self.dtype), found
        return rows, found

    # ------------------------------------------------------------------------------------------ checks
    def rule_reasons(self, xp: Any, values: Any, n: int) -> dict[str, Any]:
        """The rules over canonical values: a row fails a rule when any of its elements does."""
        out: dict[str, Any] = {}
        if not self.rules or n == 0:
            return out
        if isinstance(values, list):
            for reason, check in self.rules:
                mask = np.zeros(n, dtype=bool)
                for i, a in enumerate(values):
                    if a is not None and a.size and not bool(np.all(check(np, a))):
                        mask[i] = True
                if mask.any():
                    out[reason] = mask
            return out
        flat = values.reshape(n, -1)
        for reason, check in self.rules:
            ok = check(xp, flat)
            bad = ~ok.all(axis=1) if flat.shape[1] else xp.zeros(n, dtype=bool)
            if bool(bad.any()):
                out[reason] = bad
        return out

    def reasons(self, xp: Any, values: Any) -> dict[str, Any]:
        canonical, found = self.canonical(values)
        n = len(canonical)
        for reason, mask in self.rule_reasons(xp, canonical, n).items():
            found[reason] = found[reason] | mask if reason in found else mask
        return found

    # ------------------------------------------------------------------------------------------ model input
    def model_input(self, xp: Any, values: Any, bad: Any | None) -> Any:
        """Canonical values (dense) -> the model input: preprocessed, cast, rows in ``bad`` zeroed. Raises
        ``PreprocessFailed`` (naming the rows) when the preprocessing function raises on some rows; the request
        path, which must answer every row, calls ``model_input_rows`` instead."""
        x, failed, error = self._model_input(xp, values, bad)
        if failed.any():
            raise PreprocessFailed(self, failed, error)
        return x

    def model_input_rows(self, xp: Any, values: Any, bad: Any | None) -> tuple[Any, np.ndarray]:
        """``model_input`` that never raises for the preprocessing function: ``(input, failed)``, where
        ``failed`` (bool [n], on the host) marks the rows it raised on, found alone, whose input is zeros."""
        x, failed, _ = self._model_input(xp, values, bad)
        return x, failed

    def _model_input(self, xp: Any, values: Any, bad: Any | None) -> tuple[Any, np.ndarray, BaseException | None]:
        """``model_input_rows`` and the first error the preprocessing function raised (None when it did not)."""
        if isinstance(values, list):
            raise RaggedTensors(self.name, {a.shape for a in values if a is not None})
        x = xp.asarray(values)
        if bad is not None and bool(bad.any()):
            x = x.copy()
            x[bad] = 0
        n = len(x)
        if self.preprocess is None:
            return x.astype(self.model_dtype, copy=False), np.zeros(n, dtype=bool), None
        fn = self.preprocess
        outputs, failed, errors = isolate_rows(lambda lo, hi: [fn(xp, x[lo:hi])], n)
        error = next(iter(errors.values()), None)
        if error is not None:
            if not self._logged:
                self._logged = True
                log.warning(
                    "preprocess %r of tensor column %r raised on %d of %d rows (they get the reason %r; logged "
                    "once): %s: %s",
                    self.preprocess_path, self.name, int(failed.sum()), n, self.reason[PREPROCESS],
                    type(error).__name__, error,
                )  # fmt: skip
        if outputs is None:  # it raised on every row: zeros of the raw shape stand in, every row has its reason
            return xp.zeros(x.shape, dtype=self.model_dtype), failed, error
        return outputs[0].astype(self.model_dtype, copy=False), failed, error

    def neutral(self, n: int, like: tuple[int, ...]) -> np.ndarray:
        return np.zeros((n, *like), dtype=self.model_dtype)


def isolate_rows(
    run: Callable[[int, int], Sequence[Any]], n: int, max_failed: int | None = None
) -> tuple[list[Any] | None, np.ndarray, dict[int, BaseException]]:
    """Run ``run(lo, hi)`` (rows ``lo:hi`` -> a list of arrays of ``hi - lo`` rows) over ``n`` rows so that a row
    it raises on costs only itself: the whole range first, and when that raises, each half again, down to single
    rows (``k`` bad rows cost about ``2 k log2(n)`` extra calls, none when nothing raises). Once more than
    ``max_failed`` rows have failed, every row not yet scored fails with the latest error (a caller that refuses
    so many anyway need not pay for finding each).

    Returns ``(outputs, failed, errors)``: ``outputs`` are the ``n`` rows' arrays, a failed row's entries zeros
    of the shape and dtype the other rows have (None when every row failed), ``failed`` a bool mask, ``errors``
    each failed row's own exception by row."""
    failed = np.zeros(n, dtype=bool)
    parts: list[tuple[int, list[Any]]] = []
    errors: dict[int, BaseException] = {}
    stack = [(0, n)]
    while stack:
        lo, hi = stack.pop()
        try:
            parts.append((lo, list(run(lo, hi))))
        except Exception as exc:  # noqa: BLE001 - the user's function or the model: isolated, reported by the caller
            if max_failed is not None and int(failed.sum()) + 1 > max_failed:
                for a, b in [(lo, hi), *stack]:  # enough: the rest fails with this error, unsearched
                    failed[a:b] = True
                    errors.update(dict.fromkeys(range(a, b), exc))
                stack.clear()
            elif hi - lo <= 1:
                failed[lo:hi] = True
                errors[lo] = exc
            else:
                mid = (lo + hi) // 2
                stack += [(mid, hi), (lo, mid)]
    if not parts:
        return None, failed, errors
    parts.sort(key=lambda p: p[0])
    if len(parts) == 1 and not failed.any():
        return parts[0][1], failed, errors
    outputs = []
    for k, like in enumerate(parts[0][1]):
        full = _zeros_like_rows(like, n)
        for lo, arrays in parts:
            full[lo : lo + len(arrays[k])] = arrays[k]
        outputs.append(full)
    return outputs, failed, errors


def _zeros_like_rows(like: Any, n: int) -> Any:
    """Zeros of ``n`` rows with the trailing shape, dtype and array namespace (numpy or cupy) of ``like``."""
    import sys

    cupy = sys.modules.get("cupy")
    xp: Any = cupy if cupy is not None and isinstance(like, cupy.ndarray) else np
    return xp.zeros((n, *like.shape[1:]), dtype=like.dtype)


class PreprocessFailed(UserError, ValueError):
    """A tensor column's preprocessing function raised on some rows (``rows``, a bool mask); each of those rows
    carries the reason ``<column>:preprocess``."""

    docs = "tutorials/image-model.md#2-the-preprocess-function"

    def __init__(self, plan: TensorPlan, rows: np.ndarray, error: BaseException | None) -> None:
        cause = f"{type(error).__name__}: {error}" if error is not None else "an error"
        super().__init__(
            f"preprocess {plan.preprocess_path!r} of tensor column {plan.name!r} raised on {int(rows.sum())} of "
            f"{len(rows)} rows (first: {cause}); those rows get the reason {plan.reason[PREPROCESS]!r}: fix the "
            "function (it must take any valid row) or the rows"
        )
        self.reason = plan.reason[PREPROCESS]
        self.rows = rows


class RaggedTensors(UserError, ValueError):
    """Rows of a tensor column with different shapes cannot form one batch (see ``Contract.shape_groups``)."""

    docs = "tutorials/text-model.md#rows-of-different-lengths"

    def __init__(self, column: str, shapes: set[tuple[int, ...]]) -> None:
        super().__init__(
            f"tensor column {column!r}: its rows have {len(shapes)} different shapes {sorted(shapes)[:4]}; one batch "
            "needs one shape: pad them to one length (with a mask input), or score them in groups of one shape"
        )
        self.column = column
