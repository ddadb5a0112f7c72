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

Triton receives only what the edge built itself from what it understood (an allow-list, ``build_infer_request``):
the inputs (name, datatype, shape, data or binary data), the requested outputs by name, an ``id`` and the
parameters inferline documents (``binary_data_output``, ``binary_data_size``, ``binary_data``). Any other field or
parameter is a 400 that names it, and no caller header reaches Triton: the edge writes the few Triton needs. That
closes by construction the requests that crashed Triton 2.51 through a byte-for-byte edge (an output's
``classification`` parameter dividing by zero, an ``Accept-Encoding`` value its parser aborts on, a shared-memory
region named in an output), and the classes nobody has found yet. Triton's answers are returned as they are.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import ssl
import struct
import sys
import time
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from inferline.serving.apikeys import ApiKeys
from inferline.serving.upstream import UpstreamError, UpstreamPool

if typing.TYPE_CHECKING:
    from inferline.serving.edge_tap import EdgeSampler

__all__ = [
    "GRPC_CONTENTS",
    "SERVED_EXTENSIONS",
    "BuiltRequest",
    "Gateway",
    "GatewayLimits",
    "HeaderDeadline",
    "ReloadingTls",
    "RequestRejected",
    "build_infer_request",
    "check_bytes_elements",
    "check_element_count",
    "parse_json",
    "tls_context",
]

