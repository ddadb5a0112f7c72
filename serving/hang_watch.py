"""The hang watch of the supervisor (``serving.supervisor``): finds a local tritonserver that is alive but answers
nothing, and kills its process group so that the supervisor's watch loop restarts it with cause ``hung``.

Every ``probe_interval_s`` one small real inference per READY pipeline (``serving.probe``), through Triton's
loopback HTTP port. Hung means both: ``probe_failures`` probes in a row unanswered within ``probe_timeout_s``, and
no inference finished by Triton for ``probe_failures * probe_timeout_s`` seconds (a busy server keeps finishing
requests, so it is never killed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from inferline.core.processes import kill_group
from inferline.serving.gateway import Gateway
from inferline.serving.probe import Probe, completed_inferences, probe_for, run_probe
from inferline.serving.server import TritonServer
from inferline.serving.supervisor_config import SupervisorConfig
from inferline.serving.supervisor_metrics import SupervisorMetrics

__all__ = ["HangWatch"]

log = logging.getLogger("inferline.serving")


class HangWatch:
    """The hang probe of the supervisor's running server. The supervisor sets ``probing`` while the server is up and
    ready, calls ``new_probes`` after each start (and when the served releases change), and reads ``killed_for``
    (then clears it) when the server exits: set, the exit was this watch killing a hung server."""

    def __init__(
        self, config: SupervisorConfig, server: TritonServer, gateway: Gateway | None, metrics: SupervisorMetrics
    ) -> None:
        self.config = config
        self.server = server
        self.gateway = gateway
        self.metrics = metrics
        self.probes: dict[str, Probe] = {}  # the hang probe of each READY pipeline of the running server
        self.probing = False  # the running server is ready: the hang probe watches it
        self.killed_for: str | None = None  # why the running server was killed (hung)

    def described(self) -> dict[str, str]:
        """Each probed pipeline's probe, for the state file: ``inference``, or ``readiness (why)``."""
        return {name: "inference" if p.inference else f"readiness ({p.why})" for name, p in self.probes.items()}

    def new_probes(self) -> None:
        """The hang probe of each pipeline READY on the server just started (its release's contract)."""
        repository = Path(self.config.server.repository)
        self.probes = {
            name: probe_for(repository, name, st.release)
            for name, st in self.server.last_status.items()
            if st.state == "READY" and self.config.server.models is None
        }
        for probe in self.probes.values():
            if not probe.inference:
                log.warning("hang probe of %r: %s", probe.pipeline, probe.why)

    async def run(self) -> None:
        """Every ``probe_interval_s``, one real inference per READY pipeline of the running server (``serving.probe``).
        Hung means both: ``probe_failures`` probes in a row unanswered within ``probe_timeout_s``, and no inference
        finished by Triton (its metrics port: ``completed_inferences``) for ``probe_failures * probe_timeout_s``
        seconds. A busy server whose probes wait behind slow requests keeps finishing them, so it is never killed;
        a stopped one answers neither. Then ``_kill_hung``. Probes only a server that is up and ready."""
        c, loop = self.config, asyncio.get_running_loop()
        failures, pid = 0, None
        finished: float | None = None  # Triton's finished inferences, as last read during this run of failures
        progress_at = time.monotonic()  # when the server last answered a probe or finished an inference
        while True:
            process = self.server.process
            if not self.probing or process is None or process.poll() is not None:
                failures = 0
                await asyncio.sleep(c.probe_interval_s)
                continue
            if process.pid != pid:  # a new server: a new count
                failures, pid, finished, progress_at = 0, process.pid, None, time.monotonic()
            failed = None
            for probe in list(self.probes.values()):
                failed = await loop.run_in_executor(None, run_probe, c.server.http_url, probe, c.probe_timeout_s)
                self.metrics.probe_count.labels("failed" if failed else "answered").inc()
                if failed:
                    failed = f"{probe.pipeline}: {failed}"
                    break
            if self.server.process is not process or process.poll() is not None:
                continue  # it exited (or was replaced) meanwhile: the watch loop has it
            if failed is None:
                failures, finished, progress_at = 0, None, time.monotonic()
                await asyncio.sleep(c.probe_interval_s)
                continue
            failures += 1
            # a short read: a busy Triton's metrics port answers at once, a stopped one never does
            count = await loop.run_in_executor(None, completed_inferences, c.server.metrics_url, 0.5)
            if count is not None:
                if finished is not None and count > finished:
                    progress_at = time.monotonic()
                    self.metrics.probe_count.labels("slow_but_progressing").inc()
                finished = count
            stalled = time.monotonic() - progress_at
            window = c.probe_failures * c.probe_timeout_s
            log.warning(
                "hang probe %d of tritonserver pid %d failed (%s); no inference finished for %.1fs (hung after %d "
                "failures and %.1fs)",
                failures,
                pid,
                failed,
                stalled,
                c.probe_failures,
                window,
            )
            if failures >= c.probe_failures and stalled >= window:
                await self._kill_hung(process.pid, failures, f"{failed}; no inference finished for {stalled:.1f}s")
                failures = 0

    async def _kill_hung(self, pid: int, failures: int, last: str) -> None:
        """The server answers no probe: the edge answers 503 ``restarting`` at once, the whole process group is
        killed (SIGKILL) and the watch loop restarts it with cause ``hung``."""
        if self.gateway is not None:
            self.gateway.available = False
        self.metrics.up.set(0)
        self.probing = False
        self.killed_for = (
            f"hung: {failures} probe inferences in a row got no answer within {self.config.probe_timeout_s:g}s "
            f"(last: {last})"
        )
        log.error("tritonserver pid %d is %s; killing its process group", pid, self.killed_for)
        kill_group(pid)  # its own session: the group id is its pid
