"""What a load generator of ``inferline.serving.load`` reports for one step (``LoadOutcome``), whichever
generator ran it (``load.wrk`` or ``load.aio``), and the prepared HTTP request both send (``HttpBody``). Kept apart
from the generators so that payloads, steps and either generator share these types without importing each other.

Error kinds, the same for both generators: ``connect`` (refused or unreachable), ``read`` (the connection closed or
reset before the answer), ``write``, ``timeout`` (no answer within the request timeout), ``http_<status>`` (an
answer outside 2xx), ``grpc_<STATUS>`` (a gRPC status other than OK, those above aside), ``dropped`` (open loop: the
in-flight cap was reached) and ``other_<ExceptionType>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from inferline.core.errors import UserError

__all__ = ["PERCENTILES", "Arrivals", "HttpBody", "LoadOutcome", "Mode", "WrkMissing", "latency_summary"]

Mode = Literal["concurrency", "rate"]
Arrivals = Literal["poisson", "uniform"]
PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9))


class WrkMissing(UserError, RuntimeError):
    """``wrk`` was asked for and is not installed: a user's error that names the install and the alternative."""

    docs = "reference/cli.md#inferline-bench-run"


@dataclass(frozen=True)
class HttpBody:
    """One prepared HTTP request: the body, and the length of its JSON header when tensors follow it in binary
    (``Inference-Header-Content-Length``; None for an all-JSON body)."""

    body: bytes
    json_length: int | None

    def headers(self) -> dict[str, str]:
        if self.json_length is None:
            return {"Content-Type": "application/json"}
        return {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(self.json_length)}


@dataclass
class LoadOutcome:
    generator: str  # "wrk" or "asyncio"
    mode: Mode
    sent: int  # requests that left the generator
    ok: int  # answered with 2xx (HTTP) or OK (gRPC)
    errors: dict[str, int]  # kind -> count (see the module docstring)
    wall_s: float  # from the first request to the last answer
    latency_ms: dict[str, float]  # p50, p95, p99, p99.9, mean, max of the answered requests
    cpu_s: float  # the generator's CPU time (user + system) over the step
    scheduled: int | None = None  # open loop: arrivals drawn for the step
    schedule_lag_p99_ms: float | None = None  # open loop: how late (p99) requests left against their due time
    notes: list[str] = field(default_factory=list)

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def unanswered(self) -> int:
        """Sent, neither answered nor failed within the step: in flight when wrk stopped (the asyncio generator
        waits for every request it sent, so 0 there)."""
        failed = sum(n for kind, n in self.errors.items() if kind != "dropped")  # a dropped arrival was not sent
        return self.sent - self.ok - failed


def latency_summary(latencies_s: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p95/p99/p99.9, mean and max in milliseconds (NaN for each when nothing was answered)."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        return {**{name: float("nan") for name, _ in PERCENTILES}, "mean": float("nan"), "max": float("nan")}
    out = {name: float(np.percentile(ms, q)) for name, q in PERCENTILES}
    return {**out, "mean": float(ms.mean()), "max": float(ms.max())}
