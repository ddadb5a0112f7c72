"""The edge's bounds and its one way of refusing: ``GatewayLimits`` (what the HTTP and gRPC edges accept, and for
how long they wait) and ``RequestRejected`` (a refusal with its HTTP status and metric label, which the gRPC edge
maps to a status code).

Why a module of its own: the protocol checks (``serving.edge_protocol``), the access checks
(``serving.edge_auth``), admission (``serving.edge_admission``) and both edges raise the same refusal and read
the same limits; here they depend on nothing of each other.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GatewayLimits", "RequestRejected", "invalid"]


@dataclass(frozen=True)
class GatewayLimits:
    """The edge's bounds, HTTP and gRPC alike: sizes, counts in flight and waiting, and the timeouts (each one
    the reason a field below gives; the ``inferline serve up`` flags set them)."""

    # Triton 2.51 segfaults on any JSON body of 4 MiB or more (binary ones are answered; measured, SECURITY.md): half.
    # A 256-row request of the demo pipeline is about 60 KB of JSON.
    max_body_bytes: int = 2 * 1024 * 1024
    max_elements: int = 1 << 20  # per input tensor
    max_inflight: int = 64
    max_queued: int = 256
    queue_timeout_s: float = 5.0
    body_timeout_s: float = 10.0  # a body not received in full by then is a 408 (a slow client holds no slot)
    # a connection that has not sent a request's headers (or, over gRPC, finished its handshake) by then is closed
    header_timeout_s: float = 10.0
    max_connections: int = 1024  # open HTTP connections at the edge; beyond that new ones are closed at once
    # gRPC: Triton 2.51 took an 8 MiB message; gRPC refuses larger ones with RESOURCE_EXHAUSTED before any parsing
    max_message_bytes: int = 4 * 1024 * 1024
    max_response_bytes: int = 64 * 1024 * 1024
    max_streams_per_connection: int = 128
    max_grpc_rpcs: int = 1024  # RPCs in the gRPC edge at once (beyond the admission bound: RESOURCE_EXHAUSTED)
    upstream_timeout_s: float = 10.0  # a hung model server: callers get 503 within seconds (its hang probe restarts it)
    retry_after_s: int = 1
    max_shadow_inflight: int = 64  # copies to a shadow release queued or running; beyond it a copy is dropped
    shadow_flush_s: float = 0.2  # copies are sent together this often (the shadow batches them)


class RequestRejected(Exception):
    """A request refused at the edge: ``status`` is the HTTP code, ``reason`` the metric label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def invalid(message: str) -> RequestRejected:
    """A 400 ``invalid_request``: the request does not follow the protocol or exceeds a limit (``message`` says
    what was received and what was expected)."""
    return RequestRejected(400, "invalid_request", message)
