"""The Prometheus metrics of the supervisor of the local Triton server (``serving.supervisor``): restarts by cause,
whether the server is up, each pipeline's readiness, the time a restart took, the hang probes by outcome and whether
the restart budget is exhausted. Registered on the supervisor's registry, which its metrics port serves."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["SupervisorMetrics"]


class SupervisorMetrics:
    """The supervisor's metrics, registered on ``registry`` (one set per supervisor: names are unique in it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.restarts = Counter(
            "inferline_server_restarts",
            "Restarts of the model server after it exited unexpectedly, by cause",
            ["cause"],
            registry=registry,
        )
        self.up = Gauge("inferline_server_up", "1 when the model server is ready", registry=registry)
        self.pipeline_ready = Gauge(
            "inferline_pipeline_ready",
            "1 when the pipeline's current release is loaded and ready; 0 when the server could not load it",
            ["pipeline"],
            registry=registry,
        )
        self.restart_seconds = Gauge(
            "inferline_server_restart_seconds",
            "Seconds from the last crash being seen to the restarted server being ready",
            registry=registry,
        )
        self.probe_count = Counter(
            "inferline_server_probes",
            "Hang probes sent to the model server (one real inference each), by outcome",
            ["outcome"],
            registry=registry,
        )
        self.budget_exhausted = Gauge(
            "inferline_server_restart_budget_exhausted",
            "1 while past the restart budget (restarts go on with backoff), else 0",
            registry=registry,
        )
