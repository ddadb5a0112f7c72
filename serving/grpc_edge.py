"""The gRPC edge: the Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``) served to callers,
checked and bounded like the HTTP gateway, in front of Triton's loopback gRPC port.

Why Python, with ``grpc.aio``: the checks need the protocol model (the model name inside the protobuf message, the
declared shapes against the tensor contents), which a byte-level proxy such as nginx's ``grpc_pass`` cannot see. The
message is parsed once with the protobuf runtime (upb), and Triton receives a message the edge built from the fields
it understood (``build_infer``: an allow-list; any parameter, unknown field or shared-memory region is refused by
name), with none of the caller's metadata; Triton's answer is returned as its bytes.

What a caller gets, by gRPC status code (clients retry UNAVAILABLE only):

- INVALID_ARGUMENT: a malformed model name or version (full matches), an unknown datatype, a negative dimension, a
  declared shape over ``max_elements``, contents that do not match the shape (count or bytes), out-of-range integers,
  raw and typed contents mixed;
- UNAUTHENTICATED: with API keys, no ``authorization: Bearer <key>`` metadata or a key not in the file (health RPCs
  are exempt, like the HTTP probes);
- PERMISSION_DENIED: an inner model or an unknown one, the admin RPCs (model configuration, statistics, the
  repository, shared memory, trace and log settings), shared-memory inputs and outputs, streaming;
- RESOURCE_EXHAUSTED: a message over ``max_message_bytes`` (refused by gRPC itself), or the admission bound spent,
  with ``grpc-retry-pushback-ms`` trailing metadata (gRPC's retry pushback);
- UNAVAILABLE: the model server restarting or the edge draining (retry later or elsewhere).

HTTP and gRPC share one admission bound: they run on the same model server.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from grpc import aio
from tritonclient.grpc import service_pb2

from inferline.serving.edge_limits import RequestRejected, invalid
from inferline.serving.edge_protocol import (
    DATATYPES,
    GRPC_CONTENTS,
    INT_RANGE,
    ITEMSIZE,
    SERVED_EXTENSIONS,
    check_bytes_elements,
    check_element_count,
)
from inferline.serving.edge_route import Choice
from inferline.serving.gateway import Gateway

__all__ = ["GrpcEdge", "build_infer"]

SERVICE = "inference.GRPCInferenceService"
# what a caller may call, and what each request names (so the edge can check the model)
_PUBLIC = {
    "ServerLive": None,
    "ServerReady": None,
    "ServerMetadata": None,
    "ModelReady": service_pb2.ModelReadyRequest,
    "ModelMetadata": service_pb2.ModelMetadataRequest,
    "ModelInfer": service_pb2.ModelInferRequest,
}
_UNAUTHENTICATED = ("ServerLive", "ServerReady")
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
# 503s: a spent admission bound is RESOURCE_EXHAUSTED; a restart or a drain is UNAVAILABLE (retry elsewhere or later)
_EXHAUSTED = ("overloaded",)
# the integer types whose typed field (int32/uint32) is wider than they are: the range is checked here
_NARROW = {t: INT_RANGE[t] for t in ("INT8", "INT16", "UINT8", "UINT16")}
_SHM = "shared_memory_region"


def _known_fields_only(where: str, message: Any) -> None:
    """Refuse a message carrying fields the service does not define (protobuf keeps them as unknown fields)."""
    unknown = UnknownFieldSet(message)
    if len(unknown):
        numbers = sorted({field.field_number for field in unknown})
        raise invalid(
            f"{where} carries protobuf field number(s) {numbers[:5]}, which the inference service does not define; "
            "send a message built from its grpc_service.proto"
        )


def _no_parameters(where: str, parameters: Any) -> None:
    """No parameter is documented over gRPC (the binary extension's are HTTP's): any one is refused by name."""
    for key in parameters:
        raise invalid(
            f"{where} has the parameter {key[:60]!r}, which the edge does not take (no parameter is documented over "
            "gRPC; a shared-memory region or classification is never served)"
        )


def build_infer(request: Any, edge: Gateway, version: str | None = None) -> bytes:
    """The ``ModelInferRequest`` Triton receives, built by the edge from the fields it understood of ``request``:
    the model, an ``id``, each input's name, datatype, shape and contents (typed or raw), the requested outputs by
    name. Unknown fields and any parameter are refused by name (``RequestRejected``), as is a tensor that does not
    follow the protocol or exceeds the limits; the counterpart of ``edge_protocol.build_infer_request``.
    ``version``: the release the router chose (``serving.edge_route``), else the caller's."""
    _known_fields_only("the request", request)
    if not request.inputs:
        raise invalid("the request has no inputs; send one InferInputTensor per input of the pipeline")
    _no_parameters("the request", request.parameters)
    if len(request.id) > 256:
        raise invalid(f"'id' is {len(request.id)} characters; at most 256")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid(
            f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs; send one per input, "
            "in the order of the inputs"
        )
    built = service_pb2.ModelInferRequest(model_name=request.model_name, model_version=version or request.model_version)
    if request.id:
        built.id = request.id
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise invalid(f"inputs[{index}] has no name")
        if tensor.datatype not in DATATYPES:
            raise invalid(
                f"input {name!r} has datatype {tensor.datatype[:20]!r}; expected one of {', '.join(DATATYPES)}"
            )
        if _SHM in tensor.parameters:
            raise RequestRejected(403, "shared_memory", "shared-memory inputs are not served at the edge")
        _no_parameters(f"input {name!r}", tensor.parameters)
        _known_fields_only(f"input {name!r}", tensor)
        _known_fields_only(f"input {name!r}", tensor.contents)
        elements = check_element_count(name, list(tensor.shape), edge.limits)
        contents = tensor.contents
        filled = [f.name for f, _ in contents.ListFields()]
        copy = built.inputs.add(name=name, datatype=tensor.datatype, shape=tensor.shape)
        if raw:
            if filled:
                raise invalid(f"input {name!r} has both raw_input_contents and typed contents; send one of them")
            blob = raw[index]
            if tensor.datatype == "BYTES":
                check_bytes_elements(name, blob, elements)
            elif len(blob) != elements * ITEMSIZE[tensor.datatype]:
                raise invalid(
                    f"input {name!r} is {tensor.datatype} with shape {list(tensor.shape)}: expected "
                    f"{elements * ITEMSIZE[tensor.datatype]} raw bytes, got {len(blob)}"
                )
            continue
        field = GRPC_CONTENTS.get(tensor.datatype)
        if field is None or filled not in ([field], []):
            raise invalid(
                f"input {name!r} is {tensor.datatype}: its data goes in "
                f"{f'contents.{field}' if field else 'raw_input_contents'}, got {filled or 'nothing'}"
            )
        values = getattr(contents, field)
        if len(values) != elements:
            raise invalid(
                f"input {name!r} declares shape {list(tensor.shape)} = {elements} elements but "
                f"contents.{field} holds {len(values)}; make them agree"
            )
        if tensor.datatype in _NARROW and values:
            lo, hi = _NARROW[tensor.datatype]
            if min(values) < lo or max(values) > hi:
                raise invalid(f"input {name!r} is {tensor.datatype}: its values must lie in [{lo}, {hi}]")
        getattr(copy.contents, field).extend(values)
    if raw:
        built.raw_input_contents.extend(raw)
    for output in request.outputs:
        if _SHM in output.parameters:
            raise RequestRejected(403, "shared_memory", "shared-memory outputs are not served at the edge")
        _no_parameters(f"output {output.name!r}", output.parameters)
        _known_fields_only(f"output {output.name!r}", output)
        built.outputs.add(name=output.name)
    return bytes(built.SerializeToString())


