"""Reading sampled KServe v2 bodies back into arrays: an HTTP inference (JSON, with Triton's binary tensor
extension) or a gRPC ModelInfer (the serialized ``ModelInferRequest`` and ``ModelInferResponse``), as Triton read
and answered them.

Why apart from the sampler (``serving.edge_tap``): decoding runs on the sampler's thread only, never on the
request path, and reads bodies any caller could send; it raises ``Undecodable`` for what it cannot read (the
sampler counts it as ``dropped_undecodable``). Tensors are indexed without being decoded (``http_index``,
``grpc_pair``) so that only the ones the monitor reads are (``tensor_values``). Libraries: the standard library's
json and numpy; gRPC bodies with tritonclient's generated protobuf classes (``service_pb2``), imported on first use.
"""

from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple

import numpy as np

from inferline.serving.edge_protocol import GRPC_CONTENTS

__all__ = ["Undecodable", "decode_grpc", "decode_http", "grpc_pair", "http_index", "tensor_values"]

_NUMPY = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_LENGTH = struct.Struct("<I")


class Undecodable(ValueError):
    """A sampled body this sampler cannot read (counted as ``dropped_undecodable``; serving is not affected)."""


class _Tensor(NamedTuple):
    """One tensor of a body, not decoded yet: JSON ``data``, raw bytes (Triton's binary extension, gRPC
    ``raw_*_contents``) or gRPC typed ``contents``. Only the tensors the monitor reads are ever decoded."""

    datatype: str
    shape: list[int]
    data: Any = None
    raw: bytes | memoryview | None = None
    contents: Any = None


def _count(shape: Any) -> int:
    if not isinstance(shape, list) or not shape:
        raise Undecodable(f"shape {shape!r}")
    count = 1
    for d in shape:
        if not isinstance(d, int) or d < 0:
            raise Undecodable(f"shape {shape!r}")
        count *= d
    return count


def _bytes_elements(blob: bytes | memoryview, count: int) -> list[bytes]:
    """Triton's BYTES serialization (each element a 4-byte little-endian length, then its bytes) -> the elements."""
    out = []
    offset, end = 0, len(blob)
    for _ in range(count):
        if offset + 4 > end:
            raise Undecodable("a BYTES tensor ends inside an element's length")
        (size,) = _LENGTH.unpack_from(blob, offset)
        offset += 4
        if offset + size > end:
            raise Undecodable("a BYTES tensor ends inside an element")
        out.append(bytes(blob[offset : offset + size]))
        offset += size
    return out


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item))
    return out


def tensor_values(t: _Tensor) -> list[Any] | np.ndarray:
    """A tensor's elements, flat (row-major): a list, or a numpy array for raw numbers."""
    count = _count(t.shape)
    values: list[Any] | np.ndarray
    if t.raw is not None:
        if t.datatype == "BYTES":
            values = _bytes_elements(t.raw, count)
        else:
            dtype = _NUMPY.get(t.datatype)
            if dtype is None:
                raise Undecodable(f"datatype {t.datatype!r}")
            values = np.frombuffer(t.raw, dtype=np.dtype(dtype).newbyteorder("<"))
    elif t.contents is not None:
        field = GRPC_CONTENTS.get(t.datatype)
        if field is None:
            raise Undecodable(f"datatype {t.datatype!r}")
        values = list(getattr(t.contents, field))
    else:
        values = _flatten(t.data)
    if len(values) != count:
        raise Undecodable(f"{len(values)} elements for shape {t.shape}")
    return values


def _array(t: _Tensor) -> np.ndarray:
    """A tensor as the wire array: BYTES as an object array of bytes, numbers in their datatype, in its shape."""
    values = tensor_values(t)
    if t.datatype == "BYTES":
        out = np.empty(len(values), dtype=object)
        out[:] = [v.encode("utf-8", "surrogateescape") if isinstance(v, str) else bytes(v) for v in values]
    else:
        dtype = _NUMPY.get(t.datatype)
        if dtype is None:
            raise Undecodable(f"datatype {t.datatype!r}")
        out = np.asarray(values, dtype=dtype)
    return out.reshape(t.shape)


