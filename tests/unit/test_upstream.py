"""The edge's keep-alive client to Triton (``serving.upstream``) against a real HTTP/1.1 server on loopback that the
test controls: answers are parsed, connections reused, and a connection whose answer did not come complete (a
timeout, a reset, garbage) is closed and never reused."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from inferline.serving.upstream import UpstreamError, UpstreamPool

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(behaviour: Behaviour) -> tuple[asyncio.Server, int, list[int]]:
    """A server whose connections run ``behaviour``; the list counts the connections it accepted."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await behaviour(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], accepted


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    return head + await reader.readexactly(length)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive: answer each request with its own body, and a header the client is told to keep."""
    while True:
        try:
            request = await _read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        body = request.partition(b"\r\n\r\n")[2]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Other: 1\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()


def test_answers_are_parsed_and_connections_kept_alive() -> None:
    async def scenario() -> None:
        server, port, accepted = await _serve(_echo)
        pool = UpstreamPool("127.0.0.1", port, size=4, keep_headers=("Content-Type",))
        try:
            for i in range(5):
                answer = await pool.request("POST", "/v2/models/m/infer", b'{"n":%d}' % i, {}, 5.0)
                assert (answer.status, answer.body) == (200, b'{"n":%d}' % i)
                assert answer.headers == {"Content-Type": "application/json"}  # only the kept ones
            # five requests one after the other: one connection
            assert len(accepted) == 1
            many = await asyncio.gather(*(pool.request("GET", "/v2", None, {}, 5.0) for _ in range(6)))
            assert all(a.status == 200 and a.body == b"" for a in many)
            assert len(pool.idle) <= 4  # at most `size` idle connections are kept
        finally:
            pool.close()
            server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("fault", ["reset mid-answer", "no answer", "not HTTP", "refused"])
def test_an_incomplete_answer_is_an_error_and_its_connection_is_not_reused(fault: str) -> None:
    async def scenario() -> None:
        stop = asyncio.Event()

        async def faulty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await _read_request(reader)
            if fault == "reset mid-answer":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                await writer.drain()
                writer.transport.abort()
            elif fault == "not HTTP":
                writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
                await writer.drain()
            await stop.wait()  # "no answer": hold the connection open until the test ends

        server, port, _ = await _serve(faulty)
        if fault == "refused":
            server.close()
            await server.wait_closed()
        pool = UpstreamPool("127.0.0.1", port, size=4, keep_headers=())
        try:
            with pytest.raises(UpstreamError):
                await pool.request("POST", "/x", b"{}", {}, 0.5)
            assert pool.idle == []  # the broken connection was closed, not kept
        finally:
            stop.set()
            pool.close()
            server.close()

    asyncio.run(scenario())
