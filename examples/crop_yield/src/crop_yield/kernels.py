"""A feature kernel of the package's own, named in the spec by import path ("crop_yield.kernels:SQRT").

numpy only (no torch): wherever rows are validated and featurized (the server's Python stubs, Dask workers) this
module is imported, so it is kept light. A kernel has two lowerings that must agree (``inferline check`` tests it):
``scalar`` for one value and ``vector`` for a column, where ``xp`` is numpy (or cupy)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from inferline.features.kernels import Kernel


def _sqrt_scalar(v: Any, p: Mapping[str, Any]) -> float:
    return 0.0 if v is None or v != v or v <= 0 else math.sqrt(v)


def _sqrt_vector(xp: Any, v: Any, p: Mapping[str, Any]) -> Any:
    v = xp.asarray(v, dtype="float64")
    return xp.sqrt(xp.maximum(xp.where(xp.isnan(v), 0.0, v), 0.0))


SQRT = Kernel(
    "sqrt",
    frozenset({"numeric", "integer"}),
    "numeric",
    _sqrt_scalar,
    _sqrt_vector,
    "sqrt(max(x, 0)): diminishing returns (missing or negative: 0)",
)
