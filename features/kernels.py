"""Feature kernels: one definition each, with a scalar and a vector form, used by training, serving and batch.

A kernel maps one raw column, in its canonical form, to one feature column:

- ``scalar(value, params)``: one value (``None`` for null) -> a number, for the per-row request path;
- ``vector(xp, values, params)``: an array -> an array, over the array namespace ``xp`` (numpy on CPU, cupy on an
  NVIDIA GPU) for numbers and timestamps; text kernels run over host object arrays and hand their result to ``xp``.

Canonical forms (the same as the rules see, see ``features.rules``): numbers as float64 (NaN for null), timestamps
as int64 nanoseconds since the epoch in UTC (``NAT`` for null), text as an object array of ``str`` (``None`` for
null). Fitted values (vocabularies) come from ``FeatureState`` and are bound when the contract is compiled, never
taken from the data being scored. The contract checks (``features.checks``, ``inferline check``) prove that the two
forms agree on every kernel, and ``make gpu-check`` that cupy agrees with numpy where a GPU is lent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any, Literal

import numpy as np

__all__ = ["KERNELS", "NAT", "Kernel", "resolve_kernel"]

TWO_PI = 2.0 * math.pi
NAT = int(np.iinfo(np.int64).min)  # datetime64's NaT, as int64
NS_PER_S = 10**9
NS_PER_DAY = 86_400 * NS_PER_S


@dataclass(frozen=True)
class Kernel:
    """A feature kernel: one raw column to one feature, written twice, for one value and for a column.

    - ``name``: its name in the spec snapshot.
    - ``kinds``: the column kinds it reads (``frozenset({"numeric", "integer"})``, ...).
    - ``output``: ``"numeric"`` (a float32 feature) or ``"categorical"`` (an int64 vocabulary index).
    - ``scalar(value, params)``: one value in its canonical form (``None`` for null) to a number.
    - ``vector(xp, values, params)``: an array to an array of the same length, with ``xp`` numpy (or cupy).
    - ``doc``: one line saying what it computes.

    A pipeline's own kernel is a module-level ``Kernel`` named in a ``FeatureDef`` by import path
    (``"crop_yield.kernels:SQRT"``); ``inferline check`` proves its two forms agree.
    """

    name: str
    kinds: frozenset[str]  # the raw column kinds it reads
    output: Literal["numeric", "categorical"]
    scalar: Callable[[Any, Mapping[str, Any]], float | int]
    vector: Callable[[Any, Any, Mapping[str, Any]], Any]
    doc: str


NUMBERS = frozenset({"numeric", "integer"})
TIME = frozenset({"timestamp"})
TEXT = frozenset({"id", "categorical", "text"})


# -- numbers
def _log1p_scalar(v: Any, p: Mapping[str, Any]) -> float:
    if v is None or v != v:
        return 0.0
    return math.log1p(v) if v > 0 else 0.0


def _log1p_vector(xp: Any, v: Any, p: Mapping[str, Any]) -> Any:
    v = xp.asarray(v, dtype="float64")
    return xp.log1p(xp.maximum(xp.where(xp.isnan(v), 0.0, v), 0.0))


def _identity_scalar(v: Any, p: Mapping[str, Any]) -> float:
    return 0.0 if v is None or v != v else float(v)


def _identity_vector(xp: Any, v: Any, p: Mapping[str, Any]) -> Any:
    v = xp.asarray(v, dtype="float64")
    return xp.where(xp.isnan(v), 0.0, v)


# -- timestamps: UTC hour of day and weekday, 0 for null
def _hour_scalar(ns: int | None) -> float:
    return 0.0 if ns is None else ((ns // NS_PER_S) % 86_400) / 3600.0


def _hour_vector(xp: Any, ns: Any) -> Any:
    ns = xp.asarray(ns, dtype="int64")
    return xp.where(ns == NAT, 0.0, ((ns // NS_PER_S) % 86_400) / 3600.0)


def _weekday_scalar(ns: int | None) -> float:
    return 0.0 if ns is None else float((ns // NS_PER_DAY + 3) % 7)  # 1970-01-01 was a Thursday


def _weekday_vector(xp: Any, ns: Any) -> Any:
    ns = xp.asarray(ns, dtype="int64")
    return xp.where(ns == NAT, 0.0, ((ns // NS_PER_DAY + 3) % 7).astype("float64"))


def _cyclic(
    unit: Callable[[int | None], float], vunit: Callable[[Any, Any], Any], period: float, fn: str
) -> tuple[Callable[[Any, Mapping[str, Any]], float], Callable[[Any, Any, Mapping[str, Any]], Any]]:
    m = getattr(math, fn)
    scale = TWO_PI / period

    def scalar(v: Any, p: Mapping[str, Any]) -> float:
        return m(scale * unit(v))

    def vector(xp: Any, v: Any, p: Mapping[str, Any]) -> Any:
        return getattr(xp, fn)(scale * vunit(xp, v))

    return scalar, vector


# -- text (host): lengths, non-ASCII share
def _non_ascii(v: str) -> int:
    return len(v) - len(v.encode("ascii", "ignore"))


def _text_length_scalar(v: Any, p: Mapping[str, Any]) -> float:
    return 0.0 if v is None else math.log1p(len(v))


def _text_length_vector(xp: Any, v: Any, p: Mapping[str, Any]) -> Any:
    n = np.fromiter(map(len, _filled(v)), dtype="float64", count=len(v))
    return xp.asarray(np.log1p(n))


def _filled(v: Any) -> Any:
    """Text values with "" for null (nulls are rare: one scan, a copy only when there is one)."""
    return [x or "" for x in v] if None in v else v


def _non_ascii_scalar(v: Any, p: Mapping[str, Any]) -> float:
    if not v:
        return 0.0
    return _non_ascii(v) / len(v)


def _non_ascii_vector(xp: Any, v: Any, p: Mapping[str, Any]) -> Any:
    filled = _filled(v)
    ascii_only = np.fromiter(map(str.isascii, filled), dtype=bool, count=len(v))
    out = np.zeros(len(v), dtype="float64")
    rows = np.flatnonzero(~ascii_only)  # ASCII text has none: only the others are counted
    out[rows] = [_non_ascii_scalar(filled[i], p) for i in rows.tolist()]
    return xp.asarray(out)


# -- vocabulary: index with 0 as the unknown/null bucket; params["lookup"] is {value: index} bound at compile time
def _vocabulary_scalar(v: Any, p: Mapping[str, Any]) -> int:
    return int(p["lookup"].get(v, 0))


def _vocabulary_vector(xp: Any, v: Any, p: Mapping[str, Any]) -> Any:
    return xp.asarray(np.fromiter(map(p["lookup"].get, v, repeat(0, len(v))), dtype="int64", count=len(v)))


def _kernels() -> dict[str, Kernel]:
    out = {
        "log1p": Kernel("log1p", NUMBERS, "numeric", _log1p_scalar, _log1p_vector, "log(1 + max(x, 0)); 0 for null"),
        "identity": Kernel(
            "identity",
            NUMBERS,
            "numeric",
            _identity_scalar,
            _identity_vector,
            "the value itself, signed (standardized like every numeric feature); 0 for null",
        ),
        "standardize": Kernel(
            "standardize",
            NUMBERS,
            "numeric",
            _identity_scalar,
            _identity_vector,
            "(value - training mean) / training std, signed; 0 for null (a spec refuses it with scale='none')",
        ),
        "text_length": Kernel(
            "text_length", TEXT, "numeric", _text_length_scalar, _text_length_vector, "log1p(characters); 0 for null"
        ),
        "non_ascii_share": Kernel(
            "non_ascii_share",
            TEXT,
            "numeric",
            _non_ascii_scalar,
            _non_ascii_vector,
            "share of characters outside ASCII; 0 for null or empty",
        ),
        "vocabulary": Kernel(
            "vocabulary",
            TEXT,
            "categorical",
            _vocabulary_scalar,
            _vocabulary_vector,
            "index in the fitted vocabulary, 0 for unknown or null",
        ),
    }
    for unit, vunit, period, what in (
        (_hour_scalar, _hour_vector, 24.0, "hour"),
        (_weekday_scalar, _weekday_vector, 7.0, "weekday"),
    ):
        for fn in ("sin", "cos"):
            name = f"cyclic_{what}_{fn}"
            scalar, vector = _cyclic(unit, vunit, period, fn)
            out[name] = Kernel(
                name,
                TIME,
                "numeric",
                scalar,
                vector,
                f"{fn}(2 pi {what} / {period:g}) in UTC; {'0' if fn == 'sin' else '1'} for null (as {what} 0)",
            )
    return out


KERNELS: dict[str, Kernel] = _kernels()


def resolve_kernel(name: str) -> Kernel:
    """A built-in kernel by name, or a pipeline's own ``Kernel`` by import path (``"pkg.mod:my_kernel"``): compiled
    like the built-in ones (its scalar form on the request path, its vector form on batches), and named in every
    release's spec snapshot so that a server imports the same object."""
    if name in KERNELS:
        return KERNELS[name]
    from inferline.features.spec import SpecError

    if ":" not in name:
        raise SpecError(
            f"unknown kernel {name!r}; built-in kernels: {sorted(KERNELS)}, or name a pipeline's own Kernel by import "
            "path ('package.module:name')"
        )
    from inferline.features.imports import import_object

    kernel = import_object(name, "kernel")
    if not isinstance(kernel, Kernel):
        raise SpecError(f"kernel {name!r} is a {type(kernel).__name__}, expected an inferline.features.kernels.Kernel")
    return kernel
