"""A pipeline kernel and a preprocessing function a user brings (named by import path from the BYOM test pipelines),
and the test images. numpy only: the server's Python stubs and the Dask workers import this module."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from inferline.features.kernels import Kernel


# ---------------------------------------------------------------------------------------------- a pipeline kernel
def _signed_sqrt_scalar(v: Any, p: Mapping[str, Any]) -> float:
    return 0.0 if v is None or v != v else math.copysign(math.sqrt(abs(v)), v)


def _signed_sqrt_vector(xp: Any, v: Any, p: Mapping[str, Any]) -> Any:
    v = xp.asarray(v, dtype="float64")
    v = xp.where(xp.isnan(v), 0.0, v)
    return xp.sign(v) * xp.sqrt(xp.abs(v))


SIGNED_SQRT = Kernel(
    "signed_sqrt",
    frozenset({"numeric", "integer"}),
    "numeric",
    _signed_sqrt_scalar,
    _signed_sqrt_vector,
    "sign(x) * sqrt(|x|): compresses a signed value's range, keeps its sign",
)


# ---------------------------------------------------------------------------------------------- preprocessing
def scale_pixels(xp: Any, batch: Any) -> Any:
    """uint8 pixels [n, 3, H, W] -> float32 in [-1, 1]."""
    return batch.astype("float32") / 127.5 - 1.0


def images(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 3, size, size] whose class is the brightest channel."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    pixels = rng.integers(0, 160, (n, 3, size, size))
    pixels[np.arange(n), labels] += 90
    return pixels.astype(np.uint8), labels


def scale_pixels_refusing_blank(xp: Any, batch: Any) -> Any:
    """``scale_pixels`` that raises on a batch holding a blank (all-zero) image: a user's function that fails on
    some rows (tests that such a row costs only itself)."""
    if bool((batch.reshape(len(batch), -1).max(axis=1) == 0).any()):
        raise ValueError("blank image: the camera sent nothing")
    return scale_pixels(xp, batch)
