"""The load generators of ``inferline bench run --pipeline``: one load step against one served model, closed loop
(a fixed number of requests in flight) or open loop (requests sent on a schedule at a fixed rate, whether or not
the earlier ones were answered, so that queueing shows in the latency).

Two generators, one result (``LoadOutcome``):

- ``wrk`` (Debian's, one thread): closed loop over HTTP(S). Its Lua script reads a file of prepared request bodies
  (``write_body_file``: Open Inference Protocol bodies, the binary tensor extension by default), formats every request
  once in ``init``, and ``request()`` returns them in turn. The script counts what it sent and the answers by HTTP
  status; wrk counts socket errors by kind (connect, read, write, timeout). The requests in flight when it stops
  are sent but ``unanswered`` (at most one per connection); a first connection it cannot open makes it send nothing
  (one ``connect`` error). Its CPU time comes from ``wait4``.
- ``asyncio`` (in this process): closed or open loop, HTTP (aiohttp) or gRPC (``tritonclient.grpc.aio``), sending
  the same prepared requests in turn. At the end of a step it sends nothing more and waits for every request in
  flight, so ``sent`` is exactly what left it and every one is answered or counted as an error. Open loop: the
  arrival times are drawn before the step (Poisson or uniform, seeded); each request's latency runs from the time
  it was due, not from when it left (a generator that falls behind shows as latency, and as ``schedule_lag``;
  one due within half a millisecond leaves at once, since the event loop's timers have millisecond resolution); at
  most ``max_inflight`` requests are in flight, an arrival beyond that is counted as ``dropped`` and not sent. Its
  CPU time is this process's (``time.process_time``) over the step.

Error kinds, the same for both: ``connect`` (refused or unreachable), ``read`` (the connection closed or reset
before the answer), ``write``, ``timeout`` (no answer within the request timeout), ``http_<status>`` (an answer
outside 2xx), ``grpc_<STATUS>`` (a gRPC status other than OK, those above aside), ``dropped`` (open loop: the
in-flight cap was reached) and ``other_<ExceptionType>``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from inferline.core.errors import UserError

__all__ = [
    "HttpBody",
    "LoadOutcome",
    "WrkMissing",
    "arrival_times",
    "latency_summary",
    "run_asyncio",
    "run_wrk",
    "write_body_file",
]

Mode = Literal["concurrency", "rate"]
Arrivals = Literal["poisson", "uniform"]
EARLY_S = 0.0005  # open loop: a request due within this many seconds leaves now (see _open_loop)
PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0), ("p99.9", 99.9))


class WrkMissing(UserError, RuntimeError):
    pass


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


# ---------------------------------------------------------------------------------------------------------- wrk

# The body file: for each request a line "<json header length or -1> <body length>\n" and then the body's bytes.
# Every request is formatted once in `init`; `request()` returns them in turn and counts what it sent; `response()`
# counts the answers by HTTP status (wrk itself counts only 'status > 399' as one number).
_LUA = r"""
local requests = {}
local i = 0
sent = 0
statuses = {}
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args)
  local f = assert(io.open(args[1], "rb"))
  local auth = nil
  if args[2] ~= nil and #args[2] > 0 then
    local k = assert(io.open(args[2], "r"))
    auth = k:read("*l")
    k:close()
  end
  while true do
    local line = f:read("*l")
    if line == nil then break end
    local jlen, blen = line:match("^(-?%d+) (%d+)$")
    if jlen == nil then error("malformed body file " .. args[1]) end
    local body = f:read(tonumber(blen))
    local headers = {}
    if tonumber(jlen) >= 0 then
      headers["Content-Type"] = "application/octet-stream"
      headers["Inference-Header-Content-Length"] = jlen
    else
      headers["Content-Type"] = "application/json"
    end
    if auth ~= nil then headers["Authorization"] = "Bearer " .. auth end
    requests[#requests + 1] = wrk.format("POST", nil, headers, body)
  end
  f:close()
  if #requests == 0 then error("no request bodies in " .. args[1]) end
end
request = function()
  i = i % #requests + 1
  sent = sent + 1
  return requests[i]
end
response = function(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end
done = function(summary, latency, requests)
  local total_sent = 0
  local parts = {}
  for _, t in ipairs(threads) do
    total_sent = total_sent + t:get("sent")
    for code, n in pairs(t:get("statuses")) do
      parts[#parts + 1] = string.format("\"%s\": %d", code, n)
    end
  end
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\": %d, \"sent\": %d, \"duration_us\": %d, \"connect\": %d, \"read\": %d, " ..
    "\"write\": %d, \"timeout\": %d, \"status_errors\": %d, \"p50_us\": %d, \"p95_us\": %d, \"p99_us\": %d, " ..
    "\"p99.9_us\": %d, \"mean_us\": %f, \"max_us\": %d, \"statuses\": {%s}}\n",
    summary.requests, total_sent, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50.0), latency:percentile(95.0), latency:percentile(99.0), latency:percentile(99.9),
    latency.mean, latency.max, table.concat(parts, ", ")))
