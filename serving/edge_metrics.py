"""The edge's Prometheus metrics, in the registry the supervisor exports: requests answered (by route and status),
refused at the edge (by reason) and forwarded to the model server (by route), and gauges of the requests running,
waiting and the connections open.

Why counters are handed back rather than wrapped: the request path increments them directly
(``counter.labels(...).inc()``), with no call of the edge's own in between; the gauges read the edge's plain
integers at scrape time, so the request path keeps no gauge up to date.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["EdgeLoad", "edge_metrics"]


class EdgeLoad(Protocol):
    """What the gauges read: the edge's counts, kept as plain integers by the request path."""

    inflight: int
    queued: int
    connections: int


def edge_metrics(registry: CollectorRegistry, load: EdgeLoad) -> tuple[Counter, Counter, Counter]:
    """Register the edge's metrics in ``registry``; returns the ``requests``, ``rejected`` and ``forwarded``
    counters (the gauges read ``load`` when scraped)."""
    requests = Counter(
        "inferline_gateway_requests",
        "Requests answered at the edge, by route and HTTP status",
        ["route", "code"],
        registry=registry,
    )
    rejected = Counter(
        "inferline_gateway_rejected_requests",
        "Requests refused at the edge without reaching the model server, by reason",
        ["reason"],
        registry=registry,
    )
    forwarded = Counter(
        "inferline_gateway_forwarded_requests",
        "Requests forwarded to the model server, by route",
        ["route"],
        registry=registry,
    )
    Gauge(
        "inferline_gateway_inflight_requests", "Requests running on the model server", registry=registry
    ).set_function(lambda: load.inflight)
    Gauge("inferline_gateway_open_connections", "HTTP connections open at the edge", registry=registry).set_function(
        lambda: load.connections
    )
    Gauge("inferline_gateway_queued_requests", "Requests waiting for a slot", registry=registry).set_function(
        lambda: load.queued
    )
    return requests, rejected, forwarded
