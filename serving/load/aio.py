"""The asyncio load generator (in this process): one load step against one served model, closed loop (a fixed
number of requests in flight) or open loop (requests sent on a schedule at a fixed rate, whether or not the earlier
ones were answered, so that queueing shows in the latency), over HTTP (aiohttp) or gRPC
(``tritonclient.grpc.aio``), sending the prepared requests in turn.

At the end of a step it sends nothing more and waits for every request in flight, so ``sent`` is exactly what left
it and every one is answered or counted as an error. Open loop: the arrival times are drawn before the step
(``arrival_times``: Poisson or uniform, seeded); each request's latency runs from the time it was due, not from
when it left (a generator that falls behind shows as latency, and as ``schedule_lag``; one due within half a
millisecond leaves at once, since the event loop's timers have millisecond resolution); at most ``max_inflight``
requests are in flight, an arrival beyond that is counted as ``dropped`` and not sent. Its CPU time is this
process's (``time.process_time``) over the step. Error kinds: ``load.outcome``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inferline.serving.load.outcome import Arrivals, HttpBody, LoadOutcome, Mode, latency_summary

__all__ = ["arrival_times", "run_asyncio"]

EARLY_S = 0.0005  # open loop: a request due within this many seconds leaves now (see _open_loop)


def arrival_times(rate: float, duration_s: float, arrivals: Arrivals, seed: int) -> np.ndarray:
    """Seconds after the step's start at which each open-loop request is due: a Poisson process (exponential gaps,
    seeded, so two runs offer the same load) or evenly spaced, all within ``duration_s``."""
    if arrivals == "uniform":
        return np.arange(int(rate * duration_s)) / rate
    rng = np.random.default_rng(seed)
    n = int(rate * duration_s * 1.5) + 64  # more gaps than the step can hold, then cut at the end of the step
    times = np.cumsum(rng.exponential(1.0 / rate, n))
    while times[-1] < duration_s:  # very unlikely: draw more
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, n))])
    times = times - times[0]  # the first request at the start of the step
    return times[times < duration_s]


Send = Callable[[int], Awaitable[str | None]]  # request index -> None (answered OK) or the error kind


async def _closed_loop(
    send: Send, n: int, concurrency: int, duration_s: float
) -> tuple[list[float], Counter[str], int]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sent = 0
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal sent
        while time.perf_counter() < deadline:
            i = sent % n
            sent += 1
            t0 = time.perf_counter()
            kind = await send(i)
            if kind is None:
                latencies.append(time.perf_counter() - t0)
            else:
                errors[kind] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, sent


async def _open_loop(
    send: Send, n: int, due: np.ndarray, max_inflight: int
) -> tuple[list[float], Counter[str], int, list[float]]:
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    lags: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    start = time.perf_counter()

    async def one(i: int, due_at: float) -> None:
        t0 = max(due_at, time.perf_counter())  # from when it was due (lateness counts), or when it left if early
        kind = await send(i)
        if kind is None:
            latencies.append(time.perf_counter() - t0)
        else:
            errors[kind] += 1

    k = 0
    while k < len(due):
        now = time.perf_counter()
        # everything due by now leaves now, and what is due within EARLY_S too: the event loop's timers have
        # millisecond resolution, so waiting for the exact time would make every request up to 1 ms late
        while k < len(due) and start + due[k] <= now + EARLY_S:
            if len(tasks) >= max_inflight:
                errors["dropped"] += 1
            else:
                lags.append(max(0.0, now - (start + due[k])))
                task = asyncio.create_task(one(sent % n, start + due[k]))
                sent += 1
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            k += 1
        if k < len(due):
            await asyncio.sleep(max(0.0, start + due[k] - EARLY_S - time.perf_counter()))
    if tasks:
        await asyncio.gather(*tasks)
    return latencies, errors, sent, lags


def _http_error_kind(exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return "read"
    if isinstance(exc, ConnectionError):
        return "read"
    return f"other_{type(exc).__name__}"


def _grpc_error_kind(exc: BaseException) -> str:
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    if not isinstance(exc, InferenceServerException):
        return f"other_{type(exc).__name__}"
    status = str(exc.status() or "UNKNOWN").removeprefix("StatusCode.")
    text = str(exc.message() or "").lower()
    if status == "DEADLINE_EXCEEDED":
        return "timeout"
    if status == "UNAVAILABLE" and any(
        m in text for m in ("failed to connect", "connection refused", "connect failed")
    ):
        return "connect"
    return f"grpc_{status}"


def _ssl_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if ca is None:
        return None
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


@dataclass(frozen=True)
class _Drive:
    """What one asyncio step is asked to do, whatever the protocol."""

    step: tuple[Mode, float]
    duration_s: float
    timeout_s: float
    api_key: str | None
    tls: tuple[Path | None, Path | None, Path | None]
    arrivals: Arrivals
    seed: int
    max_inflight: int


_Drove = tuple[list[float], Counter[str], int, list[float] | None, float, int | None]


async def _http_run(url: str, bodies: Sequence[HttpBody], d: _Drive) -> _Drove:
    import aiohttp

    mode, value = d.step
    limit = int(value) if mode == "concurrency" else d.max_inflight
    headers = [b.headers() | ({"Authorization": f"Bearer {d.api_key}"} if d.api_key else {}) for b in bodies]
    context = _ssl_context(*d.tls)
    connector = aiohttp.TCPConnector(limit=limit, ssl=context if context is not None else False)
    timeout = aiohttp.ClientTimeout(total=d.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",)) as s:

        async def send(i: int) -> str | None:
            try:
                async with s.post(url, data=bodies[i].body, headers=headers[i]) as r:
                    await r.read()
                    return None if 200 <= r.status < 300 else f"http_{r.status}"
            except Exception as exc:  # noqa: BLE001 - every failure is counted by kind, as wrk counts its errors
                return _http_error_kind(exc)

        return await _drive(send, len(bodies), d)


async def _grpc_run(
    url: str, model: str, requests: Sequence[Sequence[Any]], outputs: Sequence[str], d: _Drive
) -> _Drove:
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aio

    from inferline.serving.client import TlsFiles

    ca, cert, key = d.tls
    options = TlsFiles(ca, cert, key).grpc_options() if ca is not None else {}
    client = aio.InferenceServerClient(url, **options)
    headers = {"authorization": f"Bearer {d.api_key}"} if d.api_key else None
    wanted = [grpcclient.InferRequestedOutput(n) for n in outputs]
    try:

        async def send(i: int) -> str | None:
            try:
                await client.infer(
                    model, list(requests[i]), outputs=wanted, headers=headers, client_timeout=d.timeout_s
                )
                return None
            except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
                return _grpc_error_kind(exc)

        return await _drive(send, len(requests), d)
    finally:
        await client.close()


async def _drive(send: Send, n: int, d: _Drive) -> _Drove:
    mode, value = d.step
    started = time.perf_counter()
    if mode == "concurrency":
        latencies, errors, sent = await _closed_loop(send, n, int(value), d.duration_s)
        return latencies, errors, sent, None, time.perf_counter() - started, None
    due = arrival_times(value, d.duration_s, d.arrivals, d.seed)
    latencies, errors, sent, lags = await _open_loop(send, n, due, d.max_inflight)
    return latencies, errors, sent, lags, time.perf_counter() - started, len(due)


def run_asyncio(
    protocol: Literal["http", "grpc"],
    url: str,
    step: tuple[Mode, float],
    duration_s: float,
    *,
    model: str,
    http_bodies: Sequence[HttpBody] = (),
    grpc_requests: Sequence[Sequence[Any]] = (),
    outputs: Sequence[str] = (),
    timeout_s: float = 10.0,
    api_key: str | None = None,
    tls: tuple[Path | None, Path | None, Path | None] = (None, None, None),
    arrivals: Arrivals = "poisson",
    seed: int = 0,
    max_inflight: int = 1024,
) -> LoadOutcome:
    """One step of the asyncio generator in this process: ``step`` is ``("concurrency", c)`` or ``("rate", rps)``.
    HTTP: ``url`` is the full ``http(s)://host:port/v2/models/M/infer`` and ``http_bodies`` the requests; gRPC:
    ``url`` is ``host:port`` and ``grpc_requests`` the ``InferInput`` lists (built before the step: their
    preparation is not the generator's load)."""
    cpu0 = time.process_time()
    drive = _Drive(step, duration_s, timeout_s, api_key, tls, arrivals, seed, max_inflight)
    if protocol == "http":
        coro = _http_run(url, http_bodies, drive)
        loop_factory = _uvloop()
    else:
        coro = _grpc_run(url, model, grpc_requests, outputs, drive)
        loop_factory = None  # grpc.aio runs on asyncio's own loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        latencies, errors, sent, lags, wall, scheduled = runner.run(coro)
    cpu = time.process_time() - cpu0
    return LoadOutcome(
        generator="asyncio",
        mode=step[0],
        sent=sent,
        ok=len(latencies),
        errors=dict(errors),
        wall_s=wall,
        latency_ms=latency_summary(latencies),
        cpu_s=cpu,
        scheduled=scheduled,
        schedule_lag_p99_ms=float(np.percentile(lags, 99) * 1e3) if lags else (None if lags is None else 0.0),
    )


def _uvloop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # the edge's dependency; without it asyncio's own loop (slower, still correct)
        return None
    return uvloop.new_event_loop