class GrpcEdge:
    """A ``grpc.aio`` server forwarding the public RPCs of the inference service to Triton's gRPC ``upstream``,
    with the checks, keys and admission bound of ``gateway`` (shared with the HTTP edge)."""

    def __init__(self, gateway: Gateway, upstream: str) -> None:
        self.gateway = gateway
        self.access = gateway.access  # API keys and public models, as the HTTP edge checks them (serving.edge_auth)
        self.upstream = upstream
        self._server: aio.Server | None = None
        self._channel: aio.Channel | None = None
        self._calls: dict[str, Any] = {}

    def _options(self) -> list[tuple[str, Any]]:
        limits = self.gateway.limits
        return [
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_response_bytes),
            ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
            # a connection that has not finished its HTTP/2 (and TLS) handshake by then is closed
            ("grpc.server_handshake_timeout_ms", int(limits.header_timeout_s * 1000)),
            ("grpc.so_reuseport", 0),
        ]

    async def start(self, host: str, port: int, credentials: grpc.ServerCredentials | None = None) -> int:
        limits = self.gateway.limits
        self._channel = aio.insecure_channel(
            self.upstream,
            options=[
                ("grpc.max_receive_message_length", limits.max_response_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                # Triton on loopback, restarted by the supervisor within seconds: reconnect within 0.1-1 s, not
                # gRPC's default backoff (1 s growing to 120 s), which kept the gRPC edge answering UNAVAILABLE for
                # seconds after the restarted server was ready (found by tests/system/test_rollout.py)
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        for method in _PUBLIC:
            self._calls[method] = self._channel.unary_unary(f"/{SERVICE}/{method}")
        self._server = aio.server(options=self._options(), maximum_concurrent_rpcs=limits.max_grpc_rpcs)
        self._server.add_generic_rpc_handlers((_Handlers(self),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        bound = (
            self._server.add_secure_port(address, credentials)
            if credentials is not None
            else self._server.add_insecure_port(address)
        )
        await self._server.start()
        return bound

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._server is not None:
            await self._server.stop(grace_s)
        if self._channel is not None:
            await self._channel.close()

    async def call(self, method: str, request: bytes, context: aio.ServicerContext) -> bytes:
        g, access = self.gateway, self.access
        route = "grpc_infer" if method == "ModelInfer" else "grpc_metadata"
        choice: Choice | None = None
        try:
            if access.api_keys is not None and method not in _UNAUTHENTICATED:
                metadata = dict(context.invocation_metadata() or ())
                access.authenticate(str(metadata.get("authorization", "")))
            message_type = _PUBLIC[method]
            if message_type is None:
                request = b""  # ServerLive, ServerReady, ServerMetadata: their requests have no fields
            else:
                try:
                    message = message_type.FromString(request)
                except DecodeError as exc:  # found by the byte-level fuzzer (tests/system/test_fuzz.py): was UNKNOWN
                    raise invalid(
                        f"the request is not a valid {message_type.DESCRIPTOR.name} protobuf message ({exc}); "
                        "send one built by a gRPC client of the inference service"
                    ) from None
                if method == "ModelInfer":
                    access.check_model(message.model_name, message.model_version or None)
                    choice = self._choose(message, context) if g.router.routes else None
                    # what Triton receives: the edge's own message (addressed to the release the router chose)
                    request = build_infer(message, g, choice.version if choice is not None else None)
                else:
                    access.check_model(message.name, message.version or None)
                    request = bytes(message_type(name=message.name, version=message.version).SerializeToString())
            if method == "ModelInfer":
                started = time.monotonic()
                model, version = message.model_name, message.model_version or None
                release = g.router.release_of(model, choice) if version is None else f"{model}:{version}"
                try:
                    async with g.admitted():
                        answer = await self._forward(method, request, context)
                except (RequestRejected, aio.AioRpcError) as exc:  # counted when the model server failed it
                    failed = not isinstance(exc, RequestRejected) or exc.reason == "upstream_unavailable"
                    if failed and release in g.router.known:
                        g.router.observe(model, release, False, time.monotonic() - started)
                    raise
                latency = time.monotonic() - started
                if release in g.router.known:
                    g.router.observe(model, release, True, latency)
                if choice is not None and choice.shadow is not None:
                    self._start_shadow(model, choice.shadow, message, (answer, None, latency))
                elif g.sampler is not None:
                    rate = choice.sample_rate if choice is not None else None
                    g.sampler.offer_grpc(model, request, answer, latency, rate)
            else:
                answer = await self._forward(method, request, context)
            if method == "ServerMetadata":
                answer = _served_extensions(answer)
        except RequestRejected as exc:
            g.rejected.labels(exc.reason).inc()
            code = _CODES.get(exc.status)
            if code is None:  # a 503
                code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.reason in _EXHAUSTED else grpc.StatusCode.UNAVAILABLE
                context.set_trailing_metadata((("grpc-retry-pushback-ms", str(g.limits.retry_after_s * 1000)),))
            g.requests.labels(route, code.name).inc()
            await context.abort(code, str(exc))
        except aio.AioRpcError as exc:  # Triton's own refusal (a missing input, ...), passed on as it is
            g.requests.labels(route, exc.code().name).inc()
            await context.abort(exc.code(), exc.details() or "")
        g.requests.labels(route, "OK").inc()
        return answer

    def _choose(self, message: Any, context: aio.ServicerContext) -> Choice | None:
        """The router's choice for a ModelInfer (``serving.edge_route``); the sticky key is a metadata entry."""
        router = self.gateway.router
        header = router.header(message.model_name)
        key = None
        if header is not None:
            key = dict(context.invocation_metadata() or ()).get(header)
        return router.choose(message.model_name, message.model_version or None, key)

    def _start_shadow(self, model: str, version: str, message: Any, primary: tuple[bytes, None, float]) -> None:
        """A copy of an answered ModelInfer for the shadow release, queued at the edge (``Gateway.send_shadow``:
        the same bound, batching and counters as over HTTP; the pair goes to the monitor)."""
        request = build_infer(message, self.gateway, version)
        self.gateway.send_shadow(model, version, lambda: self._shadow(model, version, request, primary))

    async def _shadow(self, model: str, version: str, request: bytes, primary: tuple[bytes, None, float]) -> None:
        g, release = self.gateway, f"{model}:{version}"
        started = time.monotonic()
        try:
            answer = bytes(await self._calls["ModelInfer"](request, timeout=g.limits.upstream_timeout_s))
        except aio.AioRpcError:
            g.router.shadows.labels(model, release, "error").inc()
            g.router.observe(model, release, False, time.monotonic() - started)
            return
        finally:
            g.shadow_inflight -= 1
        latency = time.monotonic() - started
        g.router.shadows.labels(model, release, "ok").inc()
        g.router.observe(model, release, True, latency)
        if g.sampler is not None:
            g.sampler.offer_pair("grpc", model, request, None, (primary, (answer, None, latency)))

    async def _forward(self, method: str, request: bytes, context: aio.ServicerContext) -> bytes:
        limits = self.gateway.limits
        remaining = context.time_remaining()
        timeout = limits.upstream_timeout_s if remaining is None else min(remaining, limits.upstream_timeout_s)
        self.gateway.forwarded.labels("grpc").inc()
        try:
            return bytes(await self._calls[method](request, timeout=timeout))
        except aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not (
                remaining is not None and remaining <= limits.upstream_timeout_s
            ):
                raise RequestRejected(
                    503,
                    "upstream_unavailable",
                    f"the model server did not answer ({exc.code().name}); it may be restarting: retry after "
                    f"{limits.retry_after_s}s",
                ) from exc
            raise


def _served_extensions(answer: bytes) -> bytes:
    """Server metadata advertising only the extensions the edge serves (like ``GET /v2`` over HTTP)."""
    metadata = service_pb2.ServerMetadataResponse.FromString(answer)
    kept = [e for e in metadata.extensions if e in SERVED_EXTENSIONS]
    del metadata.extensions[:]
    metadata.extensions.extend(kept)
    return bytes(metadata.SerializeToString())


class _Handlers(grpc.GenericRpcHandler):
    def __init__(self, edge: GrpcEdge) -> None:
        self.edge = edge

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        service, _, method = str(details.method).lstrip("/").partition("/")
        if service != SERVICE:
            return None  # UNIMPLEMENTED
        if method in _PUBLIC:
            return grpc.unary_unary_rpc_method_handler(self._public(method))
        if method == "ModelStreamInfer":
            return grpc.stream_stream_rpc_method_handler(_refused(method))
        return grpc.unary_unary_rpc_method_handler(_refused(method))

    def _public(self, method: str) -> Callable[[bytes, aio.ServicerContext], Awaitable[bytes]]:
        async def handle(request: bytes, context: aio.ServicerContext) -> bytes:
            return await self.edge.call(method, request, context)

        return handle


def _refused(method: str) -> Callable[[Any, aio.ServicerContext], Awaitable[bytes]]:
    async def refuse(request: Any, context: aio.ServicerContext) -> bytes:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{method} is not served at the edge (admin, statistics and streaming RPCs stay on the model server's "
            "loopback port, behind the admin key)",
        )
        raise AssertionError("abort raises")

    return refuse
