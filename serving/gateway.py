"""The validating edge in front of Triton: the Open Inference Protocol (KServe v2) REST endpoints that inferline
serves to callers, and nothing else.

Why it exists: the bundled Triton 2.51 answers some malformed requests with 500, aborts on one request declaring a
huge shape (std::bad_alloc) and segfaults on any JSON body of 4 MiB or more (measured; SECURITY.md), and any queue
policy stalls its dynamic batcher. The gateway refuses what Triton mishandles before it reaches Triton, and bounds the
work in flight:

- bodies over ``max_body_bytes`` get 413, a missing length 411, a compressed body 415;
- inference bodies are checked against the protocol (JSON shape, datatypes, declared shape vs the data or the binary
  tensor sizes, at most ``max_elements`` per input): 400 with what was received and what was expected;
- at most ``max_inflight`` requests run on Triton and ``max_queued`` wait (for at most ``queue_timeout_s``); beyond
  that a request gets 503 ``overloaded`` at once, with ``Retry-After``. A restarting Triton gives 503 too;
- admin APIs (model repository, logging, trace, shared memory, statistics) are not served at the edge (403): they
  stay on Triton's loopback port behind the admin key;
- on shutdown it stops admitting (503) and lets what is in flight finish.

Why Python (aiohttp on uvloop, with ``serving.upstream``'s httptools client to Triton): measured side by side with
a plain nginx proxy and with this allow-list written in nginx's njs (``benchmarks/edge_bench.py``, README "What the
edge costs, and why this design"), the njs design costs half the CPU per request but cannot rebuild a request
faithfully (its ``JSON.parse`` turns INT64 values beyond 2**53 into doubles and cannot see a key named twice) and
has no gRPC side; none of the three designs that check requests reaches 0.9x of direct Triton on 2 cores.

Triton receives only what the edge built itself from what it understood (an allow-list,
``serving.edge_protocol.build_infer_request``), and no caller header reaches Triton: the edge writes the few Triton
needs (an ``Accept-Encoding`` value crashed 2.51's parser through a byte-for-byte edge). Triton's answers are
returned as they are.

This module is the aiohttp application and its routing; each concern it applies lives in a module of its own,
shared with the gRPC edge (``serving.grpc_edge``): the limits and the refusal (``serving.edge_limits``), the
protocol checks (``serving.edge_protocol``), API keys and public models (``serving.edge_auth``), admission and the
slowloris guard (``serving.edge_admission``), TLS (``serving.edge_tls``) and the metrics (``serving.edge_metrics``).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import typing
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from inferline.serving.edge_admission import Admission, GuardedSite
from inferline.serving.edge_auth import EdgeAccess
from inferline.serving.edge_limits import GatewayLimits, RequestRejected, invalid
from inferline.serving.edge_metrics import edge_metrics
from inferline.serving.edge_protocol import HEADER_LENGTH, SERVED_EXTENSIONS, BuiltRequest, build_infer_request
from inferline.serving.edge_route import Choice, Router
from inferline.serving.upstream import UpstreamError, UpstreamPool

if typing.TYPE_CHECKING:
    from inferline.serving.apikeys import ApiKeys
    from inferline.serving.edge_tap import EdgeSampler

__all__ = ["Gateway"]

_RESTRICTED = ("/v2/repository", "/v2/logging", "/v2/trace", "/v2/systemsharedmemory", "/v2/cudasharedmemory")
CONTENT_TYPE = "Content-Type"


def _error(status: int, message: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)


class Gateway:
    """An aiohttp application forwarding the public protocol endpoints to Triton at ``upstream`` (host:port)."""

    def __init__(
        self,
        upstream: str,
        limits: GatewayLimits | None = None,
        registry: CollectorRegistry | None = None,
        repository: Path | None = None,
        api_keys: ApiKeys | None = None,
    ) -> None:
        self.upstream = f"http://{upstream}"
        # API keys and the public pipelines of ``repository`` (serving.edge_auth), shared with the gRPC edge
        self.access = EdgeAccess(api_keys, repository)
        self.limits = limits or GatewayLimits()
        self.registry = registry or CollectorRegistry()
        self.inflight = 0
        self.queued = 0
        self.connections = 0
        self.draining = False
        self.available = True  # False while the supervisor restarts the model server
        self.sampler: EdgeSampler | None = None  # hands answered inferences to the monitor (serving.edge_tap)
        self.slots: asyncio.Semaphore | None = None  # the max_inflight slots (serving.edge_admission)
        self._pool: UpstreamPool | None = None
        self._runner: web.AppRunner | None = None
        self.requests, self.rejected, self.forwarded = edge_metrics(self.registry, self)
        # which release answers while a pipeline is rolled out, and the copies a shadow gets (serving.edge_route)
        self.router = Router(repository, self.registry)
        self.shadow_inflight = 0  # copies queued or running
        self._shadow_queue: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_body_bytes)
        get = self._route("metadata", self._forward_get)
        r = app.router
        r.add_get("/v2", self._route("metadata", self._server_metadata), allow_head=False)
        # Triton's statistics endpoint has the shape of a model's metadata route: refused before that route matches
        r.add_route("*", "/v2/models/stats", self._route("other", self._other))
        for path in (
            "/v2/health/live",
            "/v2/health/ready",
            "/v2/models/{model}",
            "/v2/models/{model}/ready",
            "/v2/models/{model}/versions/{version}",
            "/v2/models/{model}/versions/{version}/ready",
        ):
            r.add_get(path, get, allow_head=False)
        infer = self._route("infer", self._infer)
        r.add_post("/v2/models/{model}/infer", infer)
        r.add_post("/v2/models/{model}/versions/{version}/infer", infer)
        r.add_route("*", "/{tail:.*}", self._route("other", self._other))
        return app

    def _route(
        self, route: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        check = self.access.check_request  # the caller's key and the model named (serving.edge_auth)

        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                check(request)
                response = await handler(request)
            except RequestRejected as exc:
                self.rejected.labels(exc.reason).inc()
                retry = self.limits.retry_after_s if exc.status == 503 else None
                response = _error(exc.status, str(exc), retry)
                if exc.status == 408:  # the rest of the body may still come: this connection carries nothing more
                    response.force_close()
            if response.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="inferline"'
            self.requests.labels(route, str(response.status)).inc()
            return response

        return handle

    async def _other(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith(_RESTRICTED) or path.endswith("/stats") or path.endswith("/config"):
            raise RequestRejected(
                403,
                "restricted",
                f"{request.method} {path[:100]} is an admin API, not served at the edge; use the model server's "
                "loopback port with the admin key",
            )
        raise RequestRejected(
            404 if request.method in ("GET", "POST") else 405,
            "not_found",
            f"{request.method} {path[:100]} is not an endpoint of the inference protocol served here "
            "(see serving/openapi/kserve-v2.yaml)",
        )

    async def _read_body(self, request: web.Request) -> bytes:
        # every Content-Encoding header, not the first: a second one (gzip after identity) would have aiohttp inflate
        # the body behind the check
        for encoding in request.headers.getall("Content-Encoding", ()):
            if encoding.strip().lower() != "identity":
                raise RequestRejected(
                    415,
                    "compressed",
                    f"Content-Encoding {encoding[:30]!r} is not accepted at the edge; send the body uncompressed",
                )
        if request.headers.getall("Transfer-Encoding", ()):
            raise RequestRejected(411, "no_length", "a Content-Length header is required (no chunked bodies)")
        if request.content_length is None:
            raise RequestRejected(411, "no_length", "a Content-Length header is required (no chunked bodies)")
        if request.content_length > self.limits.max_body_bytes:
            raise RequestRejected(
                413,
                "body_too_large",
                f"the body is {request.content_length} bytes; the limit is {self.limits.max_body_bytes} "
                "(GatewayLimits.max_body_bytes): send fewer rows per request",
            )
        try:
            return await asyncio.wait_for(request.read(), self.limits.body_timeout_s)
        except TimeoutError:
            raise RequestRejected(
                408,
                "body_timeout",
                f"the body ({request.content_length} bytes declared) did not arrive within "
                f"{self.limits.body_timeout_s:g}s (GatewayLimits.body_timeout_s); send it at once",
            ) from None

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        body = await self._read_body(request)
        lengths = request.headers.getall(HEADER_LENGTH, ())
        if len(lengths) > 1:
            raise invalid(f"{HEADER_LENGTH} is sent {len(lengths)} times; send it once")
        built = build_infer_request(body, lengths[0] if lengths else None, self.limits)
        # the headers Triton gets are the edge's own: none of the caller's reaches it
        headers = (
            {"Content-Type": "application/json"}
            if built.header_length is None
            else {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(built.header_length)}
        )
        model, version = request.match_info["model"], request.match_info.get("version")
        router = self.router
        choice: Choice | None = None
        path = request.rel_url.raw_path
        if router.routes:  # a rollout: the router addresses the release by version (serving.edge_route)
            header = router.header(model)
            choice = router.choose(model, version, request.headers.get(header) if header else None)
            if choice is not None:
                path = f"/v2/models/{model}/versions/{choice.version}/infer"
        release = router.release_of(model, choice) if version is None else f"{model}:{version}"
        try:
            async with self.admitted():
                response = await self._forward("infer", request, "POST", built.body, headers, path)
        except RequestRejected as exc:  # not admitted, or no answer from the model server: counted, then refused
            if release in router.known and exc.reason == "upstream_unavailable":
                router.observe(model, release, False, time.monotonic() - started)
            raise
        latency = time.monotonic() - started
        if release in router.known:
            router.observe(model, release, response.status == 200, latency)
        answer = response.body if isinstance(response, web.Response) else None
        if response.status != 200 or not isinstance(answer, bytes):
            return response
        length = response.headers.get(HEADER_LENGTH, "")
        answer_length = int(length) if length.isdigit() else None
        if choice is not None and choice.shadow is not None:
            self._start_shadow(model, choice.shadow, built, headers, (answer, answer_length, latency))
        elif self.sampler is not None:
            rate = choice.sample_rate if choice is not None else None
            self.sampler.offer_http(model, built.body, built.header_length, answer, answer_length, latency, rate)
        return response

    def _start_shadow(
        self,
        model: str,
        version: str,
        built: BuiltRequest,
        headers: dict[str, str],
        primary: tuple[bytes, int | None, float],
    ) -> None:
        self.send_shadow(model, version, lambda: self._shadow(model, version, built, headers, primary))

    def send_shadow(self, model: str, version: str, copy: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Queue a copy of an answered request for the shadow release (HTTP and gRPC), off the request path: at
        most ``limits.max_shadow_inflight`` copies queued or running (beyond that, and while draining, the copy is
        dropped and counted). The queue is sent every ``limits.shadow_flush_s`` all at once, so the shadow's
        dynamic batcher runs the copies in batches as it runs the current release's requests: sent one by one,
        each copy was a batch of its own on the shadow's Python-backend model, several times the cost of a row in
        a batch (measured by ``benchmarks/rollout_bench.py``). A copy's latency is measured from its send."""
        if self.draining or self.shadow_inflight >= self.limits.max_shadow_inflight:
            self.router.shadows.labels(model, f"{model}:{version}", "dropped").inc()
            return
        self.shadow_inflight += 1
        self._shadow_queue.append(copy)

    async def _flush_shadows(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.limits.shadow_flush_s)  # the copies' batching interval
            queued, self._shadow_queue = self._shadow_queue, []
            for copy in queued:
                task = loop.create_task(copy())
                self._shadow_tasks.add(task)
                task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(
        self,
        model: str,
        version: str,
        built: BuiltRequest,
        headers: dict[str, str],
        primary: tuple[bytes, int | None, float],
    ) -> None:
        release = f"{model}:{version}"
        started = time.monotonic()
        assert self._pool is not None
        try:
            answer = await self._pool.request(
                "POST", f"/v2/models/{model}/versions/{version}/infer", built.body, headers,
                self.limits.upstream_timeout_s,
            )  # fmt: skip
        except UpstreamError:
            self.router.shadows.labels(model, release, "error").inc()
            return
        finally:
            self.shadow_inflight -= 1
        latency = time.monotonic() - started
        ok = answer.status == 200
        self.router.shadows.labels(model, release, "ok" if ok else "error").inc()
        self.router.observe(model, release, ok, latency)
        if ok and self.sampler is not None:
            length = answer.headers.get(HEADER_LENGTH, "")
            shadow = (answer.body, int(length) if length.isdigit() else None, latency)
            self.sampler.offer_pair("http", model, built.body, built.header_length, (primary, shadow))

    async def _server_metadata(self, request: web.Request) -> web.StreamResponse:
        """Triton's server metadata, advertising only the extensions the edge serves (the admin ones are refused
        here, so a caller that believed the list would be answered 403)."""
        response = await self._forward("metadata", request, "GET", None, {})
        if response.status != 200 or not isinstance(response, web.Response) or response.body is None:
            return response
        try:
            metadata = json.loads(bytes(response.body))  # type: ignore[arg-type]
        except ValueError:
            return response
        if isinstance(metadata, dict) and isinstance(metadata.get("extensions"), list):
            metadata["extensions"] = [e for e in metadata["extensions"] if e in SERVED_EXTENSIONS]
        return web.json_response(metadata)

    async def _forward_get(self, request: web.Request) -> web.StreamResponse:
        return await self._forward("metadata", request, "GET", None, {})

    async def _forward(
        self,
        route: str,
        request: web.Request,
        method: str,
        body: bytes | None,
        headers: dict[str, str],
        path: str | None = None,
    ) -> web.StreamResponse:
        self.forwarded.labels(route).inc()
        # no caller header reaches Triton (2.51 aborts on some values it cannot parse, Accept-Encoding's among them):
        # the edge sends its own few (Host, Content-Length, and what ``headers`` holds); answers come uncompressed
        assert self._pool is not None, "Gateway.start() first"
        try:
            answer = await self._pool.request(
                method, path or request.rel_url.raw_path, body, headers, self.limits.upstream_timeout_s
            )
        except UpstreamError as exc:
            raise RequestRejected(
                503,
                "upstream_unavailable",
                f"the model server did not answer ({type(exc).__name__}); it may be restarting: retry after "
                f"{self.limits.retry_after_s}s",
            ) from exc
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    def admitted(self) -> Admission:
        """``async with gateway.admitted():`` around work on the model server (HTTP and gRPC share the bound)."""
        return Admission(self)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.slots = asyncio.Semaphore(self.limits.max_inflight)
        triton_host, _, triton_port = self.upstream.removeprefix("http://").rpartition(":")
        self._pool = UpstreamPool(
            triton_host, int(triton_port), self.limits.max_inflight + 8, (CONTENT_TYPE, HEADER_LENGTH)
        )
        # lingering_time: after a refusal with the body unread, aiohttp reads the rest for this long before it
        # closes (10 s by default: a slow client would hold the connection that long)
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0, lingering_time=0.5
        )
        await self._runner.setup()
        self.router.start()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_shadows())
        await GuardedSite(self, self._runner, host, port, reuse_address=True, ssl_context=ssl_context).start()

    async def drain(self, timeout_s: float) -> int:
        """Stop admitting (503 ``draining``) and wait up to ``timeout_s`` for the requests already admitted, running
        or queued; returns how many were left when the wait ended (0 when all finished)."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while (self.inflight or self.queued) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # drain polling interval
        return self.inflight + self.queued

    async def stop(self) -> None:
        await self.router.stop()
        if self._flusher is not None:
            self._flusher.cancel()
        self._shadow_queue.clear()
        for task in list(self._shadow_tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._pool is not None:
            self._pool.close()
