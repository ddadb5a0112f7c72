"""Hostile requests against a real server of their own (SECURITY.md cases 1-4 and 6): each is refused with the
status measured on the bundled Triton 2.51, no file is touched, and the server still answers a good request."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inferline.core.secrets import ADMIN_HEADER
from inferline.features.pipelines import fraud
from inferline.serving.client import InferlineClient
from inferline.serving.server import TritonServer

from .conftest import Published, private_server


@pytest.fixture(scope="module")
def target(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = private_server(published, tmp_path_factory.mktemp("attacked"))
    try:
        yield server
    finally:
        server.stop()


def files(repository: Path) -> tuple[dict[str, bytes], list[str]]:
    """Every file of the repository, and the names beside it (the server's own work directory changes: its log)."""
    content = {str(p.relative_to(repository)): p.read_bytes() for p in sorted(repository.rglob("*")) if p.is_file()}
    return content, sorted(p.name for p in repository.parent.iterdir())


def call(server: TritonServer, method: str, path: str, body: object = None, admin: bool = False) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    headers = {ADMIN_HEADER: server.admin_key} if admin else {}
    request = urllib.request.Request(
        f"http://{server.config.http_url}{path}", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def still_serves(server: TritonServer) -> None:
    with InferlineClient(server.config.http_url, "http", pipeline="fraud") as client:
        p = client.predict(fraud.generate(4, seed=2).drop(columns=[fraud.SPEC.label]))
    assert p.ok.all() and set(p.release) == {"fraud:2"}


@pytest.mark.parametrize("name", ["..%2Fx", "%2Fetc%2Fpasswd", "a%2F..%2Fb", "a%20b", "fraud%2F..%2Ffraud_model"])
def test_traversal_model_names_are_refused_and_touch_nothing(target: TritonServer, name: str) -> None:
    repository = Path(target.config.repository)
    before = files(repository)
    status, body = call(target, "POST", f"/v2/models/{name}/infer", {"inputs": []})
    assert status == 404 and "unknown model" in body
    status, body = call(target, "POST", f"/v2/repository/models/{name}/load", {}, admin=True)
    assert status == 500 and "failed to load" in body
    status, _ = call(target, "POST", "/v2/models//infer", {"inputs": []})  # an empty name
    assert status == 404
    assert files(repository) == before
    still_serves(target)


def test_dot_dot_as_a_model_name(published: Published, tmp_path: Path) -> None:
    """Triton 2.51 polls the repository's parent for a model named '..' (admin key required): the load is refused,
    nothing is written, inference goes on. Under strict readiness that load left ``/v2/health/ready`` at 400 until a
    restart (the upstream defect, SECURITY.md); the server runs with ``--strict-readiness=false`` (one model that
    does not load must not make the others look down), so it stays ready, and so does the pipeline."""
    server = private_server(published, tmp_path)
    try:
        before = files(tmp_path / "triton_models")
        assert call(server, "POST", "/v2/models/../infer", {"inputs": []})[0] == 404
        status, body = call(server, "POST", "/v2/repository/models/../load", {}, admin=True)
        assert status == 400 and "at least one version must be available" in body
        assert files(tmp_path / "triton_models") == before
        still_serves(server)
        assert call(server, "GET", "/v2/health/ready")[0] == 200
        assert call(server, "GET", "/v2/models/fraud/ready")[0] == 200
    finally:
        server.stop()


def test_file_override_escaping_the_model_directory_is_refused(target: TritonServer, tmp_path: Path) -> None:
    escape = tmp_path / "pwned.onnx"
    repository = Path(target.config.repository)
    before = files(repository)
    override = {"config": "{}", f"file:1/../../../../../../../..{escape}": "AAAA"}
    status, body = call(target, "POST", "/v2/repository/models/fraud_model/load", {"parameters": override}, admin=True)
    assert status == 500 and "failed to load" in body
    assert not escape.exists() and files(repository) == before
    still_serves(target)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/logging", {"log_file": "/tmp/inferline-attack.log"}),
        ("/v2/trace/setting", {"trace_file": "/tmp/inferline-attack.trace"}),
        ("/v2/systemsharedmemory/region/r1/register", {"key": "/r1", "offset": 0, "byte_size": 8}),
        ("/v2/repository/index", {}),
        ("/v2/repository/models/fraud_model/unload", {}),
    ],
)
def test_admin_apis_without_the_secret_are_refused_while_inference_works(
    target: TritonServer, path: str, body: object
) -> None:
    status, text = call(target, "POST", path, body)
    assert status == 403 and "restricted" in text
    assert not Path("/tmp/inferline-attack.log").exists() and not Path("/tmp/inferline-attack.trace").exists()
    assert call(target, "GET", "/v2/health/ready")[0] == 200
    assert call(target, "GET", "/v2/models/fraud")[0] == 200  # metadata stays public
    still_serves(target)


def test_grpc_admin_apis_without_the_secret_are_refused(target: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(target.config.grpc_url)
    try:
        for attempt in (
            lambda: client.load_model("fraud_model"),
            lambda: client.get_model_repository_index(),
            lambda: client.update_log_settings({"log_file": "/tmp/inferline-attack.log"}),
            lambda: client.register_system_shared_memory("r1", "/r1", 8),
        ):
            with pytest.raises(InferenceServerException) as refused:
                attempt()
            assert "restricted" in str(refused.value).lower() or "permission" in str(refused.value).lower()
        assert client.is_server_ready() and client.is_model_ready("fraud")
    finally:
        client.close()
    still_serves(target)


def test_nan_and_inf_get_a_reason_per_row_never_a_silent_nan_prediction(target: TritonServer) -> None:
    rows = fraud.generate(5, seed=3).drop(columns=[fraud.SPEC.label])
    rows["amount"] = [np.nan, np.inf, -np.inf, 12.5, 1e308 * 10]
    for protocol, url in (("http", target.config.http_url), ("grpc", target.config.grpc_url)):
        with InferlineClient(url, protocol, pipeline="fraud") as client:  # type: ignore[arg-type]
            p = client.predict(rows)
        # NaN is the FP64 wire's null; infinities (and overflow to inf) break the finite rule
        assert p.status == ["amount:null", "amount:not_finite", "amount:not_finite", "ok", "amount:not_finite"]
        assert np.isfinite(p.probabilities).all()
