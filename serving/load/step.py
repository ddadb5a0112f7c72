"""One load level against one target, measured: ``Step`` (``concurrency``, closed loop: that many requests in
flight; or ``rate``, open loop: requests per second on a schedule, whatever the answers do), and
``measure_step(target, payloads, step, duration_s)`` -> ``StepResult``: throughput, client latency percentiles,
errors by kind, the load generator's own CPU share, and Triton's per-model split of the step's server time (queue,
compute input, compute infer, compute output) from its statistics before and after the step. ``check_pool`` sends
the pool's first requests once through the typed client, to say which release answers and whether it scores them.

The generator must not be what limits a step. Each is one thread (wrk -t1, or one asyncio loop), so its CPU time
over the step divided by the step's wall time is the share of the one core it can use; above ``LOADGEN_CORE_LIMIT``
(0.7) the step carries a warning that the figures may measure the generator rather than the server. Open-loop
steps also report how late requests left against their schedule (p99; warned above ``SCHEDULE_LAG_LIMIT_MS``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd

from inferline.core.errors import UserError
from inferline.serving.load.aio import run_asyncio
from inferline.serving.load.outcome import Arrivals, LoadOutcome, WrkMissing
from inferline.serving.load.payloads import Payloads
from inferline.serving.load.stats import ModelStep, StatsUnavailable, model_stats, settle, stats_delta
from inferline.serving.load.target import Target
from inferline.serving.load.wrk import run_wrk

__all__ = [
    "LOADGEN_CORE_LIMIT",
    "SCHEDULE_LAG_LIMIT_MS",
    "Loadgen",
    "Step",
    "StepResult",
    "check_pool",
    "measure_step",
    "parse_steps",
]

LOADGEN_CORE_LIMIT = 0.7  # share of its one core above which a step is flagged: the generator may be the limit
SCHEDULE_LAG_LIMIT_MS = 2.0  # open loop: p99 lateness of sends above which a step is flagged
Loadgen = Literal["auto", "wrk", "asyncio"]


@dataclass(frozen=True)
class Step:
    kind: Literal["concurrency", "rate"]
    value: float  # requests in flight, or requests per second

    @property
    def label(self) -> str:
        return f"c={int(self.value)}" if self.kind == "concurrency" else f"rate={self.value:g}/s"


def parse_steps(concurrency: Sequence[int] = (), rates: Sequence[float] = ()) -> list[Step]:
    return [Step("concurrency", int(c)) for c in concurrency] + [Step("rate", float(r)) for r in rates]


@dataclass
class StepResult:
    step: str  # its label: "c=16", "rate=200/s"
    kind: str
    value: float
    generator: str
    duration_s: float  # asked for
    wall_s: float  # measured: first request to last answer
    sent: int
    ok: int
    errors: dict[str, int]
    unanswered: int  # sent, still in flight when the generator stopped (wrk; the asyncio generator waits for all)
    throughput_rps: float  # answered OK per second
    rows_per_s: float
    offered_rps: float | None  # open loop: arrivals drawn / duration
    latency_ms: dict[str, float]  # p50, p95, p99, p99.9, mean, max
    loadgen: dict[str, Any]  # cpu_s, core_share (of its one thread's core), machine_share, schedule_lag_p99_ms
    server: list[dict[str, Any]] | None  # per model version: requests, phases in us per request (None: not measured)
    server_note: str = ""
    outside_triton_ms: float | None = None  # client mean latency minus Triton's mean time per request (served model)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model(self, name: str) -> dict[str, Any] | None:
        return next((m for m in self.server or [] if m["model"] == name), None)


def _generator(target: Target, step: Step, loadgen: Loadgen) -> str:
    wrk_fits = target.protocol == "http" and step.kind == "concurrency" and target.tls_cert is None
    if loadgen == "wrk":
        if not wrk_fits:
            raise UserError(
                f"wrk drives closed-loop HTTP steps only (without client certificates); step {step.label} over "
                f"{target.protocol} needs --loadgen asyncio (or auto)"
            )
        if shutil.which("wrk") is None:
            raise WrkMissing("the load generator `wrk` is not installed: apt-get install wrk, or --loadgen asyncio")
        return "wrk"
    if loadgen == "auto" and wrk_fits and shutil.which("wrk") is not None:
        return "wrk"
    return "asyncio"


def _load(
    target: Target,
    payloads: Payloads,
    step: Step,
    duration_s: float,
    generator: str,
    timeout_s: float,
    arrivals: Arrivals,
    seed: int,
    max_inflight: int,
) -> LoadOutcome:
    if generator == "wrk":
        return run_wrk(
            target.infer_url, payloads.body_file(), int(step.value), duration_s, timeout_s, target.api_key_file
        )
    common: dict[str, Any] = {
        "model": target.model,
        "timeout_s": timeout_s,
        "api_key": target.api_key(),
        "tls": (target.tls_ca, target.tls_cert, target.tls_key),
        "arrivals": arrivals,
        "seed": seed,
        "max_inflight": max_inflight,
    }
    if target.protocol == "http":
        return run_asyncio(
            "http", target.infer_url, (step.kind, step.value), duration_s, http_bodies=payloads.http_bodies(), **common
        )
    return run_asyncio(
        "grpc",
        target.url,
        (step.kind, step.value),
        duration_s,
        grpc_requests=payloads.grpc_requests(),
        outputs=payloads.outputs,
        **common,
    )


def measure_step(
    target: Target,
    payloads: Payloads,
    step: Step,
    duration_s: float,
    *,
    loadgen: Loadgen = "auto",
    timeout_s: float = 10.0,
    arrivals: Arrivals = "poisson",
    seed: int = 0,
    max_inflight: int = 1024,
    loadgen_core_limit: float = LOADGEN_CORE_LIMIT,
) -> StepResult:
    """One load step against ``target``: Triton's counters before, the load, the counters after (once the step's
    requests are counted), and what the step measured. Never raises for what the server does (refused
    connections, timeouts, error answers are counted by kind); raises ``UserError`` for a generator that cannot
    run the step."""
    generator = _generator(target, step, loadgen)
    if generator == "wrk":
        payloads.body_file()  # prepared before the step, not during it
    elif target.protocol == "http":
        payloads.http_bodies()
    else:
        payloads.grpc_requests()
    before, note = None, target.stats_note
    if target.triton_http:
        try:
            before = model_stats(target.triton_http, target.admin_headers)
        except StatsUnavailable as exc:
            note = str(exc)
    outcome = _load(target, payloads, step, duration_s, generator, timeout_s, arrivals, seed, max_inflight)
    server: list[ModelStep] | None = None
    if before is not None and target.triton_http:
        try:
            after = settle(target.triton_http, target.admin_headers, target.model, outcome.sent, before)
            server = stats_delta(before, after)
        except StatsUnavailable as exc:
            note = str(exc)
    return _result(target, payloads, step, duration_s, outcome, server, note, loadgen_core_limit)


def _result(
    target: Target,
    payloads: Payloads,
    step: Step,
    duration_s: float,
    o: LoadOutcome,
    server: list[ModelStep] | None,
    note: str,
    core_limit: float,
) -> StepResult:
    core_share = o.cpu_s / o.wall_s if o.wall_s > 0 else 0.0
    warnings = []
    if core_share > core_limit:
        warnings.append(
            f"the load generator ({o.generator}, one thread) used {core_share:.0%} of a core (limit "
            f"{core_limit:.0%}): it may be what limits this step, not the server"
        )
    if o.schedule_lag_p99_ms is not None and o.schedule_lag_p99_ms > SCHEDULE_LAG_LIMIT_MS:
        warnings.append(
            f"requests left {o.schedule_lag_p99_ms:.1f} ms late (p99) against their schedule (limit "
            f"{SCHEDULE_LAG_LIMIT_MS} ms): the generator could not keep the rate; the lateness is in the latency"
        )
    if o.errors:
        warnings.append(f"{sum(o.errors.values())} failed request(s): {dict(sorted(o.errors.items()))}")
    served = next((m for m in server or [] if m.model == target.model), None)
    if server is not None and target.via == "triton" and served is not None:
        counted = served.requests + served.failed
        if counted != o.sent:
            warnings.append(f"Triton counted {counted} requests of {target.model!r}; the generator sent {o.sent}")
    outside = None
    if served is not None and served.requests and o.ok:
        outside = o.latency_ms["mean"] - served.request_us / 1e3
    return StepResult(
        step=step.label,
        kind=step.kind,
        value=step.value,
        generator=o.generator,
        duration_s=duration_s,
        wall_s=o.wall_s,
        sent=o.sent,
        ok=o.ok,
        errors=dict(sorted(o.errors.items())),
        unanswered=o.unanswered,
        throughput_rps=o.throughput_rps,
        rows_per_s=o.throughput_rps * payloads.rows_per_request,
        offered_rps=(o.scheduled / duration_s) if o.scheduled is not None else None,
        latency_ms=o.latency_ms,
        loadgen={
            "cpu_s": o.cpu_s,
            "core_share": core_share,
            "machine_share": core_share / (os.cpu_count() or 1),
            "limit": core_limit,
            "schedule_lag_p99_ms": o.schedule_lag_p99_ms,
        },
        server=None if server is None else [{**asdict(m), "rows_per_execution": m.rows_per_execution} for m in server],
        server_note="" if server is not None else note,
        outside_triton_ms=outside,
        warnings=warnings,
        notes=o.notes,
    )


def check_pool(target: Target, payloads: Payloads, requests: int = 4, timeout_s: float = 10.0) -> dict[str, Any]:
    """The first ``requests`` requests' rows sent once through the typed client: which release answers, and how
    many rows the server scores (``ok``) rather than refuses; a server that cannot be reached is reported, not
    raised (the steps then count its errors)."""
    from inferline.serving.client import InferlineClient, InferlineError, TlsFiles

    rows = payloads.frame.iloc[: requests * payloads.rows_per_request]
    tls = TlsFiles(target.tls_ca, target.tls_cert, target.tls_key) if target.tls_ca else None
    try:
        with InferlineClient(
            target.url,
            target.protocol,
            pipeline=target.model,
            spec=payloads.spec,
            timeout_s=timeout_s,
            retries=1,
            api_key=target.api_key(),
            tls=tls,
            max_batch_size=payloads.rows_per_request,
        ) as client:
            p = client.predict(rows, errors="record")
    except (InferlineError, OSError, ValueError) as exc:
        return {"rows": len(rows), "ok": 0, "release": None, "error": str(exc)}
    statuses = pd.Series(p.status).value_counts().to_dict()
    releases = sorted({r for r in p.release if r})
    return {
        "rows": len(rows),
        "ok": int(sum(s == "ok" for s in p.status)),
        "statuses": {str(k): int(v) for k, v in statuses.items()},
        "release": releases[-1] if releases else None,
        "releases": releases,
        "error": "; ".join(str(e) for e in p.errors[:1]) or None,
    }
