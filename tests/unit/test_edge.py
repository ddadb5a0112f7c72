"""The edge as an attacker tries it (issue 17): each case through the gateway of a server started as users start it
(`inferline serve up`), with the exact status, Triton's restart counter unmoved, and a good request answered
afterwards."""

from __future__ import annotations

from typing import Any

from tests.edge_cases import _wait


def test_slow_clients_and_connection_floods_are_bounded() -> None:
    """A client that declares a body and sends it slowly holds no slot for long: 408 after the body timeout, the
    connection closed, and the gateway answers the next caller. Headers sent slowly (slowloris): the connection is
    closed at the header timeout. Beyond the connection bound a new connection is closed at once, and accepted
    again once one closes. The gateway runs in process (its upstream is a closed port: nothing here may reach
    it)."""
    import asyncio
    import socket
    import threading

    from inferline.core.processes import free_port
    from inferline.serving.edge_limits import GatewayLimits
    from inferline.serving.gateway import Gateway

    port = free_port()
    limits = GatewayLimits(body_timeout_s=0.5, header_timeout_s=0.5, max_connections=3)
    gateway = Gateway(f"127.0.0.1:{free_port()}", limits)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(gateway.start("127.0.0.1", port))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b'POST /v2/models/fraud/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"in')
            answer = slow.recv(4096).decode()
            assert answer.startswith("HTTP/1.1 408") and "did not arrive within 0.5s" in answer
            assert slow.recv(4096) == b"", "the connection stays open after a 408"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as next_caller:
            next_caller.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert next_caller.recv(4096).decode().startswith("HTTP/1.1 503")  # its upstream is down, it is not
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slowloris:
            slowloris.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-a: ")
            assert _closed(slowloris), "a connection that never finished its headers stayed open"
        _wait(lambda: gateway.connections == 0)
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        try:
            for conn in held:  # kept alive after an answer: they count
                conn.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                assert conn.recv(4096).startswith(b"HTTP/1.1 503")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
                assert _closed(extra), "a connection beyond the bound was served"
        finally:
            for conn in held:
                conn.close()
        _wait(lambda: gateway.connections == 0)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as again:
            again.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert again.recv(4096).startswith(b"HTTP/1.1 503")
    finally:
        asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()  # its self-pipe (a Unix socket pair) would otherwise be left for the garbage collector


def _closed(conn: Any) -> bool:
    """The peer closed (or reset) the connection: a read returns nothing."""
    try:
        return bool(conn.recv(4096) == b"")
    except ConnectionResetError:
        return True
