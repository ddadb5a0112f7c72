"""The edge as an attacker tries it (issue 17): each case through the gateway of a server started as users start it
(`inferline serve up`), with the exact status, Triton's restart counter unmoved, and a good request answered
afterwards."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from inferline.features.pipelines import fraud
from inferline.serving.client import InferlineClient
from inferline.serving.gateway import SERVED_EXTENSIONS

from .conftest import Published, Supervised, supervised_server

HEADER_LENGTH = "Inference-Header-Content-Length"
RESTARTS = "inferline_server_restarts_total"


@pytest.fixture(scope="module")
def edge(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    server = supervised_server(published, tmp_path_factory.mktemp("edge"))
    try:
        yield server
    finally:
        server.stop()


def send(edge: Supervised, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{edge.record['gateway']}{path}", data=body, method=method)
    for key, value in headers.items():
        request.add_header(key.replace("_", "-"), value)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def good_request_body(rows: int = 2) -> dict[str, object]:
    frame = fraud.generate(rows, seed=3).drop(columns=[fraud.SPEC.label])
    inputs = []
    for c in fraud.SPEC.input_columns:
        values = frame[c.name]
        data = [v.isoformat() for v in values] if c.kind == "timestamp" else values.tolist()
        data = [str(v) for v in data] if c.triton_dtype == "BYTES" else data
        inputs.append({"name": c.name, "shape": [rows, 1], "datatype": c.triton_dtype, "data": data})
    return {"inputs": inputs}


@pytest.fixture
def unharmed(edge: Supervised) -> Iterator[None]:
    """The server neither restarted during the case nor stopped answering."""
    before = edge.metrics().get(RESTARTS, 0.0)
    yield
    assert edge.metrics().get(RESTARTS, 0.0) == before, "the model server restarted"
    with InferlineClient(str(edge.record["gateway"]), "http", pipeline="fraud") as client:
        assert client.predict(fraud.generate(3, seed=4).drop(columns=[fraud.SPEC.label])).ok.all()


def test_a_good_request_is_answered(edge: Supervised, unharmed: None) -> None:
    status, body = send(edge, "POST", "/v2/models/fraud/infer", json.dumps(good_request_body()).encode())
    assert status == 200, body


def test_a_key_twice_in_the_body_is_refused_before_triton(edge: Supervised, unharmed: None) -> None:
    """The edge would check the last `inputs`, Triton takes the first: a huge shape smuggled in the first copy
    aborted tritonserver before."""
    good = json.dumps(good_request_body()["inputs"])
    huge = json.dumps([{"name": "amount", "shape": [10**9, 10**9], "datatype": "FP64", "data": [1.0]}])
    status, body = send(edge, "POST", "/v2/models/fraud/infer", f'{{"inputs": {huge}, "inputs": {good}}}'.encode())
    assert status == 400 and "names the key 'inputs' twice" in body
    nested = good.replace('"shape": [2, 1]', '"shape": [10000000, 1], "shape": [2, 1]', 1)
    status, body = send(edge, "POST", "/v2/models/fraud/infer", f'{{"inputs": {nested}}}'.encode())
    assert status == 400 and "names the key 'shape' twice" in body


def test_a_header_length_that_is_not_ascii_digits_is_a_400(edge: Supervised, unharmed: None) -> None:
    body = json.dumps(good_request_body()).encode()
    status, text = send(edge, "POST", "/v2/models/fraud/infer", body, **{HEADER_LENGTH: "\u00b2"})
    assert status == 400 and HEADER_LENGTH in text


def test_a_body_that_is_not_utf8_is_a_400(edge: Supervised, unharmed: None) -> None:
    body = json.dumps(good_request_body()).encode("utf-16")
    status, text = send(edge, "POST", "/v2/models/fraud/infer", body)
    assert status == 400 and "not UTF-8" in text


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/models/stats", 403),  # Triton's statistics, shaped like a model's metadata route
        ("GET", "/v2/models/fraud/stats", 403),
        ("GET", "/v2/models/fraud/config", 403),
        ("GET", "/v2/models/fraud_model", 403),  # the inner ONNX model of the pipeline
        ("GET", "/v2/models/fraud%0A", 400),  # a name with a trailing newline
        ("GET", "/v2/models/fraud/versions/%C2%B2", 400),
    ],
)
def test_what_callers_cannot_reach(edge: Supervised, unharmed: None, method: str, path: str, status: int) -> None:
    got, body = send(edge, method, path)
    assert got == status, body


def test_an_inner_model_cannot_be_called_directly(edge: Supervised, unharmed: None) -> None:
    status, body = send(edge, "POST", "/v2/models/fraud_model/infer", json.dumps(good_request_body()).encode())
    assert status == 403 and "not a public pipeline" in body and "['fraud']" in body


def test_server_metadata_lists_only_the_extensions_the_edge_serves(edge: Supervised, unharmed: None) -> None:
    status, body = send(edge, "GET", "/v2")
    extensions = json.loads(body)["extensions"]
    assert status == 200 and extensions and set(extensions) <= set(SERVED_EXTENSIONS)
    assert "model_repository" not in extensions and "statistics" not in extensions
