"""The one place where the compute backend is chosen.

Kernels are written once against a ``FrameBackend``: its ``xp`` is the array namespace (numpy or cupy) and its
methods are the few dataframe operations whose spelling differs between pandas and cuDF. GPU libraries are imported
lazily, on first use of the cuDF backend, never at module import.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from types import ModuleType
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = ["BackendName", "BackendUnavailable", "CudfBackend", "FrameBackend", "backend_for", "get_backend"]

BackendName = Literal["auto", "pandas", "cudf"]


class BackendUnavailable(RuntimeError):
    """The requested backend's libraries or device are missing."""


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

    def values(self, series: Any, dtype: str, fill: float = 0.0) -> Any:
        """The column as an ``xp`` array of ``dtype`` with nulls replaced by ``fill``."""
        return series.astype("float64").fillna(fill).to_numpy(dtype=dtype)

    def hour_of_day(self, series: Any) -> Any:
        """Fractional hour in UTC (0 <= h < 24) of a tz-aware UTC timestamp column."""
        dt = series.dt
        return (
            self.values(dt.hour, "float64")
            + self.values(dt.minute, "float64") / 60.0
            + self.values(dt.second, "float64") / 3600.0
        )

    def weekday(self, series: Any) -> Any:
        return self.values(series.dt.weekday, "float64")

    def str_len(self, series: Any) -> Any:
        return self.values(series.str.len(), "float64")

    def non_ascii_count(self, series: Any) -> Any:
        return self.values(series.str.count(r"[^\x00-\x7f]"), "float64")

    def vocabulary_codes(self, series: Any, vocabulary: list[str]) -> Any:
        """Index into ``vocabulary`` shifted by one: 0 is the unknown/null bucket."""
        codes = pd.Categorical(series, categories=vocabulary).codes
        return codes.astype("int64") + 1


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

    def values(self, series: Any, dtype: str, fill: float = 0.0) -> Any:
        return series.astype("float64").fillna(fill).to_cupy().astype(dtype)

    def vocabulary_codes(self, series: Any, vocabulary: list[str]) -> Any:
        cat = series.astype(self._cudf.CategoricalDtype(categories=vocabulary))
        return cat.cat.codes.astype("int64").fillna(-1).to_cupy() + 1


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
    """The backend that owns ``frame``, by its type's module (no GPU import needed to ask)."""
    return get_backend("cudf" if type(frame).__module__.startswith("cudf") else "pandas")
