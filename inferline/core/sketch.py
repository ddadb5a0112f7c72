"""A mergeable latency histogram with a relative-error guarantee on its quantiles.

Design
------
:class:`LogHistogram` is DDSketch with a fixed range: log-spaced buckets between ``min_value`` and ``max_value``,
their counts in a fixed-size ``int64`` numpy array, so adding a batch is one ``np.searchsorted`` + ``np.bincount``
and merging two histograms (from two replicas, or two scrape intervals) is array addition. The histogram is exact
about *which bucket* every value fell in, so a merge equals the histogram of the concatenated data bit for bit.

Why not the ``ddsketch`` package (DataDog's DDSketch): measured side by side (``python -m inferline.benchmarks run
--only sketch``, ``benchmarks/results/sketch/``), at the same 1 % relative accuracy over 1,000,000 latencies in 50
slices, this one adds a value in 44 ns against ddsketch's 375 (8.5x: ddsketch adds one value per Python call, this
one a batch per numpy call) and merges the 50 slices in 0.17 ms against 1.5 ms; both keep their quantiles within
the 1 % bound (0.14-0.45 % against 0.04-0.63 % here), in about 4.1-4.8 KB serialized. It also gives the cumulative
counts at fixed bounds that the Prometheus histogram export needs.

Buckets
-------
With ``gamma = (1 + rel_err) / (1 - rel_err)`` and ``K = ceil(log(max_value / min_value) / log(gamma))`` the
boundaries are ``b_i = min_value * gamma**i`` for ``i = 0..K`` (``b_K >= max_value``) and the ``K + 2`` buckets are

* bucket ``0``: ``v <= b_0 = min_value`` (zero and negative values included),
* bucket ``i`` (``1 <= i <= K``): ``b_{i-1} < v <= b_i``,
* bucket ``K + 1`` (overflow): ``v > b_K`` (values above ``max_value``, up to rounding of the top boundary).

A value is located by ``np.searchsorted`` against the stored float boundaries (not by ``ceil(log(v))``, which can
misplace a value within an ulp of a boundary), so the bucket definition above holds exactly.

Quantile guarantee
------------------
``quantile(q)`` targets the order statistic numpy's ``np.quantile(values, q, method='inverted_cdf')`` returns:
``x = x_(k+1)`` (1-based order statistic) with ``k = max(ceil(n*q - 1), 0)``, i.e. the smallest added value whose
empirical CDF is ``>= q``. It finds the bucket holding that rank from the cumulative counts and returns
``2 * lo * hi / (lo + hi)`` for the bucket ``(lo, hi]``, which is within ``(hi - lo) / (hi + lo) = rel_err``
relative error of *every* value in that bucket. Hence:

* if ``min_value < x <= b_K``: ``|quantile(q) - x| <= rel_err * x`` (up to float rounding of the boundaries,
  about 1e-15 relative);
* if ``x <= min_value``: the estimate is ``min_value`` (no relative guarantee; for non-negative values the
  absolute error is at most ``min_value``);
* if ``x > b_K`` (overflow): the estimate is the largest value added, an upper bound of ``x``.

Every estimate is finally clamped to ``[min, max]`` of the added values (tracked exactly, mergeable), which can
only move it closer to ``x`` (``x`` itself lies in that range).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

__all__ = ["LogHistogram", "histogram_quantile"]

_MAX_BUCKETS = 10_000_000


class LogHistogram:
    """Fixed log-spaced buckets with quantiles within ``rel_err`` relative error (see the module docstring).

    Bucket ``i`` covers ``(min_value * gamma**(i-1), min_value * gamma**i]`` with
    ``gamma = (1 + rel_err) / (1 - rel_err)``; values ``<= min_value`` go to bucket 0 and values above the top
    boundary (the first ``min_value * gamma**K >= max_value``) to an overflow bucket. ``quantile(q)`` is within
    ``rel_err`` relative error of ``np.quantile(values, q, method='inverted_cdf')`` whenever that value lies in
    ``(min_value, top boundary]``.
    """

    def __init__(self, rel_err: float = 0.01, min_value: float = 1e-6, max_value: float = 1e3) -> None:
        if not 0.0 < rel_err < 1.0:
            raise ValueError(f"rel_err must be in (0, 1), got {rel_err}")
        if not (math.isfinite(min_value) and math.isfinite(max_value) and 0.0 < min_value < max_value):
            raise ValueError(f"need 0 < min_value < max_value < inf, got {min_value} and {max_value}")
        self._rel_err = float(rel_err)
        self._min_value = float(min_value)
        self._max_value = float(max_value)
        gamma = (1.0 + rel_err) / (1.0 - rel_err)
        k = max(math.ceil(math.log(max_value / min_value) / math.log(gamma)), 1)
        if k > _MAX_BUCKETS:
            raise ValueError(f"rel_err={rel_err} over [{min_value}, {max_value}] needs {k} buckets (> {_MAX_BUCKETS})")
        bounds = min_value * gamma ** np.arange(k + 1, dtype=np.float64)
        while bounds[-1] < max_value:  # guard against rounding in the log above
            k += 1
            bounds = min_value * gamma ** np.arange(k + 1, dtype=np.float64)
        if np.any(np.diff(bounds) <= 0):
            raise ValueError(f"rel_err={rel_err} is too small for float64 boundaries")
        self._bounds: npt.NDArray[np.float64] = bounds
        self._bounds_list: list[float] = bounds.tolist()
        self._counts: npt.NDArray[np.int64] = np.zeros(k + 2, dtype=np.int64)
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf

    # ------------------------------------------------------------------------------------------ properties

    @property
    def rel_err(self) -> float:
        return self._rel_err

    @property
    def min_value(self) -> float:
        return self._min_value

    @property
    def max_value(self) -> float:
        return self._max_value

    @property
    def boundaries(self) -> npt.NDArray[np.float64]:
        """The bucket upper boundaries ``b_0 .. b_K`` (a copy); the overflow bucket's upper bound is +inf."""
        return self._bounds.copy()

    @property
    def bucket_counts(self) -> npt.NDArray[np.int64]:
        """Counts of the ``K + 2`` buckets (a copy): bucket 0, buckets 1..K, overflow."""
        return self._counts.copy()

    @property
    def count(self) -> int:
        """Number of values added."""
        return int(self._counts.sum())

    @property
    def sum(self) -> float:
        """Sum of the values added (float accumulation of the values themselves, not estimated from buckets)."""
        return self._sum

    @property
    def min(self) -> float | None:
        """Smallest value added (exact), None when empty."""
        return self._min if self.count else None

    @property
    def max(self) -> float | None:
        """Largest value added (exact), None when empty."""
        return self._max if self.count else None

    # ------------------------------------------------------------------------------------------ adding

    def add(self, value: float, count: int = 1) -> None:
        """Add ``value`` ``count`` times (``count >= 0``; NaN raises ``ValueError``)."""
        v = float(value)
        if math.isnan(v):
            raise ValueError("cannot add NaN to a LogHistogram")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if count == 0:
            return
        self._counts[bisect.bisect_left(self._bounds_list, v)] += count
        self._sum += v * count
        self._min = min(self._min, v)
        self._max = max(self._max, v)

    def add_many(self, values: npt.ArrayLike) -> None:
        """Add every value of ``values`` (vectorised: ``np.searchsorted`` + ``np.bincount``); NaN raises."""
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size == 0:
            return
        if np.isnan(arr).any():
            raise ValueError("cannot add NaN to a LogHistogram")
        idx = np.searchsorted(self._bounds, arr, side="left")
        self._counts += np.bincount(idx, minlength=self._counts.size).astype(np.int64)
        self._sum += float(arr.sum())
        self._min = min(self._min, float(arr.min()))
        self._max = max(self._max, float(arr.max()))

    # ------------------------------------------------------------------------------------------ merging

    def _check_compatible(self, other: LogHistogram) -> None:
        mine = (self._rel_err, self._min_value, self._max_value)
        theirs = (other._rel_err, other._min_value, other._max_value)
        if mine != theirs:
            raise ValueError(
                f"cannot merge LogHistograms with different (rel_err, min_value, max_value): {mine} vs {theirs}"
            )

    def copy(self) -> LogHistogram:
        new = LogHistogram(self._rel_err, self._min_value, self._max_value)
        new._counts = self._counts.copy()
        new._sum, new._min, new._max = self._sum, self._min, self._max
        return new

    def merge(self, other: LogHistogram) -> LogHistogram:
        """A new histogram holding the values of both (same parameters required, ``ValueError`` otherwise)."""
        self._check_compatible(other)
        merged = self.copy()
        merged += other
        return merged

    def __iadd__(self, other: LogHistogram) -> Self:
        self._check_compatible(other)
        self._counts += other._counts
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        return self

    # ------------------------------------------------------------------------------------------ reading

    def _estimate(self, bucket: int) -> float:
        k = self._bounds.size - 1
        if bucket == 0:
            est = self._min_value
        elif bucket > k:
            est = self._max
        else:
            lo, hi = self._bounds_list[bucket - 1], self._bounds_list[bucket]
            est = 2.0 * lo * hi / (lo + hi)
        return min(max(est, self._min), self._max)

    def quantile(self, q: float) -> float:
        """Estimate of ``np.quantile(values, q, method='inverted_cdf')``, ``q`` in [0, 1] (see the module docstring)."""
        return self._quantiles([q], np.cumsum(self._counts))[0]

    def quantiles(self, qs: Iterable[float]) -> dict[float, float]:
        """``{q: quantile(q)}`` for every ``q`` in ``qs`` (one cumulative pass)."""
        qs = [float(q) for q in qs]
        return dict(zip(qs, self._quantiles(qs, np.cumsum(self._counts)), strict=True))

    def _quantiles(self, qs: Sequence[float], cumulative: npt.NDArray[np.int64]) -> list[float]:
        n = int(cumulative[-1])
        if n == 0:
            raise ValueError("quantile of an empty LogHistogram: no values have been added")
        out = []
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile q must be in [0, 1], got {q}")
            rank = max(math.ceil(n * q - 1.0), 0) + 1  # 1-based rank of numpy's inverted_cdf order statistic
            bucket = int(np.searchsorted(cumulative, rank, side="left"))
            out.append(self._estimate(bucket))
        return out

    def cumulative_counts(self, upper_bounds: Sequence[float]) -> list[int]:
        """Number of values ``<= b`` for each ``b`` (e.g. the ``le`` buckets of a Prometheus histogram).

        Exact when ``b`` is one of :attr:`boundaries` (or +inf, which gives :attr:`count`). Otherwise ``b`` is
        rounded *down* to the largest boundary ``<= b``: the result counts the values ``<=`` that boundary, a lower
        bound that misses at most the values of the one bucket straddling ``b``. A finite ``b`` above the top
        boundary therefore excludes the overflow bucket, and ``b < min_value`` gives 0.
        """
        cumulative = np.cumsum(self._counts)
        out = []
        for b in upper_bounds:
            bound = float(b)
            if math.isnan(bound):
                raise ValueError("upper bound must not be NaN")
            if bound == math.inf:
                out.append(int(cumulative[-1]))
                continue
            j = bisect.bisect_right(self._bounds_list, bound)  # buckets 0..j-1 have upper boundary <= bound
            out.append(int(cumulative[j - 1]) if j else 0)
        return out

    # ------------------------------------------------------------------------------------------ serialising

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form; bucket counts are stored sparsely as ``[index, count]`` pairs."""
        nonzero = np.flatnonzero(self._counts)
        return {
            "rel_err": self._rel_err,
            "min_value": self._min_value,
            "max_value": self._max_value,
            "buckets": [[int(i), int(self._counts[i])] for i in nonzero],
            "sum": self._sum,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LogHistogram:
        hist = cls(float(d["rel_err"]), float(d["min_value"]), float(d["max_value"]))
        for index, count in d["buckets"]:
            if not 0 <= int(index) < hist._counts.size or int(count) < 0:
                raise ValueError(f"bad bucket [{index}, {count}] for {hist._counts.size} buckets")
            hist._counts[int(index)] += int(count)
        hist._sum = float(d["sum"])
        if hist.count:
            if d.get("min") is None or d.get("max") is None:
                raise ValueError("a non-empty LogHistogram dict needs 'min' and 'max'")
            hist._min, hist._max = float(d["min"]), float(d["max"])
        return hist

    def __repr__(self) -> str:
        return (
            f"LogHistogram(rel_err={self._rel_err}, min_value={self._min_value}, max_value={self._max_value}, "
            f"count={self.count})"
        )


def histogram_quantile(q: float, upper_bounds: Sequence[float], cumulative: Sequence[float]) -> float:
    """PromQL's ``histogram_quantile(q, ...)`` over one histogram's ``le`` buckets, in Python: what Prometheus
    computes from the exported series, so an in-process rule reads the same figure as its PromQL twin.

    ``upper_bounds`` are the finite ``le`` bounds in increasing order and ``cumulative`` the counts at each bound
    followed by the ``+Inf`` count. As in Prometheus (``promql/quantile.go``, ``bucketQuantile``): the rank
    ``q * count`` is located in the first bucket whose cumulative count reaches it, and the value is interpolated
    linearly inside that bucket (the first bucket starts at 0); a rank in the ``+Inf`` bucket gives the highest
    finite bound. The exact quantile lies in the same bucket, so the relative error is at most the ratio of
    consecutive bounds minus one. NaN without observations; -inf / +inf for ``q`` < 0 / > 1.
    """
    if len(cumulative) != len(upper_bounds) + 1:
        raise ValueError(
            f"{len(cumulative)} cumulative counts for {len(upper_bounds)} finite bounds; expected one more"
        )
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    counts = np.maximum.accumulate(np.asarray(cumulative, np.float64))  # Prometheus' ensureMonotonic
    total = float(counts[-1])
    if total == 0 or math.isnan(q):
        return math.nan
    rank = q * total
    b = int(np.searchsorted(counts, rank, side="left"))
    if b >= len(upper_bounds):
        return float(upper_bounds[-1])
    end = float(upper_bounds[b])
    if b == 0 and end <= 0:
        return end
    start, count = 0.0, float(counts[b])
    if b > 0:
        start = float(upper_bounds[b - 1])
        count -= float(counts[b - 1])
        rank -= float(counts[b - 1])
    return start + (end - start) * (rank / count)
