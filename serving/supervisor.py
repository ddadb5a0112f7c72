"""Supervision of the local Triton server: what ``inferline serve up`` runs.

One process owns tritonserver (which dies with it), the validating gateway in front of it and a Prometheus endpoint.
When tritonserver exits without being asked to (the bundled 2.51 aborts on one hostile HTTP request; SECURITY.md),
the supervisor raises a critical alert, restarts it on the same ports with the registry's current release (the
versions it served) and counts the restart in ``inferline_server_restarts_total{cause}``. While it restarts, the
gateway answers 503 with ``Retry-After`` and the client retries, so accepted rows are not lost.

Before each restart the whole process group of the old server is gone (``TritonServer.reap``): tritonserver runs in
a session of its own, its Python-backend stubs in the same group; what is left a moment after it exited is killed
with SIGKILL (a stub that outlived a SIGFPE crash ignores SIGTERM), the supervisor waits until no process of the
group remains, and the stubs' shared-memory regions are removed from /dev/shm.

A hung server (alive, answering nothing) is found by the hang probe (``serving.probe``): every
``probe_interval_s`` one small real inference per READY pipeline, through Triton's loopback HTTP port, built from
the release's own contract. ``probe_failures`` probes in a row without an answer within ``probe_timeout_s`` (the
next probe follows a failed one at once), with Triton finishing no inference for ``probe_failures *
probe_timeout_s`` seconds (a busy server is not hung: its metrics port shows it finishing requests), mark the edge
unavailable (503 ``restarting`` at once), kill the whole
group and restart it, counted with cause ``hung`` and a critical ``server_hung`` alert.

The supervisor never gives up on its own. Past the restart budget (more than ``max_restarts`` crashes within
``restart_window_s``) it keeps restarting, each wait doubling up to a cap (``restart_backoff``), with state
``degraded`` in ``inferline serve status`` and one critical ``server_restart_budget_exhausted`` alert per episode
(not one per crash); the episode ends, with an info alert, once a whole window passes without a crash.

A pipeline whose current release does not load is not a crash: tritonserver stays up and serves the others (see
``serving.server``). The supervisor counts the server ready once its start's loads are settled, records each
pipeline's status (``pipelines``, and ``unavailable`` with Triton's reason) for ``inferline serve status``, sets
``inferline_pipeline_ready{pipeline}`` and raises a warning alert naming what it could not load. Only when no
pipeline loads at all on the first start does it stop, marked failed with that reason (a critical alert), without
restarting: a restart would load the same releases again.

SIGTERM or SIGINT drains: the gateway stops admitting, the requests in flight finish (up to the exit timeout), then
tritonserver gets SIGTERM and drains its own queue within ``--exit-timeout-secs``.

Its parts: ``serving.supervisor_config`` (what it runs and how, the restart budget and probe timing),
``serving.hang_watch`` (the hang probe loop and the kill of a hung server) and ``serving.supervisor_metrics`` (its
Prometheus metrics); this module runs them: the watch loop, restarts with backoff, alerts and the state file.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from inferline.core.alerts import Alert, Alerter, Severity
from inferline.core.files import atomic_write_json
from inferline.core.secrets import monitor_key
from inferline.serving.apikeys import ApiKeys
from inferline.serving.edge_tap import EdgeSampler
from inferline.serving.edge_tls import ReloadingTls
from inferline.serving.gateway import Gateway
from inferline.serving.grpc_edge import GrpcEdge
from inferline.serving.hang_watch import HangWatch
from inferline.serving.server import TritonServer, state_path
from inferline.serving.supervisor_config import SupervisorConfig
from inferline.serving.supervisor_metrics import SupervisorMetrics
from inferline.serving.triton_index import ServerError, fix_hint

__all__ = ["Supervisor", "event_loop", "exit_cause"]

log = logging.getLogger("inferline.serving")
_FRAME = re.compile(r"^\s*\d+# ")


def event_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The supervisor's event loop: uvloop (libuv) where it is installed, else asyncio's own. The edge is the
    per-request Python cost of the stack; uvloop's transports cut it (measured in benchmarks/, the edge rows)."""
    if os.environ.get("INFERLINE_EVENT_LOOP", "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def exit_cause(returncode: int) -> str:
    """``signal SIGABRT`` for a process killed by a signal, else ``exit code N``."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class Supervisor:
    """Runs tritonserver and the edges in front of it until stopped, restarting the server when it crashes or hangs
    (``run``); its state goes to the state file that ``inferline serve status|down`` read."""

    def __init__(self, config: SupervisorConfig, alerter: Alerter | None = None) -> None:
        self.config = config
        self.registry = CollectorRegistry()
        self.server = TritonServer(config.server)
        self.gateway = (
            Gateway(
                config.server.http_url,
                config.gateway_limits,
                self.registry,
                Path(config.server.repository),
                ApiKeys(config.api_keys) if config.api_keys is not None else None,
            )
            if config.gateway_port is not None
            else None
        )
        self.grpc_edge = (
            GrpcEdge(self.gateway, config.server.grpc_url)
            if self.gateway is not None and config.grpc_edge_port is not None
            else None
        )
        workdir = Path(config.server.workdir)
        self.sampler: EdgeSampler | None = None  # what the edges answer, sampled to the monitor
        if self.gateway is not None and config.monitor_url and config.sample_rate > 0:
            key = monitor_key(workdir)
            self.sampler = EdgeSampler(
                config.monitor_url, key, config.sample_rate, Path(config.server.repository), self.registry
            )
            self.gateway.sampler = self.sampler
        self.alerter = alerter or Alerter.from_env(alerts_file=workdir / "alerts.jsonl", registry=self.registry)
        self.state = "starting"
        self.failure: str | None = None  # why it gave up (nothing loadable at the first start)
        self.degraded: str | None = None  # past the restart budget: why, while the episode lasts
        self.last_crash: dict[str, Any] | None = None
        self.crash_times: collections.deque[float] = collections.deque()
        self.restart_count = 0
        self._stop: asyncio.Event | None = None
        self.tls: ReloadingTls | None = None  # the edge's TLS files, re-read when they change
        self.metrics = SupervisorMetrics(self.registry)
        self.watch = HangWatch(config, self.server, self.gateway, self.metrics)

    # ---- state shared with `inferline serve status|down` ----
    def record(self) -> dict[str, Any]:
        return {
            **self.server.record(),
            "supervisor_pid": os.getpid(),
            "gateway": self.config.gateway_url,
            "gateway_tls": self.config.tls_cert is not None,
            "grpc_edge": self.config.grpc_edge_url,
            "supervisor_metrics": self.config.metrics_url,
            "state": self.state,
            "restarts": self.restart_count,
            "last_crash": self.last_crash,
            "up": self.watch.probing,  # the running server is ready (False while it restarts)
            "probes": self.watch.described(),
            **({"failure": self.failure} if self.failure else {}),
            **({"degraded": self.degraded} if self.degraded else {}),
        }

    def _save(self, state: str) -> None:
        self.state = state
        atomic_write_json(state_path(self.config.server.workdir), self.record())

    async def _alert(self, reason: str, severity: Severity, message: str, **details: Any) -> None:
        alert = Alert(source="serving", reason=reason, severity=severity, message=message, details=details)
        await asyncio.get_running_loop().run_in_executor(None, self.alerter.emit, alert)

    # ---- lifecycle ----
    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def _stopped_within(self, seconds: float) -> bool:
        assert self._stop is not None
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
            return True
        except TimeoutError:
            return False

    async def _start_server(self) -> bool:
        """Start tritonserver (from this thread, so it dies with this process) and wait until it is ready: it
        answers and its start's loads are settled, each pipeline READY or UNAVAILABLE (``TritonServer.status``)."""
        self.server.start(wait=False)
        assert self.server.process is not None
        self._save(self.state)  # the new pid
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.config.ready_timeout_s
        while time.monotonic() < deadline:
            if self.server.process.poll() is not None:
                return False
            if await loop.run_in_executor(None, self.server.loads_settled):
                self.metrics.up.set(1)
                return True
            if await self._stopped_within(0.1):  # readiness polling interval, or a stop request
                return False
        await loop.run_in_executor(None, self.server.stop)  # not ready in time: the watch loop counts a crash
        return False

    async def run(self, on_ready: Callable[[dict[str, Any]], None] | None = None) -> int:
        """Serve until SIGTERM/SIGINT (exit 0). Exit 1 only when the first start serves nothing (it never became
        ready, or no pipeline loaded): past the restart budget it keeps restarting with backoff."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.sampler is not None:
            self.sampler.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        metrics_server, prober = None, None
        if self.config.metrics_port is not None:
            metrics_server, _ = start_http_server(
                self.config.metrics_port, addr=self.config.server.host, registry=self.registry
            )
        try:
            if not await self._start_server():
                if self._stop.is_set():
                    return 0
                self._save("failed")
                log.error("tritonserver did not become ready:\n%s", self.server.log_tail())
                return 1
            if not await self._serving():
                return 1
            self.watch.new_probes()
            self.watch.probing = True
            if self.gateway is not None:
                c = self.config
                if c.tls_cert and c.tls_key:
                    self.tls = ReloadingTls(c.tls_cert, c.tls_key, c.tls_client_ca)
                await self.gateway.start(
                    c.gateway_host, int(c.gateway_port or 0), self.tls.context if self.tls else None
                )
                if self.grpc_edge is not None:
                    credentials = self.tls.grpc_credentials() if self.tls else None
                    await self.grpc_edge.start(c.gateway_host, int(c.grpc_edge_port or 0), credentials)
            self._save("ready")
            if on_ready is not None:
                on_ready(self.record())
            if os.environ.get("INFERLINE_GC_FREEZE", "1") != "0":
                # what start-up allocated (modules, pandas, the apps) is never garbage: out of the collector's
                # reach, a full collection scans only what serving allocates (a full one took ~40 ms here, in the
                # edge's latency tail)
                gc.collect()
                gc.freeze()
            prober = asyncio.create_task(self.watch.run()) if self.config.probe_interval_s > 0 else None
            checked = time.monotonic()
            while not await self._stopped_within(0.1):  # watch interval
                assert self.server.process is not None
                if self.server.process.poll() is not None:
                    await self._recover()
                elif self.degraded is not None and not self._recent_crashes():
                    await self._budget_recovered()
                elif self.tls is not None and self.tls.changed():
                    log.info("TLS certificate reloaded from %s (reload %d)", self.tls.cert, self.tls.reloads)
                elif time.monotonic() - checked >= self.config.status_interval_s:
                    checked = time.monotonic()
                    await self._refresh_status()
            return 0
        finally:
            if prober is not None:
                prober.cancel()
            await self._shutdown()
            if metrics_server is not None:
                metrics_server.shutdown()

    def _recent_crashes(self, now: float | None = None) -> int:
        """Crashes within the restart window (older ones dropped)."""
        now = time.monotonic() if now is None else now
        while self.crash_times and now - self.crash_times[0] > self.config.restart_window_s:
            self.crash_times.popleft()
        return len(self.crash_times)

    async def _budget_recovered(self) -> None:
        """A whole restart window without a crash after the budget was exhausted: the episode is over."""
        self.degraded = None
        self.metrics.budget_exhausted.set(0)
        self._save("ready" if self.server.process is not None and self.server.process.poll() is None else self.state)
        await self._alert(
            "server_restart_budget_recovered",
            "info",
            f"tritonserver has not crashed for {self.config.restart_window_s:.0f}s; the restart budget is whole again",
        )

    async def _recover(self) -> None:
        """The server exited (on its own, or killed for hanging): its whole process group is reaped, an alert is
        raised, and it is restarted with backoff. Past the budget the restarts go on, state ``degraded`` and one
        critical alert per episode; a restart that fails is seen by the watch loop as the next crash."""
        assert self.server.process is not None
        seen = time.monotonic()
        cause = exit_cause(self.server.process.returncode)
        label = cause
        if self.watch.killed_for is not None:
            cause, label, self.watch.killed_for = self.watch.killed_for, "hung", None
        self.metrics.up.set(0)
        self.watch.probing = False
        if self.gateway is not None:
            self.gateway.available = False  # 503 "restarting" at the edge, nothing forwarded to a half-started server
        self.crash_times.append(seen)
        crashes = self._recent_crashes(seen)
        self.last_crash = {
            "at": datetime.now(UTC).isoformat(),
            "pid": self.server.process.pid,
            "cause": cause,
            # the server's last words without the stack frames ("12# 0x... in tritonserver")
            "log_tail": [x for x in self.server.log_tail(80).splitlines() if not _FRAME.match(x)][-12:],
        }
        loop = asyncio.get_running_loop()
        try:  # nothing of the old server (its stubs, their shared memory) is left when the new one starts
            removed = await loop.run_in_executor(None, self.server.reap)
            self.last_crash["shm_removed"] = len(removed)
        except ServerError as exc:  # a process stuck in the kernel: restart all the same (the service comes first)
            log.error("%s", exc)
            self.last_crash["reap_error"] = str(exc)
        releases = self.server.record()["releases"]
        delay = self.config.restart_backoff.delay(crashes - 1)
        if crashes > self.config.max_restarts:
            first = self.degraded is None
            self.degraded = (
                f"restart budget exhausted at {self.last_crash['at']}: tritonserver crashed {crashes} times within "
                f"{self.config.restart_window_s:.0f}s (last: {cause}; the budget is {self.config.max_restarts} "
                f"restarts). Restarting with backoff (next try in {delay:.1f}s, at most "
                f"{self.config.restart_backoff.cap_s:.0f}s apart); read {self.server.log_path} for the cause"
            )
            self.metrics.budget_exhausted.set(1)
            self._save("degraded")
            log.error("%s", self.degraded)
            if first:  # once per episode, not once per crash
                await self._alert(
                    "server_restart_budget_exhausted", "critical", self.degraded, last_crash=self.last_crash
                )
        else:
            self._save("restarting")
            await self._alert(
                "server_hung" if label == "hung" else "server_crashed",
                "critical",
                f"tritonserver pid {self.last_crash['pid']} {'was killed' if label == 'hung' else 'died'} ({cause}); "
                f"restarting it with {releases}",
                last_crash=self.last_crash,
            )
        if await self._stopped_within(delay):
            return
        try:
            started = await self._start_server()
        except ServerError as exc:  # it cannot be started now (no release can be activated, no binary)
            log.error("tritonserver cannot be restarted: %s", exc)
            self.last_crash["start_error"] = str(exc)
            self._save(self.state)
            return  # the old (exited) process stays: the watch loop tries again, with a longer backoff
        if started:
            if not await self._serving(restart=True):
                await loop.run_in_executor(None, self.server.stop)  # nothing loaded: retried as the next crash
                return
            self.restart_count += 1
            self.metrics.restarts.labels(label).inc()
            self.metrics.restart_seconds.set(time.monotonic() - seen)
            self.watch.new_probes()
            self.watch.probing = True
            if self.gateway is not None:
                self.gateway.available = True
            self._save("degraded" if self.degraded else "ready")
            if self.degraded is None:
                await self._alert(
                    "server_restarted",
                    "info",
                    f"tritonserver is ready again after {time.monotonic() - seen:.1f}s, serving {self._served()}",
                    restarts=self.restart_count,
                )

    async def _serving(self, restart: bool = False) -> bool:
        """After a start: which pipelines loaded. None: a critical alert with Triton's reasons and False (the first
        start: this supervisor is marked failed; a restart: retried with backoff); some: a warning alert names the
        others, and serving goes on."""
        status = self.server.last_status
        for name, st in status.items():
            self.metrics.pipeline_ready.labels(name).set(1 if st.state == "READY" else 0)
        broken = {name: st for name, st in status.items() if st.state != "READY"}
        if not broken:
            return True
        listed = "; ".join(f"{name} (release {st.release}): {st.reason.rstrip('.')}" for name, st in broken.items())
        hints = " ".join(fix_hint(name) for name in broken)
        if len(broken) == len(status):
            failure = f"no pipeline could be loaded: {listed}. {hints}"
            log.error("%s", failure)
            if not restart:
                self.failure = failure
                self._save("failed")
            if not restart or self.degraded is None:
                await self._alert(
                    "no_pipeline_loaded", "critical", failure, unavailable={n: st.reason for n, st in broken.items()}
                )
            return False
        ready = sorted(name for name in status if name not in broken)
        message = f"serving {', '.join(ready)}; could not load {listed}. {hints}"
        log.warning("%s", message)
        await self._alert(
            "pipeline_unavailable", "warning", message, unavailable={n: st.reason for n, st in broken.items()}
        )
        return True

    def _served(self) -> dict[str, int | None]:
        """``{pipeline: release}`` of the pipelines the server has READY (as of the last status read)."""
        return {name: st.release for name, st in self.server.last_status.items() if st.state == "READY"}

    async def _refresh_status(self) -> None:
        """Read each pipeline's status again (a release applied since, or lost, shows in the gauge and the record)."""
        before = {name: st.state for name, st in self.server.last_status.items()}
        try:
            status = await asyncio.get_running_loop().run_in_executor(None, self.server.status)
        except ServerError:
            return  # not answering this time: a crash is seen by the watch loop, anything else on the next check
        for name, st in status.items():
            self.metrics.pipeline_ready.labels(name).set(1 if st.state == "READY" else 0)
        if {name: st.state for name, st in status.items()} != before:
            self.watch.new_probes()  # a release applied since: probe what is served now
            self._save(self.state)

    async def _shutdown(self) -> None:
        if self.state != "failed":
            self.state = "stopping"
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        if self.gateway is not None:
            log.info("draining: %d requests in flight, %d queued", self.gateway.inflight, self.gateway.queued)
            left = await self.gateway.drain(self.config.server.exit_timeout_s)
            if left:
                log.warning("%d requests still in flight after the drain timeout", left)
            await self.gateway.stop()
            if self.grpc_edge is not None:
                await self.grpc_edge.stop()
            log.info("gateway drained and closed in %.2fs", time.monotonic() - started)
        if self.sampler is not None:
            await loop.run_in_executor(None, self.sampler.stop)
        await loop.run_in_executor(None, self.server.stop)
        log.info("tritonserver stopped; shutdown took %.2fs", time.monotonic() - started)
        self.metrics.up.set(0)
        if self.state == "failed":
            self._save("failed")  # `serving status` reports it
        else:
            state_path(self.config.server.workdir).unlink(missing_ok=True)
