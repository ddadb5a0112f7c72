"""The Open Inference Protocol (KServe v2) as the edge accepts it: an HTTP inference body checked and rebuilt
(``build_infer_request``), and the tables and element checks the gRPC edge (``serving.grpc_edge``) shares.

Why the edge checks at all: the bundled Triton 2.51 answers some malformed requests with 500, aborts on one
request declaring a huge shape (std::bad_alloc) and crashes on some parameters (SECURITY.md). Inference bodies are
checked against the protocol (JSON shape, datatypes, declared shape vs the data or the binary tensor sizes, at
most ``max_elements`` per input): 400 with what was received and what was expected.

Triton receives only what the edge built itself from what it understood (an allow-list, ``build_infer_request``):
the inputs (name, datatype, shape, data or binary data), the requested outputs by name, an ``id`` and the
parameters inferline documents (``binary_data_output``, ``binary_data_size``, ``binary_data``). Any other field or
parameter is a 400 that names it. That closes by construction the requests that crashed Triton 2.51 through a
byte-for-byte edge (an output's ``classification`` parameter dividing by zero, a shared-memory region named in an
output), and the classes nobody has found yet.
"""

from __future__ import annotations

import json
import math
import re
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from inferline.serving.edge_limits import GatewayLimits, invalid

__all__ = [
    "DATATYPES",
    "DIGITS",
    "GRPC_CONTENTS",
    "HEADER_LENGTH",
    "INPUT_PARAMETERS",
    "INT_RANGE",
    "ITEMSIZE",
    "NAME",
    "OUTPUT_PARAMETERS",
    "REQUEST_PARAMETERS",
    "SERVED_EXTENSIONS",
    "BuiltRequest",
    "build_infer_request",
    "check_bytes_elements",
    "check_element_count",
    "parse_json",
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
INT_RANGE = {
    "UINT8": (0, 2**8 - 1),
    "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1),
    "INT8": (-(2**7), 2**7 - 1),
    "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1),
}
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")  # used with fullmatch: '$' would pass 'fraud\n'
DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() takes '²', which int() refuses
HEADER_LENGTH = "Inference-Header-Content-Length"
# the protocol extensions a caller can use through the edge (GET /v2 lists only these)
SERVED_EXTENSIONS = ("binary_tensor_data", "parameters")  # classification: its parameter is not taken (SIGFPE)
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _flatten(data: Any, depth: int = 0) -> list[Any]:
    """The elements of a (nested) JSON list in row-major order."""
    if depth > 32:
        raise invalid("input 'data' is nested more than 32 levels deep; send a flat list in row-major order")
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
    if datatype in INT_RANGE:
        lo, hi = INT_RANGE[datatype]
        return lambda v: type(v) is int and lo <= v <= hi
    top = _FLOAT_MAX[datatype]  # FP16/32/64: finite JSON numbers within the type's range (NaN, Inf: binary)
    return lambda v: (type(v) is float or type(v) is int) and -top <= v <= top


_ELEMENT_OK = {datatype: _element_ok(datatype) for datatype in (*INT_RANGE, *_FLOAT_MAX, "BOOL", "BYTES")}


def _check_elements(name: str, datatype: str, values: list[Any]) -> None:
    ok = _ELEMENT_OK[datatype]
    if all(map(ok, values)):
        return
    value = next(v for v in values if not ok(v))
    shown = json.dumps(value)[:40] if not isinstance(value, int) or abs(value) < 10**40 else f"{str(value)[:20]}..."
    raise invalid(f"input {name!r} is {datatype} but holds {shown} ({type(value).__name__}); send {_EXPECT[datatype]}")


_EXPECT = {
    "BOOL": "true/false",
    "BYTES": "JSON strings (or the binary extension)",
    "FP16": "finite JSON numbers within +-65504",
    "FP32": "finite JSON numbers within +-3.4e38",
    "FP64": "finite JSON numbers within +-1.8e308",
} | {t: f"integers in [{lo}, {hi}]" for t, (lo, hi) in INT_RANGE.items()}


def check_bytes_elements(name: str, blob: bytes, count: int) -> None:
    """BYTES in the binary extension: ``count`` elements, each a 4-byte little-endian length and the bytes."""
    offset = seen = 0
    while seen < count and offset + 4 <= len(blob):
        (length,) = struct.unpack_from("<I", blob, offset)
        offset += 4 + length
        seen += 1
    if seen != count or offset != len(blob):
        raise invalid(
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
            raise invalid(
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
        raise invalid(f"{where} 'parameters' must be a JSON object, got {type(parameters).__name__}")
    for key, value in parameters.items():
        if key not in allowed:
            documented = ", ".join(allowed) or "none"
            raise invalid(
                f"{where} has the parameter {key[:60]!r}, which the edge does not take; documented here: {documented}"
            )
        expected, valid = allowed[key]
        if not valid(value):
            raise invalid(f"{where} parameter {key!r} must be {expected}, got {json.dumps(value)[:60]}")
    return parameters


def check_element_count(name: str, shape: list[int], limits: GatewayLimits) -> int:
    """The element count of a declared shape, refused when a dimension is negative or the count is over
    ``max_elements`` (Triton 2.51 allocates what an HTTP request declares before it looks at the data)."""
    if any(d < 0 for d in shape):
        raise invalid(f"input {name!r} has a negative dimension in shape {list(shape)}")
    elements = math.prod(shape)
    if elements > limits.max_elements:
        raise invalid(
            f"input {name!r} declares shape {list(shape)} = {elements} elements; the limit is {limits.max_elements} "
            "per input (GatewayLimits.max_elements); split the request"
        )
    return elements


def _input(index: int, tensor: Any, limits: GatewayLimits, binary: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """One input tensor checked and rebuilt from its documented fields; and the offset in the binary section
    after it."""
    if not isinstance(tensor, dict):
        raise invalid(f"inputs[{index}] must be a JSON object, got {type(tensor).__name__}")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"inputs[{index}] needs a non-empty string 'name', got {name!r}"[:200])
    if not NAME.fullmatch(name):
        raise invalid(f"inputs[{index}] has the name {name[:60]!r}: letters, digits, '_', '-' and '.' only")
    _allowed_fields(f"input {name!r}", tensor, INPUT_FIELDS)
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise invalid(f"input {name!r} has datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"[:300])
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise invalid(f"input {name!r} needs 'shape' as a list of integers, got {shape!r}"[:200])
    elements = check_element_count(name, shape, limits)
    parameters = _parameters(f"input {name!r}", tensor.get("parameters"), INPUT_PARAMETERS)
    rebuilt: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    size = (parameters or {}).get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise invalid(f"input {name!r} has both 'data' and binary_data_size; send one of them")
        if offset + size > len(binary):
            raise invalid(
                f"input {name!r} declares {size} binary bytes but only {len(binary) - offset} remain after the "
                f"JSON header ({HEADER_LENGTH} and the body disagree)"
            )
        if datatype == "BYTES":
            check_bytes_elements(name, binary[offset : offset + size], elements)
        elif size != elements * ITEMSIZE[datatype]:
            raise invalid(
                f"input {name!r} is {datatype} with shape {shape}: expected {elements * ITEMSIZE[datatype]} binary "
                f"bytes, got binary_data_size {size}"
            )
        rebuilt["parameters"] = {"binary_data_size": size}
        return rebuilt, offset + size
    if "data" not in tensor:
        raise invalid(f"input {name!r} has neither 'data' nor a binary_data_size parameter")
    if not isinstance(tensor["data"], list):
        raise invalid(f"input {name!r}: 'data' must be a list (row-major), got {type(tensor['data']).__name__}")
    data = tensor["data"]
    values = _flatten(data) if any(type(v) is list for v in data) else data
    if len(values) != elements:
        raise invalid(
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
        raise invalid(
            f"the request body is not UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 4]!r}); send JSON "
            "encoded as UTF-8"
        ) from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except DuplicateKey as exc:
        raise invalid(
            f"the request body names the key {str(exc)[:60]!r} twice in one object; send each key once"
        ) from None
    except (ValueError, RecursionError) as exc:
        reason = str(exc)[:120]
        raise invalid(f"the request body is not valid JSON ({reason}); send an inference request object") from None


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
        if not DIGITS.fullmatch(header_length) or int(header_length) > len(body):
            raise invalid(
                f"{HEADER_LENGTH} is {header_length[:30]!r}; expected the JSON header's byte length, "
                f"at most the body's {len(body)} bytes"
            )
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    request = parse_json(json_part)
    if not isinstance(request, dict):
        raise invalid(f"the request body must be a JSON object, got {type(request).__name__}")
    if _ESCAPED_SURROGATE.search(json_part):  # Python's parser takes lone surrogates, Triton's answers 500
        try:
            json.dumps(request, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise invalid(
                "the request holds a lone UTF-16 surrogate escape (\\ud800-\\udfff); send valid Unicode"
            ) from None
    _allowed_fields("the request", request, REQUEST_FIELDS)
    rebuilt: dict[str, Any] = {}
    if "id" in request:
        request_id = request["id"]
        if not isinstance(request_id, str) or len(request_id) > _MAX_ID or _CONTROL.search(request_id):
            raise invalid(f"'id' must be a string of at most {_MAX_ID} printable characters, got {request_id!r}"[:200])
        rebuilt["id"] = request_id
    parameters = _parameters("the request", request.get("parameters"), REQUEST_PARAMETERS)
    if parameters:
        rebuilt["parameters"] = parameters
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise invalid("'inputs' must be a non-empty list of input tensors {name, shape, datatype, data}")
    offset = 0
    tensors = []
    for index, tensor in enumerate(inputs):
        built, offset = _input(index, tensor, limits, binary, offset)
        tensors.append(built)
    if offset != len(binary):
        raise invalid(
            f"the body carries {len(binary)} binary bytes after the JSON header but the inputs declare {offset}"
        )
    rebuilt["inputs"] = tensors
    if "outputs" in request:
        outputs = request["outputs"]
        if not isinstance(outputs, list):
            raise invalid(f"'outputs' must be a list, got {type(outputs).__name__}")
        wanted = []
        for index, output in enumerate(outputs):
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise invalid(f"outputs[{index}] must be an object with a string 'name'")
            name = output["name"]
            if not NAME.fullmatch(name):
                raise invalid(f"outputs[{index}] has the name {name[:60]!r}: letters, digits, '_', '-' and '.' only")
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
