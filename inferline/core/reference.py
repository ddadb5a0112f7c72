"""Reference profiles: what a training run records of its data so that the monitor can test serving windows
against it. Shared statistics: ``training.profile`` fits them, ``monitor.drift`` tests against them, and a profile
on disk (``reference_profile.json``) is read by both, so they live here, below every stage.

* :class:`NumericReference`: quantile bin edges, the counts in those bins and a uniform sample (for KS);
* :class:`CategoricalReference`: the count of every canonical label (:func:`label`);
* :class:`MissingReference`: the nulls among a raw input column's training rows.

Each is small, JSON-serialisable (``as_dict``/``from_dict``) and mergeable across shards.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "NULL",
    "CategoricalReference",
    "MissingReference",
    "NumericReference",
    "bin_counts",
    "finite_or_inf",
    "label",
    "labels_counter",
]

NULL = "<null>"
"""Categorical label that ``None`` and NaN values are counted under."""


ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def finite_or_inf(values: ArrayLike) -> FloatArray:
    """``values`` as a flat float64 array with NaN dropped (infinities are kept)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[~np.isnan(arr)]


def label(value: object) -> str:
    """A value's category label, canonical across numeric types: ``1``, ``1.0``, ``np.int64(1)`` and
    ``np.float32(1.0)`` are all ``"1"`` (a reference of ints against a window of the same values as floats is not
    drift); booleans stay ``"True"``/``"False"``; NaN and None are :data:`NULL`."""
    if value is None:
        return NULL
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return NULL
        if number.is_integer():
            return str(int(number))
        return repr(number)
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def labels_counter(values: Sequence[Any] | npt.NDArray[Any]) -> Counter[str]:
    """Label counts of ``values``: ``None``/NaN under :data:`NULL`, everything else as ``str(value)``.

    Raw values are counted first (pandas' hash table) and only the distinct ones are turned into labels."""
    raw = pd.Series(np.asarray(values, dtype=object).ravel()).value_counts(dropna=False, sort=False)
    labels: Counter[str] = Counter()
    for value, count in raw.items():
        labels[label(value)] += int(count)
    return labels


@dataclass
class NumericReference:
    """Reference profile of one numeric column.

    ``edges`` are the interior bin edges: the unique values of the reference quantiles at
    ``linspace(0, 1, bins + 1)[1:-1]`` (numpy's default linear quantiles over the finite values). ``counts`` has
    ``len(edges) + 1`` entries for the bins ``(-inf, e0], (e0, e1], ..., (e_last, +inf)`` (see :func:`bin_counts`).
    ``sample`` is a sorted uniform random sample (without replacement) of the non-NaN reference values, at most
    ``sample_size`` long, and ``rows`` the number of non-NaN values summarised.
    """

    edges: list[float]
    counts: list[int]
    sample: list[float]
    rows: int
    nulls: int | None = None  # NaN/None values seen beside ``rows`` (None: a profile made before they were counted)

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(f"counts needs len(edges) + 1 = {len(self.edges) + 1} entries, got {len(self.counts)}")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError(f"edges must be strictly increasing, got {self.edges}")
        if sum(self.counts) != self.rows:
            raise ValueError(f"counts sum to {sum(self.counts)} but rows is {self.rows}")
        if len(self.sample) > self.rows:
            raise ValueError(f"sample has {len(self.sample)} values but only {self.rows} rows were summarised")

    @classmethod
    def from_values(
        cls, values: ArrayLike, bins: int = 20, sample_size: int = 10_000, seed: int = 0
    ) -> NumericReference:
        """Profile ``values`` (NaN dropped): quantile edges, bin counts and a random sample for KS."""
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        if sample_size < 1:
            raise ValueError(f"sample_size must be >= 1, got {sample_size}")
        everything = np.asarray(values, dtype=np.float64).ravel()
        arr = everything[~np.isnan(everything)]
        finite = arr[np.isfinite(arr)]
        if finite.size and bins > 1:
            quantiles = np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1])
            edges = np.unique(quantiles)
        else:
            edges = np.empty(0, dtype=np.float64)
        counts = bin_counts(arr, edges)
        if arr.size > sample_size:
            rng = np.random.default_rng(seed)
            sample = np.sort(arr[rng.choice(arr.size, size=sample_size, replace=False)])
        else:
            sample = np.sort(arr)
        return cls(
            edges=[float(e) for e in edges],
            counts=[int(c) for c in counts],
            sample=[float(s) for s in sample],
            rows=int(arr.size),
            nulls=int(everything.size - arr.size),
        )

    def merge(self, other: NumericReference, seed: int = 0) -> NumericReference:
        """Combine two profiles built with the same edges (e.g. per shard, then ``edges`` from a first pass).

        Counts and rows add. The merged sample has ``s`` values, ``round(s * rows_self / rows_total)`` drawn
        without replacement from this sample and the rest from ``other``'s, with ``s`` the largest size not above
        ``max(len(self.sample), len(other.sample))`` for which both sides hold enough values; the draw is
        deterministic for a given ``seed``.
        """
        if self.edges != other.edges:
            raise ValueError(f"cannot merge references with different edges: {self.edges} vs {other.edges}")
        rows = self.rows + other.rows
        target = max(len(self.sample), len(other.sample))
        sides = [(self.sample, self.rows), (other.sample, other.rows)]
        if rows > 0:
            for side_sample, side_rows in sides:
                if side_rows > 0:
                    target = min(target, math.floor(len(side_sample) * rows / side_rows))
        else:
            target = 0
        take_self = min(round(target * self.rows / rows), len(self.sample)) if rows else 0
        take_other = min(target - take_self, len(other.sample))
        rng = np.random.default_rng(seed)
        parts: list[FloatArray] = []
        for (side_sample, _), take in zip(sides, (take_self, take_other), strict=True):
            arr = np.asarray(side_sample, dtype=np.float64)
            parts.append(arr[rng.choice(arr.size, size=take, replace=False)] if take else arr[:0])
        sample = np.sort(np.concatenate(parts))
        return NumericReference(
            edges=list(self.edges),
            counts=[a + b for a, b in zip(self.counts, other.counts, strict=True)],
            sample=[float(s) for s in sample],
            rows=rows,
            nulls=None if self.nulls is None or other.nulls is None else self.nulls + other.nulls,
        )

    def as_dict(self) -> dict[str, Any]:
        d = {"edges": list(self.edges), "counts": list(self.counts), "sample": list(self.sample), "rows": self.rows}
        return d if self.nulls is None else {**d, "nulls": self.nulls}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NumericReference:
        return cls(
            edges=[float(e) for e in d["edges"]],
            counts=[int(c) for c in d["counts"]],
            sample=[float(s) for s in d["sample"]],
            rows=int(d["rows"]),
            nulls=int(d["nulls"]) if d.get("nulls") is not None else None,
        )