def _json_index(tensors: Any, binary: memoryview) -> dict[str, _Tensor]:
    """``inputs`` or ``outputs`` of a KServe v2 JSON body -> ``{name: tensor}``; binary tensors (``parameters
    .binary_data_size``) are sliced in order from ``binary`` (no copy)."""
    if not isinstance(tensors, list):
        raise Undecodable("no tensor list")
    out: dict[str, _Tensor] = {}
    offset = 0
    for t in tensors:
        if not isinstance(t, dict):
            raise Undecodable("a tensor is not an object")
        name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
            raise Undecodable("a tensor without name, datatype or shape")
        parameters = t.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise Undecodable(f"binary_data_size {size!r}")
            out[name] = _Tensor(datatype, shape, raw=binary[offset : offset + size])
            offset += size
        elif "data" in t:
            out[name] = _Tensor(datatype, shape, data=t["data"])
    return out


def _split(body: bytes, header_length: int | None) -> tuple[Any, memoryview]:
    view = memoryview(body)
    if header_length is None:
        return json.loads(body), view[len(body) :]
    if not 0 <= header_length <= len(body):
        raise Undecodable(f"header length {header_length} for a {len(body)}-byte body")
    return json.loads(view[:header_length].tobytes()), view[header_length:]


def http_index(
    request_body: bytes, request_header_length: int | None, response_body: bytes, response_header_length: int | None
) -> tuple[dict[str, _Tensor], dict[str, _Tensor]]:
    try:
        request, request_binary = _split(request_body, request_header_length)
        response, response_binary = _split(response_body, response_header_length)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Undecodable(f"not JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(response, dict):
        raise Undecodable("a body is not a JSON object")
    return _json_index(request.get("inputs"), request_binary), _json_index(response.get("outputs"), response_binary)


def _grpc_index(tensors: Any, raw: Any) -> dict[str, _Tensor]:
    out: dict[str, _Tensor] = {}
    for i, t in enumerate(tensors):
        shape = [int(d) for d in t.shape]
        if len(raw):
            if i >= len(raw):
                raise Undecodable("fewer raw contents than tensors")
            out[t.name] = _Tensor(t.datatype, shape, raw=raw[i])
        else:
            out[t.name] = _Tensor(t.datatype, shape, contents=t.contents)
    return out


def grpc_pair(request: bytes, response: bytes) -> tuple[dict[str, _Tensor], dict[str, _Tensor]]:
    from google.protobuf.message import DecodeError
    from tritonclient.grpc import service_pb2

    try:
        req = service_pb2.ModelInferRequest.FromString(request)
        res = service_pb2.ModelInferResponse.FromString(response)
    except DecodeError as exc:
        raise Undecodable(f"protobuf: {exc}") from None
    return _grpc_index(req.inputs, req.raw_input_contents), _grpc_index(res.outputs, res.raw_output_contents)


def decode_http(
    request_body: bytes, request_header_length: int | None, response_body: bytes, response_header_length: int | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One HTTP inference: ``({input: array}, {output: array})`` as Triton read and answered them."""
    inputs, outputs = http_index(request_body, request_header_length, response_body, response_header_length)
    return {k: _array(t) for k, t in inputs.items()}, {k: _array(t) for k, t in outputs.items()}


def decode_grpc(request: bytes, response: bytes) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One gRPC ModelInfer: the serialized ``ModelInferRequest`` and ``ModelInferResponse`` -> ``({input: array},
    {output: array})``."""
    inputs, outputs = grpc_pair(request, response)
    return {k: _array(t) for k, t in inputs.items()}, {k: _array(t) for k, t in outputs.items()}
