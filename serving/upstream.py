"""The edge's HTTP/1.1 client to Triton's loopback port: a pool of keep-alive connections, each an asyncio protocol
whose responses are parsed by ``httptools`` (llhttp, the parser uvicorn uses).

Why not aiohttp's client: the edge is the per-request Python cost of the stack, and aiohttp's ``ClientSession``
builds a request object, a response object, a timer task and its tracing hooks around every call; measured in
``benchmarks/edge_bench.py`` it was the largest single part of the edge's CPU per request. The edge talks to one
server it started itself, over loopback, with bodies it wrote itself, so it needs none of that: this client writes
the request line and the few headers the edge chose, and hands back the status, the headers the edge keeps and the
body.

What it guarantees: one request at a time per connection; a connection whose answer did not come complete (a
timeout, a reset, a parse error) is closed, never reused; at most ``size`` connections are kept idle; a request
that finds no idle connection opens one. Errors come as ``UpstreamError`` (the edge answers 503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import httptools

__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse"]


class UpstreamError(ConnectionError):
    """Triton did not answer completely: it refused the connection, reset it, timed out or sent what is not HTTP."""


class UpstreamResponse:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``exchange`` sends one request and resolves with its response."""

    def __init__(self, keep: frozenset[bytes]) -> None:
        self.keep = keep
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[UpstreamResponse] | None = None
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.broken = False

    # ---- asyncio protocol ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"the model server's answer is not HTTP ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        self._fail(UpstreamError(f"the model server closed the connection ({exc or 'EOF'})"))

    # ---- httptools callbacks ----
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in self.keep:
            self.headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if not self.parser.should_keep_alive():
                self.broken = True
            waiter.set_result(UpstreamResponse(self.parser.get_status_code(), self.headers, b"".join(self.body)))

    def _fail(self, error: Exception) -> None:
        self.broken = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def exchange(self, head: bytes, body: bytes | None) -> asyncio.Future[UpstreamResponse]:
        assert self.transport is not None
        self.headers, self.body = {}, []
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.writelines((head, body) if body else (head,))
        return self.waiter

    def close(self) -> None:
        self.broken = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Keep-alive connections to ``host:port``; ``request`` is one HTTP/1.1 exchange with a deadline."""

    def __init__(self, host: str, port: int, size: int, keep_headers: Iterable[str]) -> None:
        self.host, self.port, self.size = host, port, size
        self.keep = frozenset(h.lower().encode() for h in keep_headers)
        self.idle: list[_Connection] = []
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def _connection(self) -> _Connection:
        while self.idle:
            connection = self.idle.pop()
            if not connection.broken:
                return connection
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(lambda: _Connection(self.keep), self.host, self.port)
        except OSError as exc:
            raise UpstreamError(f"cannot connect to the model server at {self.host}:{self.port} ({exc})") from exc
        return protocol

    async def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout_s: float
    ) -> UpstreamResponse:
        connection = await self._connection()
        lines = [f"{method} {path} HTTP/1.1\r\n".encode(), self._host_header]
        lines.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body) if body is not None else b"\r\n")
        waiter = connection.exchange(b"".join(lines), body)
        timer = asyncio.get_running_loop().call_later(
            timeout_s, connection._fail, UpstreamError(f"the model server did not answer within {timeout_s:g}s")
        )
        try:
            response = await waiter
        except BaseException:  # a timeout, a reset, or the caller went away (cancelled): never reused
            connection.close()
            raise
        finally:
            timer.cancel()
        if connection.broken or len(self.idle) >= self.size:
            connection.close()
        else:
            self.idle.append(connection)
        return response

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()
