"""Admission at the edge: how much work reaches the model server, and how long a connection may hold the edge
before it has asked for anything.

- ``Admission``: at most ``max_inflight`` requests run on the model server and ``max_queued`` wait (for at most
  ``queue_timeout_s``); beyond that a request gets 503 ``overloaded`` at once. A draining edge or a restarting
  model server gives 503 too. The HTTP and gRPC edges share the bound (``Gateway.admitted``).
- ``GuardedSite``: aiohttp's TCP site with at most ``max_connections`` open connections and a header deadline.
- ``HeaderDeadline``: the slowloris guard, a connection whose first request's headers are not in by the deadline
  is closed (aiohttp has none); the monitor's server uses it too.

Why here and not in aiohttp's handler: a refusal must cost no slot, no task and no timer on the request path (a
free slot is taken at once), and a connection that never sends headers never reaches aiohttp's handler.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Callable
from typing import Any

from aiohttp import web

from inferline.serving.edge_limits import RequestRejected

if typing.TYPE_CHECKING:
    from inferline.serving.gateway import Gateway

__all__ = ["Admission", "GuardedSite", "HeaderDeadline"]


class Admission:
    """At most ``max_inflight`` requests on the model server and ``max_queued`` waiting; the rest get 503 at once."""

    def __init__(self, gateway: Gateway) -> None:
        self.g = gateway

    async def __aenter__(self) -> None:
        g, limits = self.g, self.g.limits
        assert g.slots is not None
        if g.draining:
            raise RequestRejected(503, "draining", "the server is shutting down; retry on another replica or later")
        if not g.available:
            raise RequestRejected(
                503, "restarting", f"the model server is restarting; retry after {limits.retry_after_s}s"
            )
        if g.slots.locked() and g.queued >= limits.max_queued:
            raise RequestRejected(
                503,
                "overloaded",
                f"overloaded: {g.inflight} requests running and {g.queued} waiting (limits {limits.max_inflight} "
                f"and {limits.max_queued}); retry after {limits.retry_after_s}s with backoff",
            )
        if not g.slots.locked():  # a free slot: taken at once (no timer, no task)
            await g.slots.acquire()
            g.inflight += 1
            return
        g.queued += 1
        try:
            await asyncio.wait_for(g.slots.acquire(), limits.queue_timeout_s)
        except TimeoutError:
            raise RequestRejected(
                503, "overloaded", f"overloaded: waited {limits.queue_timeout_s}s for a slot; retry with backoff"
            ) from None
        finally:
            g.queued -= 1
        g.inflight += 1

    async def __aexit__(self, *exc: object) -> None:
        g = self.g
        assert g.slots is not None
        g.inflight -= 1
        g.slots.release()


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site with two bounds aiohttp lacks: at most ``max_connections`` open connections (beyond that
    a new one is closed at once, so a flood of idle connections costs a socket each, briefly) and a header read
    timeout (a connection whose first request's headers are not in by ``header_timeout_s`` is closed: slowloris).
    The TLS handshake is bounded by the same timeout."""

    def __init__(self, gateway: Gateway, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gateway = gateway

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        limits = self.gateway.limits
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Guarded(self.gateway, server()),
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=limits.header_timeout_s if self._ssl_context else None,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )


class HeaderDeadline(asyncio.Protocol):
    """An aiohttp (or any asyncio) connection handler behind a header deadline, which aiohttp lacks: a connection
    whose first request's headers are not complete ``timeout_s`` after it opened is closed (slowloris);
    ``on_timeout`` is called when that happens. The edge and the monitor's server both use it."""

    def __init__(
        self, handler: asyncio.Protocol, timeout_s: float, on_timeout: Callable[[], object] | None = None
    ) -> None:
        self.handler, self.timeout_s, self.on_timeout = handler, timeout_s, on_timeout
        self.transport: asyncio.Transport | None = None
        self.headers_done = False
        self.tail = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._deadline)
        self.handler.connection_made(transport)

    def _deadline(self) -> None:
        if not self.headers_done and self.transport is not None:
            if self.on_timeout is not None:
                self.on_timeout()
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if not self.headers_done:
            seen = self.tail + data
            if b"\r\n\r\n" in seen:
                self.headers_done = True
                if self.timer is not None:
                    self.timer.cancel()
            else:
                self.tail = seen[-3:]
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self.handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()


class _Guarded(HeaderDeadline):
    """One edge connection: aiohttp's handler behind the header deadline and the edge's connection count."""

    def __init__(self, gateway: Gateway, handler: asyncio.Protocol) -> None:
        super().__init__(
            handler, gateway.limits.header_timeout_s, lambda: gateway.rejected.labels("header_timeout").inc()
        )
        self.gateway = gateway
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        g = self.gateway
        if g.connections >= g.limits.max_connections:
            g.rejected.labels("too_many_connections").inc()
            transport.abort()  # type: ignore[attr-defined]
            return
        self.admitted = True
        g.connections += 1
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.gateway.connections -= 1
        super().connection_lost(exc)
