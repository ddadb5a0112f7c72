"""The configuration of the supervisor of the local Triton server (``serving.supervisor``): the server it runs, the
edges in front of it (HTTP gateway, gRPC edge, keys, TLS, limits), its metrics port, the restart budget and backoff,
the hang probe's timing and the monitor the edges sample to. Its own module so the supervisor's parts (the hang
watch) read it without importing the supervisor."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from inferline.core.http import Backoff
from inferline.serving.edge_limits import GatewayLimits
from inferline.serving.server import ServerConfig

__all__ = ["RESTART_BACKOFF", "SupervisorConfig"]

# the wait before a restart: 0.5 s after the first crash within the window, doubling per crash, at most 30 s apart
# (attempts: the supervisor never stops restarting; past the budget it is only marked degraded)
RESTART_BACKOFF = Backoff(0.5, 30.0, attempts=sys.maxsize)


@dataclass
class SupervisorConfig:
    """What ``inferline serve up`` supervises and how: built from its flags by ``serving.daemon``."""

    server: ServerConfig
    gateway_port: int | None = 8080  # None: no gateway
    # the edge's address: the only listener that may face beyond loopback (Triton's own ports stay on 127.0.0.1)
    gateway_host: str = "127.0.0.1"
    grpc_edge_port: int | None = None  # the gRPC edge, on gateway_host (None: none; needs the HTTP gateway)
    api_keys: Path | None = None  # a keys file (serving.apikeys): callers then need a key at the edge
    tls_cert: Path | None = None  # the edge serves HTTPS with this certificate and key
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # mutual TLS: callers need a certificate this CA signed
    gateway_limits: GatewayLimits = field(default_factory=GatewayLimits)
    metrics_port: int | None = 8003  # the supervisor's and gateway's Prometheus metrics
    max_restarts: int = 5  # the restart budget: past it, restarts go on with backoff and the state is "degraded"
    restart_window_s: float = 300.0
    restart_backoff: Backoff = RESTART_BACKOFF
    probe_interval_s: float = 1.0  # the hang probe: one real inference per READY pipeline this often (0: off)
    probe_timeout_s: float = 2.0  # a probe not answered within this is a failure
    probe_failures: int = 2  # failures in a row (the next probe follows a failed one at once) that mean hung
    ready_timeout_s: float = 120.0
    status_interval_s: float = 5.0  # how often each pipeline's status is read again while serving
    # the edge hands this share of its answered inferences to the monitor at monitor_url (serving.edge_tap)
    monitor_url: str | None = "http://127.0.0.1:9400"
    sample_rate: float = 0.1  # measured: full sampling costs ~50 us of edge CPU per request (README)

    @property
    def gateway_url(self) -> str | None:
        """Where a caller on this machine reaches the edge (a wildcard bind is reached on loopback)."""
        if self.gateway_port is None:
            return None
        host = "127.0.0.1" if self.gateway_host in ("0.0.0.0", "::", "") else self.gateway_host
        return f"[{host}]:{self.gateway_port}" if ":" in host else f"{host}:{self.gateway_port}"

    @property
    def grpc_edge_url(self) -> str | None:
        """Where a caller on this machine reaches the gRPC edge (None: no gRPC edge)."""
        if self.gateway_port is None or self.grpc_edge_port is None:
            return None
        host = "127.0.0.1" if self.gateway_host in ("0.0.0.0", "::", "") else self.gateway_host
        return f"[{host}]:{self.grpc_edge_port}" if ":" in host else f"{host}:{self.grpc_edge_port}"

    @property
    def metrics_url(self) -> str | None:
        """The supervisor's Prometheus endpoint (None: no metrics port)."""
        return None if self.metrics_port is None else f"http://{self.server.host}:{self.metrics_port}/metrics"
