"""The one place where the compute backend is chosen.

Kernels are written once against a ``FrameBackend``: its ``xp`` is the array namespace (numpy or cupy) and its
methods are the few dataframe operations whose spelling differs between pandas and cuDF. GPU libraries are imported
lazily, on first use of the cuDF backend, never at module import.
"""

from __future__ import annotations

import importlib.util
from functools import cache, lru_cache
from types import ModuleType
from typing import Any, Literal

import numpy as np
import pandas as pd

from inferline.features.errors import UserError

__all__ = [
    "BackendName",
    "BackendUnavailable",
    "Columns",
    "CudfBackend",
    "FrameBackend",
    "NumpyBackend",
    "backend_for",
    "get_backend",
]

BackendName = Literal["auto", "pandas", "cudf", "numpy"]


class BackendUnavailable(UserError, RuntimeError):
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


class Columns(dict[str, np.ndarray]):
    """Request-sized data as plain numpy columns: strings as object arrays (None for null), timestamps as
    ``datetime64[ns]`` in UTC (NaT for null), numbers as float64/int64. No per-call dataframe overhead."""

    def __len__(self) -> int:
        return len(next(iter(self.values()))) if dict.__len__(self) else 0

    @property
    def n_columns(self) -> int:
        return dict.__len__(self)


_NS_PER_DAY = 86_400 * 10**9


@lru_cache(maxsize=256)
def _lookup(vocabulary: tuple[str, ...]) -> dict[str, int]:
    return {v: i + 1 for i, v in enumerate(vocabulary)}


class NumpyBackend(FrameBackend):
    """numpy on ``Columns`` (CPU): the serving path, where a call holds a few rows and pandas' fixed cost per
    operation would dominate. Same methods, same results as the pandas backend."""

    name = "numpy"

    def from_pandas(self, frame: pd.DataFrame) -> Columns:
        out = Columns()
        for name in frame.columns:
            s = frame[name]
            if isinstance(s.dtype, pd.DatetimeTZDtype):
                out[name] = s.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
            elif s.dtype.kind in "fiub":
                out[name] = s.to_numpy()
            else:
                values = s.to_numpy(dtype=object)
                values[s.isna().to_numpy(dtype=bool)] = None
                out[name] = values
        return out

    def values(self, series: Any, dtype: str, fill: float = 0.0) -> Any:
        v = np.asarray(series, dtype="float64")
        return np.where(np.isnan(v), fill, v).astype(dtype, copy=False)

    def _epoch_ns(self, series: Any) -> tuple[np.ndarray, np.ndarray]:
        arr = np.asarray(series, dtype="datetime64[ns]")
        return arr.view("int64"), np.isnat(arr)

    def hour_of_day(self, series: Any) -> Any:
        ns, nat = self._epoch_ns(series)
        seconds = (ns // 10**9) % 86_400
        return np.where(nat, 0.0, seconds / 3600.0)

    def weekday(self, series: Any) -> Any:
        ns, nat = self._epoch_ns(series)
        return np.where(nat, 0.0, ((ns // _NS_PER_DAY + 3) % 7).astype("float64"))  # 1970-01-01 was a Thursday

    def str_len(self, series: Any) -> Any:
        return np.fromiter((0 if v is None else len(v) for v in series), dtype="float64", count=len(series))

    def non_ascii_count(self, series: Any) -> Any:
        return np.fromiter(
            (0 if v is None else len(v) - len(v.encode("ascii", "ignore")) for v in series),
            dtype="float64",
            count=len(series),
        )

    def vocabulary_codes(self, series: Any, vocabulary: list[str]) -> Any:
        table = _lookup(tuple(vocabulary))
        return np.fromiter((table.get(v, 0) for v in series), dtype="int64", count=len(series))


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
    if name == "numpy":
        return NumpyBackend()
    raise ValueError(f"unknown backend {name!r}; expected one of 'auto', 'pandas', 'cudf', 'numpy'")


def backend_for(frame: Any) -> FrameBackend:
    """The backend that owns ``frame``, by its type (no GPU import needed to ask)."""
    if isinstance(frame, Columns):
        return get_backend("numpy")
    return get_backend("cudf" if type(frame).__module__.startswith("cudf") else "pandas")
