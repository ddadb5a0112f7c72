"""The one place where the compute backend is chosen: pandas + numpy on CPU, cuDF + cupy on an NVIDIA GPU.

A ``FrameBackend`` names the dataframe library a stage loads data into and its array namespace ``xp``; the compiled
contract (``features.contract``) runs its kernels on whatever namespace the frame lives in. GPU libraries are
imported lazily, on first use of the cuDF backend, never at module import.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from functools import cache
from types import ModuleType
from typing import Any, Literal

import numpy as np
import pandas as pd

from inferline.core.errors import UserError

__all__ = [
    "BackendName",
    "BackendUnavailable",
    "CudfBackend",
    "FrameBackend",
    "array_namespace",
    "backend_for",
    "get_backend",
]

BackendName = Literal["auto", "pandas", "cudf"]


class BackendUnavailable(UserError, RuntimeError):
    """The requested backend's libraries or device are missing."""

    docs = "explanation/scaling-and-gpu.md#gpu"


class FrameBackend:
    """pandas + numpy (CPU). Subclasses override only what is spelled differently."""

    name = "pandas"

    @property
    def xp(self) -> ModuleType:
        return np

    def from_pandas(self, frame: pd.DataFrame) -> Any:
        return frame

    def to_numpy(self, array: Any) -> np.ndarray:
        return np.asarray(array)


class CudfBackend(FrameBackend):
    """cuDF + cupy (NVIDIA GPU). Same methods, same results, device arrays."""

    name = "cudf"

    def __init__(self) -> None:
        try:
            import cudf
            import cupy
        except ImportError as exc:  # pragma: no cover - exercised on GPU machines
            raise BackendUnavailable(
                "backend 'cudf' needs cudf and cupy, which are not installed; "
                "install the GPU extra (pip install 'inferline[gpu]') on a machine with an NVIDIA GPU, "
                "or use --backend pandas"
            ) from exc
        self._cudf = cudf
        self._cupy = cupy

    @property
    def xp(self) -> ModuleType:
        return self._cupy

    def from_pandas(self, frame: pd.DataFrame) -> Any:
        return self._cudf.from_pandas(frame)

    def to_numpy(self, array: Any) -> np.ndarray:
        return self._cupy.asnumpy(array)


def gpu_available() -> bool:
    """True when cuDF is installed and a CUDA device answers. Cheap and safe on CPU-only machines."""
    if importlib.util.find_spec("cudf") is None or importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # noqa: BLE001 - any CUDA failure means "no usable GPU"
        return False


@cache
def get_backend(name: BackendName = "auto") -> FrameBackend:
    """``pandas`` (CPU), ``cudf`` (GPU) or ``auto`` (cudf when a GPU and cuDF are present, else pandas)."""
    if name == "auto":
        name = "cudf" if gpu_available() else "pandas"
    if name == "pandas":
        return FrameBackend()
    if name == "cudf":
        return CudfBackend()
    raise ValueError(f"unknown backend {name!r}; expected one of 'auto', 'pandas', 'cudf'")


def backend_for(frame: Any) -> FrameBackend:
    """The backend that owns ``frame``, by its type (no GPU import needed to ask)."""
    return get_backend("cudf" if type(frame).__module__.startswith("cudf") else "pandas")


def array_namespace(obj: Any) -> ModuleType:
    """The array namespace of a frame or of a mapping of columns: cupy for a cuDF frame or cupy arrays, numpy
    otherwise (asked by type, so no GPU library is imported to answer on a CPU machine)."""
    if type(obj).__module__.startswith("cudf"):
        return get_backend("cudf").xp
    if isinstance(obj, Mapping):
        for v in obj.values():
            if type(v).__module__.startswith("cupy"):
                import cupy

                return cupy  # type: ignore[no-any-return,unused-ignore]
    return np
