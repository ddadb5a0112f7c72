"""Where a load step is sent (``Target``: the edge or Triton itself, HTTP or gRPC, with its caller key and TLS
files) and where Triton's statistics API is read for the server-side split (Triton's own HTTP port, which the edge
refuses). ``resolve_target`` reads the server record ``inferline serve up`` wrote into its work directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from inferline.core.errors import UserError
from inferline.serving.load.stats import StatsUnavailable, model_stats

__all__ = ["Protocol", "Target", "resolve_target"]

Protocol = Literal["http", "grpc"]


@dataclass
class Target:
    url: str  # host:port
    protocol: Protocol
    model: str
    via: str = "unknown"  # "edge", "triton" or "unknown"
    triton_http: str | None = None  # Triton's own HTTP port: the statistics API
    stats_note: str = ""  # why there is no server-side breakdown, when there is none
    api_key_file: Path | None = None  # the edge's caller key (--api-keys), read from a file, never an argument
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    admin_headers: dict[str, str] = field(default_factory=dict)

    @property
    def infer_url(self) -> str:
        scheme = "https" if self.tls_ca is not None else "http"
        return f"{scheme}://{self.url}/v2/models/{self.model}/infer"

    def api_key(self) -> str | None:
        return Path(self.api_key_file).read_text().strip() if self.api_key_file else None

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "protocol": self.protocol,
            "model": self.model,
            "via": self.via,
            "triton_http": self.triton_http,
            "tls": self.tls_ca is not None,
            "stats": "Triton statistics API" if self.triton_http else f"not measured: {self.stats_note}",
        }


def _stats_answer(url: str) -> bool:
    try:
        model_stats(url, timeout_s=3)
        return True
    except StatsUnavailable:
        return False


def resolve_target(
    model: str,
    protocol: Protocol = "http",
    *,
    url: str | None = None,
    workdir: Path | None = Path(".inferline"),
    direct: bool = False,
    triton_http: str | None = None,
    api_key_file: Path | None = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> Target:
    """Where to send the load and where to read Triton's statistics. Without ``url``, the server recorded in
    ``workdir`` (``inferline serve up``): its edge for ``protocol``, or Triton's own port with ``direct`` (or when it
    runs without an edge). Statistics: ``triton_http``; else the record's Triton when ``url`` is that server's;
    else ``url`` itself when it answers the statistics API (Triton over HTTP); else none, saying why."""
    from inferline.core.secrets import ADMIN_HEADER, admin_key
    from inferline.serving.server import NoServer, read_state

    record = read_state(workdir, "pass --url HOST:PORT (and --triton-http) instead") if workdir else None
    edge_key = "gateway" if protocol == "http" else "grpc_edge"
    if url is None:
        if record is None:
            raise NoServer(
                f"no --url given and no server record in --workdir {workdir}; start one with `inferline serve up`, "
                "pass the --workdir it was started with, or give the server's address with --url HOST:PORT"
            )
        edge = None if direct else record.get(edge_key)
        url, via = (edge, "edge") if edge else (str(record[protocol]), "triton")
        if via == "edge" and record.get("gateway_tls") and tls_ca is None:
            raise UserError(
                f"the edge at {url} serves TLS; pass --tls-ca FILE (the CA that signed its certificate), or --direct "
                "for Triton's own loopback port"
            )
    elif record is not None and url in (record.get("http"), record.get("grpc")):
        via = "triton"
    elif record is not None and url in (record.get("gateway"), record.get("grpc_edge")):
        via = "edge"
    else:
        via, record = "unknown", None  # another server than the recorded one
    target = Target(url, protocol, model, via, None, "", api_key_file, tls_ca, tls_cert, tls_key)
    if record is not None and workdir is not None:
        target.admin_headers = {ADMIN_HEADER: admin_key(workdir)}  # the record's server: its key exists already
    if triton_http:
        target.triton_http = triton_http
    elif record is not None:
        target.triton_http = str(record["http"])
    elif protocol == "http" and tls_ca is None and _stats_answer(url):
        target.triton_http, target.via = url, "triton"
    else:
        target.stats_note = (
            f"{url} does not answer Triton's statistics API and no server record names Triton's own HTTP port; "
            "pass --triton-http HOST:PORT"
        )
    return target