end
"""


def write_body_file(path: Path, bodies: Sequence[HttpBody]) -> Path:
    """The request bodies in the file format ``run_wrk``'s script reads (see ``_LUA``)."""
    with open(path, "wb") as fh:
        for b in bodies:
            fh.write(f"{-1 if b.json_length is None else b.json_length} {len(b.body)}\n".encode())
            fh.write(b.body)
    return path


def run_wrk(
    url: str,
    body_file: Path,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 10.0,
    api_key_file: Path | None = None,
) -> LoadOutcome:
    """``wrk`` (1 thread, ``concurrency`` connections) POSTing the bodies of ``body_file`` in turn to ``url`` (the
    full ``http(s)://host:port/v2/models/M/infer``) for ``duration_s`` (whole seconds, at least 1: wrk's unit)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkMissing(
            "the load generator `wrk` is not installed: apt-get install wrk (Debian), or choose --loadgen asyncio"
        )
    seconds = max(1, round(duration_s))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(_LUA)
        script = fh.name
    cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", f"{max(1, round(timeout_s))}s"]
    cmd += ["-s", script, url, "--", str(body_file), str(api_key_file or "")]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        Path(script).unlink(missing_ok=True)
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if proc.returncode != 0 and "unable to connect" in out:  # wrk tries one connection first and gives up on it
        return LoadOutcome(
            generator="wrk",
            mode="concurrency",
            sent=0,
            ok=0,
            errors={"connect": 1},
            wall_s=0.0,
            latency_ms=latency_summary([]),
            cpu_s=usage.ru_utime + usage.ru_stime,
            notes=[f"wrk could not open its first connection and sent nothing: {out.strip()[-300:]}"],
        )
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk exited with {proc.returncode} and no result: {out[-2000:]}")
    r = json.loads(line.removeprefix("WRKJSON "))
    errors: Counter[str] = Counter({k: int(r[k]) for k in ("connect", "read", "write", "timeout") if r[k]})
    ok = 0
    for code, n in r["statuses"].items():
        if 200 <= int(code) < 300:
            ok += int(n)
        else:
            errors[f"http_{code}"] += int(n)
    answered = r["requests"]
    latency = (
        {name: r[f"{name}_us"] / 1e3 for name, _ in PERCENTILES}
        | {"mean": r["mean_us"] / 1e3, "max": r["max_us"] / 1e3}
        if answered
        else latency_summary([])
    )
    notes = [
        "wrk: latency over every HTTP answer (2xx or not); wall time is wrk's run; the requests in flight when it "
        "stopped are sent but not answered within the step (unanswered)"
    ]
    return LoadOutcome(
        generator="wrk",
        mode="concurrency",
        sent=int(r["sent"]) - 1,  # wrk calls request() once before the load, to check it (script_verify_request)
        ok=ok,
        errors=dict(errors),
        wall_s=r["duration_us"] / 1e6,
        latency_ms=latency,
        cpu_s=usage.ru_utime + usage.ru_stime,
        notes=notes,
    )


# ------------------------------------------------------------------------------------------------------ asyncio

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
