"""The monitor's HTTP server: ``Monitor`` behind aiohttp, on a thread and event loop of its own, with the background
thread that ticks it.

Routes (the protocol Prometheus, the report, the edge's sampler and the tests speak): ``GET /metrics`` (Prometheus'
text format), ``/healthz``, ``/v1/status`` (the current snapshot), ``/v1/history`` (the kept snapshots); ``POST
/v1/samples`` and ``/v1/labels`` with ``Authorization: Bearer <ingest key>``; anything else 404 with a JSON error
naming the routes. Errors are JSON ``{"error": ...}``; the body size limit and the read and header timeouts are
``ServerLimits``'.

Libraries: aiohttp serves HTTP; prometheus-client builds the exposition (``monitor.metrics``'s collector).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from inferline.monitor.metrics import MonitorCollector
from inferline.monitor.service import Monitor
from inferline.serving.edge_admission import HeaderDeadline

__all__ = ["INGEST_ROUTES", "MonitorServer", "ServerLimits"]

log = logging.getLogger("inferline.monitor")


@dataclass(frozen=True)
class ServerLimits:
    """What one caller can cost the monitor's HTTP server."""

    max_body_bytes: int = 32 * 1024 * 1024  # a samples post of ~100k fraud rows; larger: 413
    body_timeout_s: float = 30.0  # a body not in by then: 408
    header_timeout_s: float = 10.0  # a connection whose request headers are not in by then is closed
    keepalive_s: float = 75.0  # an idle connection between requests is closed after this


INGEST_ROUTES = ("/v1/samples", "/v1/labels")