@dataclass
class CategoricalReference:
    """Reference profile of one categorical column: label -> count, over ``rows`` values (nulls included)."""

    counts: dict[str, int]
    rows: int

    def __post_init__(self) -> None:
        if any(c < 0 for c in self.counts.values()):
            raise ValueError("category counts must be non-negative")
        if sum(self.counts.values()) != self.rows:
            raise ValueError(f"counts sum to {sum(self.counts.values())} but rows is {self.rows}")

    @classmethod
    def from_values(cls, values: Sequence[Any] | npt.NDArray[Any]) -> CategoricalReference:
        """Count labels: ``None`` and NaN under :data:`NULL`, any other value as ``str(value)``."""
        labels = labels_counter(values)
        return cls(counts=dict(sorted(labels.items())), rows=int(sum(labels.values())))

    def merge(self, other: CategoricalReference) -> CategoricalReference:
        """Counts add over the union of labels; rows add."""
        counts = Counter(self.counts)
        counts.update(other.counts)
        return CategoricalReference(counts=dict(sorted(counts.items())), rows=self.rows + other.rows)

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "rows": self.rows}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CategoricalReference:
        return cls(counts={str(k): int(v) for k, v in d["counts"].items()}, rows=int(d["rows"]))


def bin_counts(values: ArrayLike, edges: Sequence[float] | npt.NDArray[np.float64]) -> IntArray:
    """Counts of ``values`` in the ``len(edges) + 1`` bins defined by the sorted interior ``edges``.

    Bin ``i`` holds ``edges[i-1] < v <= edges[i]`` (bin 0 is ``(-inf, edges[0]]``, the last ``(edges[-1], +inf)``),
    i.e. ``np.searchsorted(edges, v, side='left')``: a value exactly on an edge goes to the bin on its left.
    NaN values are dropped, so the counts sum to the number of non-NaN values; +-inf go to the outer bins.
    """
    arr = finite_or_inf(values)
    e = np.asarray(edges, dtype=np.float64)
    if e.size > 64:
        idx = np.searchsorted(e, arr, side="left")
        return np.bincount(idx, minlength=e.size + 1).astype(np.int64)
    # few edges (the profile's 20 quantile bins): one vectorized comparison per edge is several times faster than
    # locating each value, and gives the same counts (#(v <= e_i) differenced)
    at_or_below = np.array([np.count_nonzero(arr <= edge) for edge in e], dtype=np.int64)
    return np.diff(np.concatenate([[0], at_or_below, [arr.size]])).astype(np.int64)


@dataclass(frozen=True)
class MissingReference:
    """Nulls among the ``rows`` training rows of one raw input column (an empty text is a null, as on the wire)."""

    rows: int
    nulls: int

    def as_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "nulls": self.nulls}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MissingReference:
        return cls(rows=int(d["rows"]), nulls=int(d["nulls"]))
