"""Tensor columns: a model input per row that is an array (an image FP32 [3, H, W], token ids INT64 [-1], a feature
vector FP32 [n]), validated and optionally preprocessed by the compiled contract like every other column.

A tensor column declares its Triton datatype and per-row shape (``-1`` for a variable dimension). Its canonical
form is a dense array ``[n, *shape]`` (a request, or a data set whose rows share one shape) or a list of per-row
arrays (``None`` for a null row) when rows come from Parquet. A Parquet file holds a tensor column as a list column:
nested lists that match the shape, or one flat list of ``prod(shape)`` values when the shape is fixed.

Reasons, each ``<column>:<code>``:

- ``null``: the row has no value (a required column);
- ``dtype``: the values are not of the declared datatype and cannot be held by it exactly (text, a fractional
  number in an integer tensor, a value outside the integer type's range);
- ``shape``: the row's shape does not match the declared one (rank, or a fixed dimension);
- the column's rules (``finite``, ``ge``, ``le``, ``between``): the row fails when any of its elements does.

On the request path Triton has checked the datatype and the fixed dimensions of the whole request; the rules run per
row, and a row that fails gets its reason as ``status`` and zeros as its model input, like any other column.
``preprocess`` (``"pkg.mod:fn"``, ``fn(xp, batch) -> batch``) runs over the valid batch, on the array namespace
of the data (numpy, or cupy on a GPU), and its result is cast to ``model_dtype``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inferline.features.errors import UserError
from inferline.features.spec import TENSOR_DTYPES, Column

__all__ = ["TensorPlan", "numpy_dtype"]

DTYPE, SHAPE, NULL = "dtype", "shape", "null"


def numpy_dtype(triton: str) -> np.dtype[Any]:
    return np.dtype(TENSOR_DTYPES[triton])


def _nested(v: Any) -> Any:
    """pyarrow's nested lists come back as object arrays of arrays: turn them into nested Python lists."""
    if isinstance(v, np.ndarray) and v.dtype == object:
        return [_nested(x) for x in v]
    if isinstance(v, list | tuple):
        return [_nested(x) for x in v]
    return v


class TensorPlan:
    """One tensor column, compiled: its per-row checks and its model input."""

    def __init__(self, column: Column) -> None:
        assert column.dtype is not None
        self.name = column.name
        self.required = column.required
        self.shape = tuple(column.shape)
        self.dtype = numpy_dtype(column.dtype)
        self.model_dtype = numpy_dtype(column.input_dtype)
        self.reason = {code: f"{column.name}:{code}" for code in (DTYPE, SHAPE, NULL)}
        self.rules: list[tuple[str, Callable[[Any, Any], Any]]] = [
            (f"{column.name}:{r.name}", r.vector()) for r in column.rules
        ]
        self.preprocess: Callable[[Any, Any], Any] | None = None
        if column.preprocess:
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
            return values.astype(self.dtype, copy=False), {}
        rows: list[np.ndarray | None] = []
        found: dict[str, np.ndarray] = {}
        n = len(values)
        for i, v in enumerate(values):
            a, code = self._row(v)
            rows.append(a)
            if code is not None and (code != NULL or self.required):
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
        """Canonical values (dense) -> the model input: preprocessed, cast, rows in ``bad`` zeroed."""
        if isinstance(values, list):
            raise RaggedTensors(self.name, {a.shape for a in values if a is not None})
        x = xp.asarray(values)
        if bad is not None and bool(bad.any()):
            x = x.copy()
            x[bad] = 0
        if self.preprocess is not None:
            x = self.preprocess(xp, x)
        return x.astype(self.model_dtype, copy=False)

    def neutral(self, n: int, like: tuple[int, ...]) -> np.ndarray:
        return np.zeros((n, *like), dtype=self.model_dtype)


class RaggedTensors(UserError, ValueError):
    """Rows of a tensor column with different shapes cannot form one batch (see ``Contract.shape_groups``)."""

    def __init__(self, column: str, shapes: set[tuple[int, ...]]) -> None:
        super().__init__(
            f"tensor column {column!r}: its rows have {len(shapes)} different shapes {sorted(shapes)[:4]}; one batch "
            "needs one shape: pad them to one length (with a mask input), or score them in groups of one shape"
        )
        self.column = column
