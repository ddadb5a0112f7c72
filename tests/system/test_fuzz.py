"""Property-based fuzzing (issue 8 case 10): malformed input never gets a 5xx and the server stays live.

- The HTTP API: schemathesis generates requests for every operation of ``serving/openapi/kserve-v2.yaml`` (the Open
  Inference Protocol REST endpoints inferline serves), schema-conforming and schema-violating, plus requests shaped
  like the served ``fraud`` model's (the nine raw columns, JSON and binary tensor data) with hostile values, wrong
  shapes, wrong datatypes and broken framing, so that bodies get past parsing into validation. Every answer must be
  below 500; afterwards the server must still answer a good request.
- The request path in process (what the client encodes and Triton's preprocess model runs): hostile rows are either
  refused by the client with a ValueError naming the column, or scored row for row, each row ``ok`` or
  ``column:reason``, with finite features.

Budget: a few hundred requests, bounded by ``max_examples``; no sleeps.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.schemas import BaseSchema

from inferline.features.pipelines import fraud
from inferline.serving.client import InferlineClient, encode_rows
from tests.fuzz_cases import API_DESCRIPTION, HOSTILE_FLOAT, HOSTILE_INT, INT64_MAX, INT64_MIN, SPEC, WIRE_DATATYPE

from .conftest import Published, Supervised, supervised_server

SERVED_MODEL = "fraud"
SERVED_VERSION = "2"  # the conftest's current release: the local target's fused model is versioned by release
HEADER_LENGTH = "Inference-Header-Content-Length"
DATATYPES = (
    *("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"),
    *("FP16", "FP32", "FP64", "BYTES"),
)


@pytest.fixture(scope="module")
def edge(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    """The service as ``inferline serve up`` runs it: gateway, supervisor, tritonserver."""
    server = supervised_server(published, tmp_path_factory.mktemp("fuzz"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def edge_url(edge: Supervised) -> str:
    """``host:port`` of the HTTP endpoint callers reach: the validating gateway."""
    return str(edge.record["gateway"])


# ---------------------------------------------------------------------------------------------------------------
# requests shaped like the served model's: two thirds well-formed with hostile values (they reach the served
# model), a third with structural damage (names, datatypes, shapes, element counts, framing)

OUTPUTS = ("probabilities", "predicted_class", "status", "release")


def _text() -> st.SearchStrategy[str]:
    """Any text: control characters, NUL, U+FFFD, non-BMP, lone surrogates (JSON escapes them as \\udXXX)."""
    return st.one_of(
        st.text(max_size=12),
        st.sampled_from(["", " ", "\x00", "\ufffd", "\ud800", "a\udfffb", "Ã©", "é" * 40, "2026-01-01T00:00:00Z"]),
    )


def _element(datatype: str) -> st.SearchStrategy[Any]:
    """A hostile element of the JSON type ``datatype`` takes (NaN and Infinity as the tokens Triton accepts)."""
    return {"BYTES": _text(), "FP64": HOSTILE_FLOAT, "INT64": HOSTILE_INT}.get(
        datatype, st.integers(-(2**64), 2**64) | st.booleans()
    )


def _damaged_element(datatype: str) -> st.SearchStrategy[Any]:
    wrong = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**80), 2**80),
        st.floats(allow_nan=False),
        _text(),
        st.lists(st.integers(0, 3), max_size=2),
        st.just({}),
    )
    return st.one_of(_element(datatype), _element(datatype), wrong)


def _damaged_shape(n: int) -> st.SearchStrategy[list[int]]:
    return st.one_of(
        st.just([n, 1]),
        st.just([n]),
        st.just([1, n]),
        st.just([]),
        st.just([n, 1, 1]),
        st.just([n + 1, 1]),
        st.just([-1, 1]),
        st.lists(st.integers(-2, 4), max_size=3),
        st.lists(st.sampled_from([0, 2**31, 2**32 + 1, 2**62, INT64_MAX, 2**64]), min_size=1, max_size=2),
    )


def _parameters() -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(
        ["priority", "timeout", "sequence_id", "sequence_start", "binary_data", "binary_data_size",
         "binary_data_output", "shared_memory_region", "classification", "headers", "a\x00b", "x"]
    )  # fmt: skip
    values = st.one_of(st.integers(-(2**64), 2**64), st.booleans(), _text(), st.just(None), st.just([1]))
    return st.dictionaries(keys, values, max_size=3)


@st.composite
def _tensor(draw: st.DrawFn, name: str, n: int, damaged: bool) -> dict[str, Any]:
    datatype = WIRE_DATATYPE.get(name, "BYTES")
    if not damaged:
        data = draw(st.lists(_element(datatype), min_size=n, max_size=n))
        return {"name": name, "shape": [n, 1], "datatype": datatype, "data": data}
    datatype = draw(st.sampled_from([datatype] * 4 + list(DATATYPES)))
    count = draw(st.sampled_from([n, n, n, 0, n + 1, max(n - 1, 0)]))
    data = draw(st.lists(_damaged_element(datatype), min_size=count, max_size=count))
    tensor: dict[str, Any] = {"name": name, "shape": draw(_damaged_shape(n)), "datatype": datatype}
    tensor["data"] = draw(st.sampled_from([data, data, data, [data], None, "x"]))
    if tensor["data"] is None:
        del tensor["data"]
    if draw(st.integers(0, 5)) == 0:
        tensor["parameters"] = draw(_parameters())
    return tensor


def _binary_elements(draw: st.DrawFn, tensor: dict[str, Any]) -> bytes:
    """The tensor's data as the binary data extension carries it; BYTES elements as any bytes (invalid UTF-8
    included), each after its 4-byte little-endian length."""
    data = tensor.pop("data", [])
    rows = data if isinstance(data, list) else [data]
    flat = [x for item in rows for x in (item if isinstance(item, list) else [item])]
    if tensor["datatype"] == "BYTES":
        out = b""
        for x in flat:
            element = draw(st.binary(max_size=12) | st.just(str(x).encode("utf-8", "surrogatepass")))
            out += struct.pack("<I", len(element)) + element
        return out
    fmt = {"FP64": "<d", "FP32": "<f", "INT64": "<q", "INT32": "<i"}.get(tensor["datatype"], "<q")
    out = b""
    for x in flat:
        try:
            out += struct.pack(fmt, x)
        except (struct.error, TypeError, OverflowError):
            out += str(x).encode("utf-8", "surrogatepass")[:8].ljust(8, b"\x00")
    return out


def _requested_output(damaged: bool) -> st.SearchStrategy[dict[str, Any]]:
    if damaged:
        return st.fixed_dictionaries(
            {"name": st.sampled_from([*OUTPUTS, "nope"]) | _text()}, optional={"parameters": _parameters()}
        )
    return st.fixed_dictionaries(
        {"name": st.sampled_from(OUTPUTS)},
        optional={"parameters": st.fixed_dictionaries({"binary_data": st.booleans()})},
    )


@st.composite
def served_model_request(draw: st.DrawFn, binary: bool) -> tuple[bytes, int | None]:
    """A ``fraud`` inference body (JSON, or JSON + binary tensor data) and its Inference-Header-Content-Length."""
    damaged = draw(st.integers(0, 2)) == 0  # a third with structural damage
    n = draw(st.integers(0, 4) if damaged else st.integers(1, 4))
    names = [c.name for c in SPEC.input_columns]
    mutation = draw(st.sampled_from(["none"] * 4 + ["drop", "duplicate", "extra", "rename"])) if damaged else "none"
    if mutation == "drop":
        names.remove(draw(st.sampled_from(names)))
    elif mutation == "duplicate":
        names.append(draw(st.sampled_from(names)))
    elif mutation == "extra":
        names.append(draw(st.sampled_from(["is_fraud", "numeric", "", "AMOUNT", "x" * 300])))
    elif mutation == "rename":
        names[draw(st.integers(0, len(names) - 1))] = draw(_text())
    inputs = [draw(_tensor(name, n, damaged)) for name in names]
    request: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        request["id"] = draw(_text())
    if damaged and draw(st.booleans()):
        request["parameters"] = draw(_parameters())
    if draw(st.integers(0, 2)) == 0:
        request["outputs"] = draw(st.lists(_requested_output(damaged), max_size=3))
    tail = b""
    if binary:
        for tensor in inputs:
            if "data" not in tensor or (damaged and not draw(st.integers(0, 4))):
                continue  # damaged: some tensors stay JSON
            raw = _binary_elements(draw, tensor)
            sizes = [len(raw)] * 4 + [0, len(raw) + 1, max(len(raw) - 1, 0), 2**40] if damaged else [len(raw)]
            tensor.setdefault("parameters", {})["binary_data_size"] = draw(st.sampled_from(sizes))
            tail += raw
        if damaged:
            tail += draw(st.sampled_from([b""] * 4 + [b"\x00", b"\xff" * 7, struct.pack("<I", 2**31)]))
    head = json.dumps(request, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if damaged and draw(st.integers(0, 5)) == 0:  # a body cut short
        head = head[: draw(st.integers(0, len(head)))]
    body = head + tail
    if not binary:
        return body, draw(st.sampled_from([None] * 8 + [0, len(body), len(body) + 1])) if damaged else None
    if not damaged:
        return body, len(head)
    return body, draw(st.sampled_from([len(head)] * 4 + [0, 1, len(head) - 1, len(head) + 1, len(body), 2**63]))


# ---------------------------------------------------------------------------------------------------------------
# the API fuzz


def _api() -> BaseSchema:
    """The API description, generating schema-conforming and schema-violating requests, mostly for the served model.

    Loaded at import (the description is static; the server's address comes with each call): ``from_fixture``'s
    lazy loading is not used because schemathesis 4.32.5 sets ``Item._nodeid``, which pytest 9.2 no longer has."""
    schema = schemathesis.openapi.from_path(str(API_DESCRIPTION))
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])

    @schema.hook("flatmap_path_parameters")
    def mostly_the_served_model(ctx: Any, path: dict[str, Any] | None) -> st.SearchStrategy[dict[str, Any]]:
        # 3 in 4 requests name the served model (and its served version where there is one) so bodies reach validation
        if not path or "model_name" not in path:
            return st.just(path)
        served = {**path, "model_name": SERVED_MODEL}
        versioned = {**served, "model_version": SERVED_VERSION} if "model_version" in path else served
        choices = [path, served, served, versioned]
        return st.sampled_from(choices)

    @schema.hook("flatmap_case").apply_to(path_regex=r"/infer$")
    def served_model_bodies(ctx: Any, case: Any) -> st.SearchStrategy[Any]:
        # a third as generated from the description, a third JSON and a third binary fraud-shaped bodies
        def shaped(binary: bool) -> st.SearchStrategy[Any]:
            def apply(drawn: tuple[bytes, int | None]) -> Any:
                body, header_length = drawn
                case.body = body
                case.media_type = "application/octet-stream" if binary else "application/json"
                headers = {k: v for k, v in case.headers.items() if k.lower() != HEADER_LENGTH.lower()}
                if header_length is not None:
                    headers[HEADER_LENGTH] = str(header_length)
                case.headers = type(case.headers)(headers)
                return case

            return served_model_request(binary).map(apply)

        return st.one_of(st.just(case), shaped(binary=False), shaped(binary=True))

    return schema


api = _api()


@api.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: Any, edge_url: str) -> None:
    case.call_and_validate(base_url=f"http://{edge_url}", checks=[not_a_server_error], timeout=30)


# ---------------------------------------------------------------------------------------------------------------
# byte-level fuzzing through the edge: a good request's bytes damaged (duplicate keys smuggled in, bytes flipped,
# inserted, cut, made non-UTF-8) over HTTP, and a good ModelInferRequest's bytes or a drawn message over gRPC


def _good_json() -> bytes:
    arrays = encode_rows(fraud.generate(2, seed=5).drop(columns=[SPEC.label]), SPEC)
    inputs = []
    for c in SPEC.input_columns:
        values = arrays[c.name].reshape(-1)
        data = [v.decode() for v in values] if c.triton_dtype == "BYTES" else values.tolist()
        inputs.append({"name": c.name, "shape": [2, 1], "datatype": c.triton_dtype, "data": data})
    return json.dumps({"inputs": inputs}).encode()


GOOD_JSON = _good_json()
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["name", "shape", "data"]), inner),
    max_leaves=8,
)


@st.composite
def damaged_bytes(draw: st.DrawFn, good: bytes) -> bytes:
    body = bytearray(good)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["duplicate_key", "flip", "insert", "delete", "truncate", "non_utf8"]))
        at = draw(st.integers(0, max(len(body) - 1, 0)))
        if kind == "duplicate_key":  # a key again, before or after its first copy, with any value
            key = draw(st.sampled_from([b'"inputs"', b'"shape"', b'"datatype"', b'"data"', b'"name"', b'"id"']))
            found = body.find(key, at) if body.find(key, at) >= 0 else body.find(key)
            value = json.dumps(draw(_JSON_VALUES)).encode()
            if found >= 0:
                body[found:found] = key + b": " + value + b", "
        elif kind == "flip" and body:
            body[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del body[at : at + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del body[at:]
        else:
            body[at:at] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\ud800", b"\x00"]))
    return bytes(body)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=damaged_bytes(GOOD_JSON), header=st.none() | st.integers(-1, 2**64).map(str) | st.text(max_size=4))
def test_damaged_bytes_over_http_never_get_a_server_error(edge_url: str, body: bytes, header: str | None) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://{edge_url}/v2/models/{SERVED_MODEL}/infer", data=body)
    if header is not None and header.isascii() and header.isprintable():
        request.add_header(HEADER_LENGTH, header)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    assert code < 500, (code, body[:200])


def _good_message() -> bytes:
    from tritonclient.grpc import service_pb2

    arrays = encode_rows(fraud.generate(2, seed=6).drop(columns=[SPEC.label]), SPEC)
    request = service_pb2.ModelInferRequest(model_name=SERVED_MODEL)
    for c in SPEC.input_columns:
        t = request.inputs.add(name=c.name, datatype=c.triton_dtype, shape=[2, 1])
        values = arrays[c.name].reshape(-1)
        field = {"BYTES": "bytes_contents", "FP64": "fp64_contents", "INT64": "int64_contents"}[c.triton_dtype]
        getattr(t.contents, field).extend(values.tolist())
    return bytes(request.SerializeToString())


GOOD_MESSAGE = _good_message()


@st.composite
def drawn_message(draw: st.DrawFn) -> bytes:
    """A ModelInferRequest with drawn shapes, datatypes and contents for the served model's inputs."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=draw(st.sampled_from([SERVED_MODEL] * 5 + ["", "fraud_model"])))
    for c in SPEC.input_columns:
        if draw(st.integers(0, 9)) == 0:
            continue  # an input left out
        t = request.inputs.add(name=c.name, datatype=draw(st.sampled_from([c.triton_dtype] * 6 + list(DATATYPES))))
        t.shape.extend(draw(st.lists(st.integers(-2, 2**62), max_size=3) | st.just([2, 1])))
        contents = draw(st.sampled_from(["fp64_contents", "int64_contents", "bytes_contents", "int_contents"]))
        if contents == "bytes_contents":
            t.contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=12), max_size=3)))
        elif contents == "fp64_contents":
            t.contents.fp64_contents.extend(draw(st.lists(st.floats(), max_size=3)))
        elif contents == "int64_contents":
            t.contents.int64_contents.extend(draw(st.lists(st.integers(INT64_MIN, INT64_MAX), max_size=3)))
        else:
            t.contents.int_contents.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=3)))
    return bytes(request.SerializeToString())


# the codes a hostile message may get; INTERNAL, UNKNOWN, DATA_LOSS or UNAVAILABLE would be the server failing
_REFUSALS = {"OK", "INVALID_ARGUMENT", "PERMISSION_DENIED", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED"}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=damaged_bytes(GOOD_MESSAGE) | drawn_message())
def test_damaged_messages_over_grpc_never_fail_the_server(edge: Supervised, message: bytes) -> None:
    import grpc

    with grpc.insecure_channel(str(edge.record["grpc_edge"])) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        details = ""
        try:
            call(message, timeout=30)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
            details = exc.details()
    assert code in _REFUSALS, (code, details, message[:200])


def test_server_is_live_and_answers_after_the_fuzz(edge: Supervised, edge_url: str) -> None:
    assert edge.state()["restarts"] == 0, "no fuzzed request took the model server down"
    rows = fraud.generate(4, seed=2).drop(columns=[SPEC.label])
    with InferlineClient(edge_url, "http", pipeline="fraud", timeout_s=10.0) as client:
        assert client.is_ready()
        predictions = client.predict(rows)
    assert predictions.status == ["ok"] * 4
    assert np.isfinite(predictions.probabilities).all()
