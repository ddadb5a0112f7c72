"""The monitor's sliding windows: latency histograms per time slice (merged over the latency window for percentiles,
kept cumulatively for the exported Prometheus histogram) and the most recent accepted rows of each release (what
drift and the performance estimate read).

Latency is kept in mergeable log-bucket histograms (``core.sketch.LogHistogram``), so a window is the merge of its
slices and the exported histogram's buckets are exact cumulative counts of the sketch (:data:`LATENCY_BUCKETS`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferline.core.sketch import LogHistogram, histogram_quantile

__all__ = [
    "LATENCY_BUCKETS",
    "LATENCY_BUCKET_ERROR",
    "QUANTILES",
    "Chunk",
    "ReleaseWindow",
    "SlicedHistograms",
    "latency_summary",
]

QUANTILES = (0.5, 0.95, 0.99)
# The exported histogram's ``le`` bounds: every 4th boundary of the latency sketch between 100 us and 2 min, so the
# cumulative counts at them are exact (``LogHistogram.cumulative_counts``) and consecutive bounds differ by a factor
# of gamma**4 = 1.0833. PromQL's ``histogram_quantile`` over them, for one monitor or summed over many, is within
# LATENCY_BUCKET_ERROR (8.3 %) relative error of the exact quantile of the requests.
LATENCY_BUCKETS: tuple[float, ...] = tuple(float(b) for b in LogHistogram().boundaries[::4] if 1e-4 <= b <= 120.0)
LATENCY_BUCKET_ERROR = LATENCY_BUCKETS[1] / LATENCY_BUCKETS[0] - 1.0


class SlicedHistograms:
    """Latency histograms per key, one per time slice inside the window, plus a cumulative one per key."""

    def __init__(self, window_s: float, slice_s: float) -> None:
        self.window_s, self.slice_s = window_s, slice_s
        self.slices: dict[tuple[str, ...], deque[tuple[float, LogHistogram]]] = {}
        self.total: dict[tuple[str, ...], LogHistogram] = {}

    def add(self, key: tuple[str, ...], seconds: Iterable[float], now: float) -> None:
        values = np.asarray(list(seconds), dtype=np.float64)
        if values.size == 0:
            return
        q = self.slices.setdefault(key, deque())
        start = now - now % self.slice_s
        if not q or q[-1][0] != start:
            q.append((start, LogHistogram()))
        q[-1][1].add_many(values)
        self.total.setdefault(key, LogHistogram()).add_many(values)

    def window(self, now: float) -> dict[tuple[str, ...], LogHistogram]:
        out = {}
        for key, q in self.slices.items():
            while q and q[0][0] + self.slice_s <= now - self.window_s:  # slices wholly before the window
                q.popleft()
            if q:
                merged = LogHistogram()
                for _, h in q:
                    merged += h
                out[key] = merged
        return out


def latency_summary(h: LogHistogram) -> dict[str, Any]:
    """A window's count and percentiles twice: ``p50``.. from the sketch (within its 1 %), and under
    ``histogram`` the figures PromQL's ``histogram_quantile`` gives from the exported buckets (within
    LATENCY_BUCKET_ERROR), which the alert rules read so that they agree with their Prometheus twins."""
    cumulative = [*h.cumulative_counts(LATENCY_BUCKETS), h.count]
    return {
        "count": h.count,
        **{f"p{round(q * 100)}": h.quantile(q) for q in QUANTILES},
        "histogram": {f"p{round(q * 100)}": histogram_quantile(q, LATENCY_BUCKETS, cumulative) for q in QUANTILES},
    }


@dataclass(frozen=True)
class Chunk:
    """Accepted rows of one payload: standardized numeric features [n, k], category labels [n, j], output values
    [n, m] (class probabilities, or the regression's prediction) and the predicted class [n] (-1 for regression)."""

    numeric: np.ndarray
    categorical: np.ndarray
    values: np.ndarray
    predicted: np.ndarray

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def tail(self, rows: int) -> Chunk:
        cut = len(self) - rows
        return Chunk(self.numeric[cut:], self.categorical[cut:], self.values[cut:], self.predicted[cut:])


@dataclass
class ReleaseWindow:
    """The most recent accepted rows of one release, at most ``limit``."""

    chunks: deque[Chunk] = field(default_factory=deque)
    rows: int = 0
    last_seen: float = 0.0
    # every row received (accepted or refused): (rows, nulls per missing column), the most recent ~limit rows
    received: deque[tuple[int, np.ndarray]] = field(default_factory=deque)
    received_rows: int = 0
    _joined: Chunk | None = None  # the chunks concatenated, kept until the next add (drift and the estimate share it)

    def add_received(self, rows: int, nulls: np.ndarray, limit: int) -> None:
        self.received.append((rows, nulls))
        self.received_rows += rows
        while self.received and self.received_rows - self.received[0][0] >= limit:
            self.received_rows -= self.received.popleft()[0]

    def nulls(self) -> tuple[np.ndarray | None, int]:
        """Nulls per missing column over the received rows, and those rows."""
        if not self.received:
            return None, 0
        return np.sum([n for _, n in self.received], axis=0), self.received_rows

    def add(self, chunk: Chunk, limit: int, now: float) -> None:
        self._joined = None
        self.chunks.append(chunk)
        self.rows += len(chunk)
        self.last_seen = now
        while self.rows - len(self.chunks[0]) >= limit:
            self.rows -= len(self.chunks.popleft())
        if self.rows > limit:  # trim the oldest chunk to the limit exactly
            self.chunks[0] = self.chunks[0].tail(len(self.chunks[0]) - (self.rows - limit))
            self.rows = limit

    def concatenated(self) -> Chunk:
        """The window's rows as one chunk, built once per change of the window; its arrays are read-only (every
        caller shares them)."""
        if self._joined is None:
            parts = list(self.chunks)
            arrays = [
                np.concatenate([getattr(c, name) for c in parts])
                for name in ("numeric", "categorical", "values", "predicted")
            ]
            for a in arrays:
                a.setflags(write=False)
            self._joined = Chunk(*arrays)
        return self._joined