# element size in bytes of each fixed-size datatype of the protocol; BYTES is length-prefixed
ITEMSIZE = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
}
DATATYPES = (*ITEMSIZE, "BYTES")
# the typed contents field of a gRPC InferTensorContents that carries each datatype (FP16 travels as raw bytes only)
GRPC_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_INT_RANGE = {
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")  # used with fullmatch: '$' would pass 'fraud\n'
_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() takes '²', which int() refuses
_RESTRICTED = ("/v2/repository", "/v2/logging", "/v2/trace", "/v2/systemsharedmemory", "/v2/cudasharedmemory")
HEADER_LENGTH = "Inference-Header-Content-Length"
_UNAUTHENTICATED = ("/v2/health/live", "/v2/health/ready")  # probes (a load balancer's, Kubernetes') need no key
# the protocol extensions a caller can use through the edge (GET /v2 lists only these)
SERVED_EXTENSIONS = ("binary_tensor_data", "parameters")  # classification: its parameter is not taken (SIGFPE)
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
CONTENT_TYPE = "Content-Type"


@dataclass(frozen=True)
class GatewayLimits:
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


class RequestRejected(Exception):
    """A request refused at the edge: ``status`` is the HTTP code, ``reason`` the metric label."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def _invalid(message: str) -> RequestRejected:
    return RequestRejected(400, "invalid_request", message)


def _flatten(data: Any, depth: int = 0) -> list[Any]:
    """The elements of a (nested) JSON list in row-major order."""
    if depth > 32:
        raise _invalid("input 'data' is nested more than 32 levels deep; send a flat list in row-major order")
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item, depth + 1) if isinstance(item, list) else [item])
    return out


_FLOAT_MAX = {"FP16": 65504.0, "FP32": 3.4028234663852886e38, "FP64": sys.float_info.max}


def _element_ok(datatype: str) -> Callable[[Any], bool]:
    """Whether one JSON element fits ``datatype``. ``type(v) is int`` leaves out bools; a float comparison is
    False for NaN and out of range for Inf, and Python compares a huge integer literal with a float exactly (no
    overflow: 1 followed by 400 zeros is refused, never a 500)."""
    if datatype == "BOOL":
        return lambda v: type(v) is bool
    if datatype == "BYTES":
        return lambda v: type(v) is str
    if datatype in _INT_RANGE:
        lo, hi = _INT_RANGE[datatype]
        return lambda v: type(v) is int and lo <= v <= hi
    top = _FLOAT_MAX[datatype]  # FP16/32/64: finite JSON numbers within the type's range (NaN, Inf: binary)
    return lambda v: (type(v) is float or type(v) is int) and -top <= v <= top


_ELEMENT_OK = {datatype: _element_ok(datatype) for datatype in (*_INT_RANGE, *_FLOAT_MAX, "BOOL", "BYTES")}


def _check_elements(name: str, datatype: str, values: list[Any]) -> None:
    ok = _ELEMENT_OK[datatype]
    if all(map(ok, values)):
        return
    value = next(v for v in values if not ok(v))
    shown = json.dumps(value)[:40] if not isinstance(value, int) or abs(value) < 10**40 else f"{str(value)[:20]}..."
    raise _invalid(f"input {name!r} is {datatype} but holds {shown} ({type(value).__name__}); send {_EXPECT[datatype]}")


_EXPECT = {
    "BOOL": "true/false",
    "BYTES": "JSON strings (or the binary extension)",
    "FP16": "finite JSON numbers within +-65504",
    "FP32": "finite JSON numbers within +-3.4e38",
    "FP64": "finite JSON numbers within +-1.8e308",
} | {t: f"integers in [{lo}, {hi}]" for t, (lo, hi) in _INT_RANGE.items()}


def check_bytes_elements(name: str, blob: bytes, count: int) -> None:
    """BYTES in the binary extension: ``count`` elements, each a 4-byte little-endian length and the bytes."""
    offset = seen = 0
    while seen < count and offset + 4 <= len(blob):
        (length,) = struct.unpack_from("<I", blob, offset)
        offset += 4 + length
        seen += 1
    if seen != count or offset != len(blob):
        raise _invalid(
            f"input {name!r}: its {len(blob)} binary bytes do not hold exactly {count} length-prefixed BYTES "
            "elements (4-byte little-endian length, then the bytes, per element)"
        )


# The parameters inferline documents, per place, and what each accepts. Nothing else reaches Triton: 2.51 mishandles
# several of its own (an output's `classification` of 0 divides by zero: SIGFPE; a `shared_memory_region` reads
# server memory), and an allow-list also closes the ones nobody has found yet.
def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


REQUEST_PARAMETERS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "binary_data_output": ("a boolean", _is_bool),  # every output in the binary extension
}
INPUT_PARAMETERS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "binary_data_size": ("a non-negative integer", _uint),  # the tensor's bytes in the binary extension
}
OUTPUT_PARAMETERS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "binary_data": ("a boolean", _is_bool),  # this output in the binary extension
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
INPUT_FIELDS = ("name", "datatype", "shape", "parameters", "data")
OUTPUT_FIELDS = ("name", "parameters")
_MAX_ID = 256


def _allowed_fields(where: str, obj: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in obj:
        if key not in allowed:
            raise _invalid(
                f"{where} has the field {key[:60]!r}, which the edge does not take; allowed: {', '.join(allowed)} "
                "(serving/openapi/kserve-v2.yaml)"
            )


def _parameters(
    where: str, parameters: Any, allowed: dict[str, tuple[str, Callable[[Any], bool]]]
) -> dict[str, Any] | None:
    """The documented parameters of one place, checked; any other is refused by name."""
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise _invalid(f"{where} 'parameters' must be a JSON object, got {type(parameters).__name__}")
    for key, value in parameters.items():
        if key not in allowed:
            documented = ", ".join(allowed) or "none"
            raise _invalid(
                f"{where} has the parameter {key[:60]!r}, which the edge does not take; documented here: {documented}"
            )
        expected, valid = allowed[key]
        if not valid(value):
            raise _invalid(f"{where} parameter {key!r} must be {expected}, got {json.dumps(value)[:60]}")
    return parameters


def check_element_count(name: str, shape: list[int], limits: GatewayLimits) -> int:
    """The element count of a declared shape, refused when a dimension is negative or the count is over
    ``max_elements`` (Triton 2.51 allocates what an HTTP request declares before it looks at the data)."""
    if any(d < 0 for d in shape):
        raise _invalid(f"input {name!r} has a negative dimension in shape {list(shape)}")
    elements = math.prod(shape)
    if elements > limits.max_elements:
        raise _invalid(
            f"input {name!r} declares shape {list(shape)} = {elements} elements; the limit is {limits.max_elements} "
            "per input (GatewayLimits.max_elements); split the request"
        )
    return elements


def _input(index: int, tensor: Any, limits: GatewayLimits, binary: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """One input tensor checked and rebuilt from its documented fields; and the offset in the binary section
    after it."""
    if not isinstance(tensor, dict):
        raise _invalid(f"inputs[{index}] must be a JSON object, got {type(tensor).__name__}")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"inputs[{index}] needs a non-empty string 'name', got {name!r}"[:200])
    if not _NAME.fullmatch(name):
        raise _invalid(f"inputs[{index}] has the name {name[:60]!r}: letters, digits, '_', '-' and '.' only")
    _allowed_fields(f"input {name!r}", tensor, INPUT_FIELDS)
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise _invalid(f"input {name!r} has datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"[:300])
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise _invalid(f"input {name!r} needs 'shape' as a list of integers, got {shape!r}"[:200])
    elements = check_element_count(name, shape, limits)
    parameters = _parameters(f"input {name!r}", tensor.get("parameters"), INPUT_PARAMETERS)
    rebuilt: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    size = (parameters or {}).get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise _invalid(f"input {name!r} has both 'data' and binary_data_size; send one of them")
        if offset + size > len(binary):
            raise _invalid(
                f"input {name!r} declares {size} binary bytes but only {len(binary) - offset} remain after the "
                f"JSON header ({HEADER_LENGTH} and the body disagree)"
            )
        if datatype == "BYTES":
            check_bytes_elements(name, binary[offset : offset + size], elements)
        elif size != elements * ITEMSIZE[datatype]:
            raise _invalid(
                f"input {name!r} is {datatype} with shape {shape}: expected {elements * ITEMSIZE[datatype]} binary "
                f"bytes, got binary_data_size {size}"
            )
        rebuilt["parameters"] = {"binary_data_size": size}
        return rebuilt, offset + size
    if "data" not in tensor:
        raise _invalid(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    if not isinstance(tensor["data"], list):
        raise _invalid(f"input {name!r}: 'data' must be a list (row-major), got {type(tensor['data']).__name__}")
    data = tensor["data"]
    values = _flatten(data) if any(type(v) is list for v in data) else data
    if len(values) != elements:
        raise _invalid(
            f"input {name!r} declares shape {shape} = {elements} elements but 'data' holds {len(values)}; "
            "make them agree"
        )
    _check_elements(name, datatype, values)
    rebuilt["data"] = values  # flat, row-major: what the shape says
    return rebuilt, offset


class DuplicateKey(ValueError):
    """A JSON object names one key twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def parse_json(raw: bytes) -> Any:
    """A request body's JSON, as strictly as the server behind the edge must see it: UTF-8 only (``json.loads`` of
    bytes would also take UTF-16 and UTF-32, which Triton answers with 500), and no key twice in any object at any
    depth (the edge and Triton would each take a different copy: the edge the last, Triton the first, so a checked
    body could carry an unchecked one)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(
            f"the request body is not UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 4]!r}); send JSON "
            "encoded as UTF-8"
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except DuplicateKey as exc:
        raise _invalid(
            f"the request body names the key {str(exc)[:60]!r} twice in one object; send each key once"
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = str(exc)[:120]
        raise _invalid(f"the request body is not valid JSON ({reason}); send an inference request object") from None


@dataclass(frozen=True)
class BuiltRequest:
    """What the edge sends Triton for one inference: a body it wrote itself and, with binary tensors, the length
    of its JSON header."""

    body: bytes
    header_length: int | None


def build_infer_request(body: bytes, header_length: str | None, limits: GatewayLimits) -> BuiltRequest:
    """The request Triton receives, built by the edge from what it understood of ``body``: the inputs (name,
    datatype, shape, data or binary data), the requested outputs by name, an ``id`` and the documented
    parameters. Anything else (a field, a parameter, a key twice) is refused (``RequestRejected``, 400) by name,
    as is a body that does not follow the protocol or exceeds the limits. The binary section is passed on as it
    came, once every tensor's bytes in it were accounted for."""
    json_part, binary = body, b""
    if header_length is not None:
        if not _DIGITS.fullmatch(header_length) or int(header_length) > len(body):
            raise _invalid(
                f"{HEADER_LENGTH} is {header_length[:30]!r}; expected the JSON header's byte length, "
                f"at most the body's {len(body)} bytes"
            )
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    request = parse_json(json_part)
    if not isinstance(request, dict):
        raise _invalid(f"the request body must be a JSON object, got {type(request).__name__}")
    if _ESCAPED_SURROGATE.search(json_part):  # Python's parser takes lone surrogates, Triton's answers 500
        try:
            json.dumps(request, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid(
                "the request holds a lone UTF-16 surrogate escape (\\ud800-\\udfff); send valid Unicode"
            ) from None
    _allowed_fields("the request", request, REQUEST_FIELDS)
    rebuilt: dict[str, Any] = {}
    if "id" in request:
        request_id = request["id"]
        if not isinstance(request_id, str) or len(request_id) > _MAX_ID or _CONTROL.search(request_id):
            raise _invalid(f"'id' must be a string of at most {_MAX_ID} printable characters, got {request_id!r}"[:200])
        rebuilt["id"] = request_id
    parameters = _parameters("the request", request.get("parameters"), REQUEST_PARAMETERS)
    if parameters:
        rebuilt["parameters"] = parameters
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _invalid("'inputs' must be a non-empty list of input tensors {name, shape, datatype, data}")
    offset = 0
    tensors = []
    for index, tensor in enumerate(inputs):
        built, offset = _input(index, tensor, limits, binary, offset)
        tensors.append(built)
    if offset != len(binary):
        raise _invalid(
            f"the body carries {len(binary)} binary bytes after the JSON header but the inputs declare {offset}"
        )
    rebuilt["inputs"] = tensors
    if "outputs" in request:
        outputs = request["outputs"]
        if not isinstance(outputs, list):
            raise _invalid(f"'outputs' must be a list, got {type(outputs).__name__}")
        wanted = []
        for index, output in enumerate(outputs):
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise _invalid(f"outputs[{index}] must be an object with a string 'name'")
            name = output["name"]
            if not _NAME.fullmatch(name):
                raise _invalid(f"outputs[{index}] has the name {name[:60]!r}: letters, digits, '_', '-' and '.' only")
            _allowed_fields(f"output {name!r}", output, OUTPUT_FIELDS)
            out_parameters = _parameters(f"output {name!r}", output.get("parameters"), OUTPUT_PARAMETERS)
            wanted.append({"name": name, "parameters": out_parameters} if out_parameters else {"name": name})
        rebuilt["outputs"] = wanted
    try:
        header = orjson.dumps(rebuilt)
    except TypeError:  # an FP64 element written as an integer beyond 64 bits (within float range): Python's encoder
        header = json.dumps(rebuilt, separators=(",", ":")).encode()
    if not binary:
        return BuiltRequest(header, None)
    return BuiltRequest(header + binary, len(header))


def tls_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """The edge's TLS: the certificate chain and key (TLS 1.2 at least, Python's default ciphers); with
    ``client_ca``, mutual TLS: a caller must present a certificate that CA signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"TLS files cannot be used ({exc}): --tls-cert {cert} and --tls-key {key} must be a PEM certificate "
            f"(chain) and its private key{f', --tls-client-ca {client_ca} a PEM CA bundle' if client_ca else ''}"
        ) from exc
    return context


class ReloadingTls:
    """The edge's TLS files, re-read when they change: a renewed certificate (or CA bundle) is served from the next
    handshake on, without a restart. ``changed()`` reloads the HTTP edge's ``context`` in place (OpenSSL hands new
    connections the context's current certificate); ``grpc_credentials()`` gives the gRPC edge credentials whose
    fetcher, called by gRPC at each handshake, does the same check. A half-written pair (a certificate without its
    key yet) fails to load and the previous one stays served until the pair is whole."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = Path(cert), Path(key), client_ca
        self.context = tls_context(self.cert, self.key, client_ca)
        self._stamp = self._stamp_now()
        self.reloads = 0

    def _files(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((Path(self.client_ca),) if self.client_ca is not None else ())

    def _stamp_now(self) -> tuple[tuple[int, int], ...]:
        return tuple((st.st_mtime_ns, st.st_size) for st in (f.stat() for f in self._files()))

    def changed(self) -> bool:
        """Reload the HTTP context when a file changed; True when a new certificate is now served."""
        try:
            stamp = self._stamp_now()
        except OSError:
            return False  # a file being replaced: look again next time
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.context.load_cert_chain(str(self.cert), str(self.key))
            if self.client_ca is not None:
                self.context.load_verify_locations(cafile=str(self.client_ca))
        except (OSError, ssl.SSLError):
            return False
        self.reloads += 1
        return True

    def grpc_credentials(self) -> Any:
        import grpc

        def configuration() -> Any:
            pair = (self.key.read_bytes(), self.cert.read_bytes())
            ca = Path(self.client_ca).read_bytes() if self.client_ca is not None else None
            return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

        seen = [self._stamp_now()]

        def fetch() -> Any:
            try:
                stamp = self._stamp_now()
                if stamp == seen[0]:
                    return None  # unchanged: gRPC keeps the current configuration
                seen[0] = stamp
                return configuration()
            except OSError:
                return None

        return grpc.dynamic_ssl_server_credentials(
            configuration(), fetch, require_client_authentication=self.client_ca is not None
        )


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
        self.api_keys = api_keys  # None: callers are not authenticated (the edge then belongs on loopback)
        # only the public pipelines (a registry each in the repository) are reachable: their inner models (the ONNX
        # model behind an ensemble, the preprocessing) answer 403. None: every model (a gateway without a repository)
        self.repository = repository
        self._public: tuple[float, frozenset[str]] = (-1.0, frozenset())
        self.limits = limits or GatewayLimits()
        self.registry = registry or CollectorRegistry()
        self.inflight = 0
        self.queued = 0
        self.connections = 0
        self.draining = False
        self.available = True  # False while the supervisor restarts the model server
        self.sampler: EdgeSampler | None = None  # hands answered inferences to the monitor (serving.edge_tap)
        self._slots: asyncio.Semaphore | None = None
        self._pool: UpstreamPool | None = None
        self._runner: web.AppRunner | None = None
        self.requests = Counter(
            "inferline_gateway_requests",
            "Requests answered at the edge, by route and HTTP status",
            ["route", "code"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "inferline_gateway_rejected_requests",
            "Requests refused at the edge without reaching the model server, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.forwarded = Counter(
            "inferline_gateway_forwarded_requests",
            "Requests forwarded to the model server, by route",
            ["route"],
            registry=self.registry,
        )
        Gauge(
            "inferline_gateway_inflight_requests", "Requests running on the model server", registry=self.registry
        ).set_function(lambda: self.inflight)
        Gauge(
            "inferline_gateway_open_connections", "HTTP connections open at the edge", registry=self.registry
        ).set_function(lambda: self.connections)
        Gauge("inferline_gateway_queued_requests", "Requests waiting for a slot", registry=self.registry).set_function(
            lambda: self.queued
        )

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
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                self._authenticate(request)
                self._check_names(request)
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

    def _authenticate(self, request: web.Request) -> None:
        if self.api_keys is not None and request.path not in _UNAUTHENTICATED:
            self.authenticate(request.headers.get("Authorization", ""))

    def authenticate(self, authorization: str) -> None:
        """With API keys, every route but the health probes needs ``Authorization: Bearer <key>`` (over gRPC the
        ``authorization`` metadata): refused (401, UNAUTHENTICATED) without one or with one that is not in the keys
        file (mistyped or revoked)."""
        if self.api_keys is None:
            return
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise RequestRejected(
                401, "unauthenticated", "this edge needs an API key: send 'Authorization: Bearer <key>'"
            )
        if self.api_keys.caller(key.strip()) is None:
            raise RequestRejected(
                401, "bad_api_key", "the API key is not valid (mistyped or revoked); ask the operator for a key"
            )

    def public_models(self) -> frozenset[str]:
        """The repository's public pipelines, read again at most once a second (a new pipeline becomes
        reachable without a restart)."""
        from inferline.release.registry import registered_pipelines

        assert self.repository is not None
        at, names = self._public
        now = time.monotonic()
        if now - at > 1.0:
            names = frozenset(registered_pipelines(self.repository))
            self._public = (now, names)
        return names

    def _check_names(self, request: web.Request) -> None:
        self.check_model(request.match_info.get("model"), request.match_info.get("version"))

    def check_model(self, model: str | None, version: str | None) -> None:
        """A model name and version as the edge accepts them (full matches), naming a public pipeline: 400 (or
        INVALID_ARGUMENT) for a malformed one, 403 (PERMISSION_DENIED) for an inner model or an unknown one."""
        if model is not None and (not _NAME.fullmatch(model) or ".." in model):
            raise _invalid(
                f"model name {model[:80]!r} is not valid: letters, digits, '_', '-' and '.' only (no '..'), "
                "at most 128 characters"
            )
        if version is not None and not _DIGITS.fullmatch(version):
            raise _invalid(f"model version {version[:40]!r} is not valid: a positive integer")
        if model is not None and self.repository is not None and model not in self.public_models():
            raise RequestRejected(
                403,
                "not_public",
                f"model {model!r} is not a public pipeline of this server (an inner model of one, or unknown); "
                f"call a pipeline: {sorted(self.public_models())}",
            )

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
            raise _invalid(f"{HEADER_LENGTH} is sent {len(lengths)} times; send it once")
        built = build_infer_request(body, lengths[0] if lengths else None, self.limits)
        # the headers Triton gets are the edge's own: none of the caller's reaches it
        headers = (
            {"Content-Type": "application/json"}
            if built.header_length is None
            else {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(built.header_length)}
        )
        async with self.admitted():
            response = await self._forward("infer", request, "POST", built.body, headers)
        answer = response.body if isinstance(response, web.Response) else None
        if self.sampler is not None and response.status == 200 and isinstance(answer, bytes):
            length = response.headers.get(HEADER_LENGTH, "")
            self.sampler.offer_http(request.match_info["model"], built.body, built.header_length, answer,
                                    int(length) if length.isdigit() else None, time.monotonic() - started)  # fmt: skip
        return response

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
        self, route: str, request: web.Request, method: str, body: bytes | None, headers: dict[str, str]
    ) -> web.StreamResponse:
        self.forwarded.labels(route).inc()
        # no caller header reaches Triton (2.51 aborts on some values it cannot parse, Accept-Encoding's among them):
        # the edge sends its own few (Host, Content-Length, and what ``headers`` holds); answers come uncompressed
        assert self._pool is not None, "Gateway.start() first"
        try:
            answer = await self._pool.request(
                method, request.rel_url.raw_path, body, headers, self.limits.upstream_timeout_s
            )
        except UpstreamError as exc:
            raise RequestRejected(
                503,
                "upstream_unavailable",
                f"the model server did not answer ({type(exc).__name__}); it may be restarting: retry after "
                f"{self.limits.retry_after_s}s",
            ) from exc
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    def admitted(self) -> _Admission:
        """``async with gateway.admitted():`` around work on the model server (HTTP and gRPC share the bound)."""
        return _Admission(self)

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._slots = asyncio.Semaphore(self.limits.max_inflight)
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
        await _GuardedSite(self, self._runner, host, port, reuse_address=True, ssl_context=ssl_context).start()

    async def drain(self, timeout_s: float) -> int:
        """Stop admitting (503 ``draining``) and wait up to ``timeout_s`` for the requests already admitted, running
        or queued; returns how many were left when the wait ended (0 when all finished)."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while (self.inflight or self.queued) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # drain polling interval
        return self.inflight + self.queued

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._pool is not None:
            self._pool.close()


class _Admission:
    """At most ``max_inflight`` requests on the model server and ``max_queued`` waiting; the rest get 503 at once."""

    def __init__(self, gateway: Gateway) -> None:
        self.g = gateway

    async def __aenter__(self) -> None:
        g, limits = self.g, self.g.limits
        assert g._slots is not None
        if g.draining:
            raise RequestRejected(503, "draining", "the server is shutting down; retry on another replica or later")
        if not g.available:
            raise RequestRejected(
                503, "restarting", f"the model server is restarting; retry after {limits.retry_after_s}s"
            )
        if g._slots.locked() and g.queued >= limits.max_queued:
            raise RequestRejected(
                503,
                "overloaded",
                f"overloaded: {g.inflight} requests running and {g.queued} waiting (limits {limits.max_inflight} "
                f"and {limits.max_queued}); retry after {limits.retry_after_s}s with backoff",
            )
        if not g._slots.locked():  # a free slot: taken at once (no timer, no task)
            await g._slots.acquire()
            g.inflight += 1
            return
        g.queued += 1
        try:
            await asyncio.wait_for(g._slots.acquire(), limits.queue_timeout_s)
        except TimeoutError:
            raise RequestRejected(
                503, "overloaded", f"overloaded: waited {limits.queue_timeout_s}s for a slot; retry with backoff"
            ) from None
        finally:
            g.queued -= 1
        g.inflight += 1

    async def __aexit__(self, *exc: object) -> None:
        g = self.g
        assert g._slots is not None
        g.inflight -= 1
        g._slots.release()


class _GuardedSite(web.TCPSite):
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