def _json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class MonitorServer:
    """``Monitor`` behind HTTP (an aiohttp server on a thread and event loop of its own), with a background thread
    calling ``tick`` every interval.

    ``POST /v1/samples`` and ``/v1/labels`` take ``Authorization: Bearer <ingest_key>`` only (401 otherwise): the
    key ``serving.secrets.monitor_key`` keeps in the serving work directory, which the edge's sampler and
    ``MonitorTap`` send. Without ``ingest_key`` the server makes one of its own (``ingest_key`` attribute): the
    POST routes are never open. Bodies over ``limits.max_body_bytes`` are answered 413 before they are read, a body
    that does not arrive in ``body_timeout_s`` 408, one that is not the JSON expected 400 naming what was received
    and what was expected. The GET routes (``/metrics``, ``/healthz``, ``/v1/status``, ``/v1/history``) are
    open, for Prometheus and the report."""

    def __init__(
        self,
        monitor: Monitor,
        registry: CollectorRegistry | None = None,
        *,
        ingest_key: str | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.monitor = monitor
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(MonitorCollector(monitor))
        self.ingest_key = ingest_key or secrets.token_urlsafe(32)
        self._expected = f"Bearer {self.ingest_key}".encode()
        self.limits = limits or ServerLimits()
        self.refused = Counter(
            "inferline_monitor_requests_refused",
            "Requests the monitor refused, by reason (unauthorized, body_too_large, body_timeout, invalid)",
            ["reason"],
            registry=self.registry,
        )
        self._stop = threading.Event()
        # bound now: the port is known (``url``) and a port in use fails here, before anything starts
        self._socket = socket.create_server((monitor.config.host, monitor.config.port), backlog=128)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host!s}:{port}"

    # --- routes --------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_body_bytes)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/v1/status", self._status)
        app.router.add_get("/v1/history", self._history)
        for route in INGEST_ROUTES:
            app.router.add_post(route, self._ingest)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _status(self, request: web.Request) -> web.Response:
        status = await asyncio.get_running_loop().run_in_executor(None, self.monitor.status)
        return web.json_response(status, dumps=_dumps)

    async def _history(self, request: web.Request) -> web.Response:
        with self.monitor.lock:
            history = list(self.monitor.history)
        return web.json_response(history, dumps=_dumps)

    async def _not_found(self, request: web.Request) -> web.Response:
        return _json_error(
            404,
            f"no route {request.method} {request.path[:100]}; GET /metrics, /healthz, /v1/status, /v1/history; "
            "POST /v1/samples, /v1/labels",
        )

    def _refuse(self, status: int, reason: str, message: str, **headers: str) -> web.Response:
        self.refused.labels(reason).inc()
        return _json_error(status, message, **headers)

    async def _ingest(self, request: web.Request) -> web.Response:
        offered = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(offered, self._expected):
            return self._refuse(
                401,
                "unauthorized",
                f"POST {request.path} needs 'Authorization: Bearer <ingest key>' "
                f"({'a wrong key was sent' if offered else 'none was sent'}): the key is in the serving work "
                "directory (serving.secrets.monitor_key); callers of the edge are not given it",
                **{"WWW-Authenticate": 'Bearer realm="inferline-monitor"'},
            )
        limit = self.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._refuse(
                413,
                "body_too_large",
                f"the body is {request.content_length} bytes; the monitor takes at most {limit} "
                "(ServerLimits.max_body_bytes): post fewer rows per request",
            )
        try:
            raw = await asyncio.wait_for(request.read(), self.limits.body_timeout_s)
        except TimeoutError:
            return self._refuse(
                408, "body_timeout", f"the body did not arrive within {self.limits.body_timeout_s:g}s; send it at once"
            )
        except web.HTTPRequestEntityTooLarge:  # a chunked body that grew past the limit
            return self._refuse(
                413, "body_too_large", f"the body exceeds {limit} bytes (ServerLimits.max_body_bytes): post fewer rows"
            )
        expected = (
            "the samples body serving.tap.sample_payload builds"
            if request.path == INGEST_ROUTES[0]
            else '{"labels": [{"<id column>": ..., "label": ...}, ...]}'
        )
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            return self._refuse(
                400,
                "invalid",
                f"the body is not JSON ({exc}; received {len(raw)} bytes starting {raw[:40]!r}); expected a JSON "
                f"object: {expected}",
            )
        if not isinstance(payload, dict):
            return self._refuse(400, "invalid", f"the body is a JSON {type(payload).__name__}; expected a JSON object")
        ingest = self.monitor.ingest_samples if request.path == INGEST_ROUTES[0] else self.monitor.ingest_labels
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, ingest, payload)
        except (ValueError, KeyError, TypeError) as exc:
            return self._refuse(400, "invalid", f"{type(exc).__name__}: {exc}")
        return web.json_response(result, dumps=_dumps)

    # --- lifecycle -----------------------------------------------------------------------------------------
    def _loop_tick(self) -> None:
        while not self._stop.is_set():
            try:
                self.monitor.tick()
            except Exception:
                log.exception("monitor tick failed")
            self._stop.wait(self.monitor.config.interval_s)

    def _serve(self, ready: threading.Event, failed: list[OSError]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except OSError as exc:  # handed to start(), which raises it
            failed.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _open(self) -> None:
        self._runner = web.AppRunner(
            self.app(), access_log=None, keepalive_timeout=self.limits.keepalive_s, handle_signals=False
        )
        await self._runner.setup()
        handler = self._runner.server
        assert handler is not None
        timeout = self.limits.header_timeout_s
        self._server = await asyncio.get_running_loop().create_server(
            lambda: HeaderDeadline(handler(), timeout), sock=self._socket
        )

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self, ticking: bool = True) -> MonitorServer:
        """Serve HTTP; with ``ticking`` also call ``tick`` every interval (without: the caller ticks)."""
        ready, failed = threading.Event(), list[OSError]()
        http = threading.Thread(target=self._serve, args=(ready, failed), name="monitor-http", daemon=True)
        http.start()
        ready.wait()
        if failed:
            raise failed[0]
        self.threads = [http]
        if ticking:
            self.threads.append(threading.Thread(target=self._loop_tick, name="monitor-tick", daemon=True))
            self.threads[-1].start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        for t in self.threads:
            t.join(timeout=10)
        self._socket.close()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=float)
