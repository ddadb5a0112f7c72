"""The edge as an attacker tries it (issue 17): each case through the gateway of a server started as users start it
(`inferline serve up`), with the exact status, Triton's restart counter unmoved, and a good request answered
afterwards."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inferline.features.pipelines import fraud
from inferline.serving.client import InferlineClient, TlsFiles
from inferline.serving.edge_protocol import SERVED_EXTENSIONS
from tests.edge_cases import _wait

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
    for url, protocol in ((edge.record["gateway"], "http"), (edge.record["grpc_edge"], "grpc")):
        with InferlineClient(str(url), protocol, pipeline="fraud") as client:  # type: ignore[arg-type]
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


def test_a_bind_address_that_is_not_host_port_is_a_usage_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "inferline.serving", "up", "--workdir", str(tmp_path), "--bind", "8080"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "expected HOST:PORT" in done.stderr and "Traceback" not in done.stderr


def _pki(root: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate signed by it, and a client certificate
    of another CA and an expired one (openssl, made here; nothing is downloaded)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command (Debian package openssl)")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
            "-days", "2", "-subj", f"/CN={ca}")  # fmt: skip
    (root / "san.ext").write_text("subjectAltName=IP:127.0.0.1,IP:127.0.0.2\n")

    def leaf(name: str, ca: str, days: str, extfile: bool) -> None:
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        extra = ["-extfile", "san.ext"] if extfile else []
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", days, *extra)  # fmt: skip

    leaf("server", "ca", "2", True)
    leaf("client", "ca", "2", False)
    leaf("stranger", "other-ca", "2", False)
    leaf("renewed", "ca", "2", True)  # the server's next certificate (same CA, same addresses)
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "expired.key", "-out", "expired.csr", "-subj", "/CN=old")
    # -days -1: not after a day ago (OpenSSL 3.0 has no -not_after)
    run("x509", "-req", "-in", "expired.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "expired.pem", "-days", "-1")  # fmt: skip
    return {p.stem + p.suffix.replace(".", "_"): p for p in root.iterdir()}


@dataclass
class Hardened:
    """A server whose edge listens on an address of its own (127.0.0.2, standing for a public interface), with
    TLS, mutual TLS and API keys: the production settings, started once for the tests below."""

    server: Supervised
    url: str
    pki: dict[str, Path]
    keys: Path

    def keys_cli(self, *args: str) -> str:
        return _keys_cli(self.keys, *args)

    def tls(self, cert: str = "client") -> TlsFiles:
        return TlsFiles(ca=self.pki["ca_pem"], cert=self.pki[f"{cert}_pem"], key=self.pki[f"{cert}_key"])

    def https(self, path: str, body: bytes | None = None, key: str | None = None) -> tuple[int, dict[str, str], str]:
        import ssl

        context = ssl.create_default_context(cafile=str(self.pki["ca_pem"]))
        context.load_cert_chain(str(self.pki["client_pem"]), str(self.pki["client_key"]))
        request = urllib.request.Request(f"https://{self.url}{path}", data=body, method="POST" if body else "GET")
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()


def _keys_cli(keys: Path, *args: str) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "inferline.serving", "keys", *args, "--file", str(keys)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def hardened(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hardened]:
    from inferline.core.processes import free_port

    root = tmp_path_factory.mktemp("hardened")
    (root / "pki").mkdir()
    pki = _pki(root / "pki")
    keys = root / "keys"
    _keys_cli(keys, "add", "alice")
    bind = f"127.0.0.2:{free_port()}"
    tls = (
        "--tls-cert",
        str(pki["server_pem"]),
        "--tls-key",
        str(pki["server_key"]),
        "--tls-client-ca",
        str(pki["ca_pem"]),
    )
    server = supervised_server(published, root / "srv", "--bind", bind, "--api-keys", str(keys), *tls)
    try:
        yield Hardened(server, bind, pki, keys)
    finally:
        server.stop()


ROWS = fraud.generate(2, seed=7).drop(columns=[fraud.SPEC.label])


def test_the_edge_binds_its_own_address_and_triton_stays_on_loopback(hardened: Hardened) -> None:
    """`--bind` puts the edge on its own address; Triton's HTTP port answers on 127.0.0.1 only, so nothing but the
    edge is reachable there."""
    import socket

    assert hardened.server.record["gateway"] == hardened.url and hardened.server.record["gateway_tls"] is True
    http_port = int(hardened.server.state()["http"].rsplit(":", 1)[1])
    with socket.socket() as probe:
        probe.settimeout(5)
        assert probe.connect_ex(("127.0.0.2", http_port)) != 0, "Triton's port answered beyond 127.0.0.1"


def test_tls_and_mutual_tls_at_the_edge(hardened: Hardened) -> None:
    """HTTPS only: a client trusting the CA with a certificate it signed is served; no client certificate, one of
    another CA, or an expired one fail the handshake; plain HTTP gets no answer."""
    import socket
    import ssl

    key = hardened.keys_cli("add", "tls-test")
    with InferlineClient(hardened.url, "http", pipeline="fraud", tls=hardened.tls(), api_key=key) as client:
        assert client.predict(ROWS).ok.all()
    host, port = hardened.url.rsplit(":", 1)
    pki = hardened.pki

    def handshake(cert: str | None) -> None:
        context = ssl.create_default_context(cafile=str(pki["ca_pem"]))
        if cert is not None:
            context.load_cert_chain(str(pki[f"{cert}_pem"]), str(pki[f"{cert}_key"]))
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls_socket:
                tls_socket.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                if not tls_socket.recv(64).startswith(b"HTTP/1.1 200"):
                    raise ssl.SSLError("no answer")

    handshake("client")
    for refused in (None, "stranger", "expired"):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(refused)
    with socket.create_connection((host, int(port)), timeout=10) as plain:
        plain.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = plain.recv(64)
        except ConnectionError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")


def test_api_keys_authenticate_callers_and_reload_without_a_restart(hardened: Hardened) -> None:
    """`--api-keys FILE`: no key and a wrong key are 401 (with WWW-Authenticate), a key from the file is served,
    the health probes need none, a key revoked in the file is refused from the next request on, with no restart,
    and the file holds hashes only (mode 0600)."""
    from inferline.serving.client import RequestRefused

    bob = hardened.keys_cli("add", "bob")
    text = hardened.keys.read_text()
    assert bob not in text and "bob:" in text and oct(hardened.keys.stat().st_mode)[-3:] == "600"
    body = json.dumps(good_request_body()).encode()
    status, headers, _ = hardened.https("/v2/models/fraud/infer", body)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, _, answer = hardened.https("/v2/models/fraud/infer", body, key="ilk_not-a-key")
    assert status == 401 and "not valid" in answer
    assert hardened.https("/v2/health/ready")[0] == 200
    assert hardened.https("/v2/models/fraud/infer", body, key=bob)[0] == 200
    hardened.keys_cli("revoke", "bob")
    with InferlineClient(hardened.url, "http", pipeline="fraud", tls=hardened.tls(), api_key=bob, retries=0) as c:
        with pytest.raises(RequestRefused, match=r"401|not valid"):
            c.predict(ROWS)
    assert "bob" not in hardened.keys_cli("list").split() and "alice" in hardened.keys_cli("list").split()
    assert hardened.server.state()["restarts"] == 0


# ---- the gRPC edge: the same cases over gRPC, with the codes gRPC clients act on ----


def rpc(url: str, method: str, request: Any, *, timeout: float = 30, **options: Any) -> Any:
    """One unary call of the inference service through a plain gRPC channel; returns the answer's bytes or the
    ``grpc.RpcError``."""
    import grpc

    channel = options.pop("channel", None) or grpc.insecure_channel(url, options=[("grpc.max_send_message_length", -1)])
    with channel:
        call = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
        payload = request if isinstance(request, bytes) else request.SerializeToString()
        try:
            return call(payload, timeout=timeout, **options)
        except grpc.RpcError as exc:
            return exc


def infer_request(rows: int = 2, model: str = "fraud") -> Any:
    """A valid ModelInferRequest for the demo pipeline (typed contents, as tritonclient sends them)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    for tensor in good_request_body(rows)["inputs"]:  # type: ignore[attr-defined]
        t = request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        if tensor["datatype"] == "BYTES":
            t.contents.bytes_contents.extend(v.encode() for v in tensor["data"])
        elif tensor["datatype"] == "FP64":
            t.contents.fp64_contents.extend(tensor["data"])
        else:
            t.contents.int64_contents.extend(tensor["data"])
    return request


def code_of(answer: Any) -> str:
    return "OK" if isinstance(answer, bytes) else answer.code().name


def test_grpc_a_good_request_is_answered(edge: Supervised, unharmed: None) -> None:
    from tritonclient.grpc import service_pb2

    answer = rpc(edge.record["grpc_edge"], "ModelInfer", infer_request())
    assert code_of(answer) == "OK", answer
    outputs = {o.name for o in service_pb2.ModelInferResponse.FromString(answer).outputs}
    assert {"status", "release"} <= outputs


@pytest.mark.parametrize(
    "method",
    [
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryStatus",
        "CudaSharedMemoryRegister",
        "TraceSetting",
        "LogSettings",
    ],
)
def test_grpc_admin_rpcs_are_permission_denied(edge: Supervised, unharmed: None, method: str) -> None:
    """Refused with PERMISSION_DENIED (Triton's own refusal without the admin key was UNAVAILABLE, which clients
    retry), whatever the caller sends, the admin key's metadata included."""
    metadata = (("triton-grpc-protocol-admin-key", "a-guess"),)
    answer = rpc(edge.record["grpc_edge"], method, b"", metadata=metadata)
    assert code_of(answer) == "PERMISSION_DENIED", answer


@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("fraud_model", "PERMISSION_DENIED"),  # the inner ONNX model
        ("nosuch", "PERMISSION_DENIED"),
        ("fraud\x00../../etc", "INVALID_ARGUMENT"),  # answered as `fraud` by Triton's own port
        ("fraud\n", "INVALID_ARGUMENT"),
        ("..", "INVALID_ARGUMENT"),
    ],
)
def test_grpc_model_names_are_checked_in_full(edge: Supervised, unharmed: None, model: str, code: str) -> None:
    from tritonclient.grpc import service_pb2

    url = edge.record["grpc_edge"]
    assert code_of(rpc(url, "ModelInfer", infer_request(model=model))) == code
    assert code_of(rpc(url, "ModelMetadata", service_pb2.ModelMetadataRequest(name=model))) == code
    assert code_of(rpc(url, "ModelReady", service_pb2.ModelReadyRequest(name=model))) == code


def _tampered(case: str) -> Any:
    request = infer_request()
    amount = next(t for t in request.inputs if t.datatype == "FP64")
    if case == "huge shape":
        amount.shape[:] = [10**9, 10**9]
    elif case == "negative dimension":
        amount.shape[:] = [-1, 2]
    elif case == "count mismatch":
        amount.contents.fp64_contents.append(1.0)
    elif case == "wrong contents field":
        amount.contents.ClearField("fp64_contents")
        amount.contents.fp32_contents.extend([1.0, 2.0])
    elif case == "unknown datatype":
        amount.datatype = "FP128"
    elif case == "raw bytes that lie":
        for t in request.inputs:
            t.ClearField("contents")
            request.raw_input_contents.append(b"\x00" * 3)
    elif case == "raw and typed mixed":
        request.raw_input_contents.extend([b"\x00" * 16] * len(request.inputs))
    elif case == "shared memory":
        amount.parameters["shared_memory_region"].string_param = "region"
        return request, "PERMISSION_DENIED"
    return request, "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "case",
    [
        "huge shape",
        "negative dimension",
        "count mismatch",
        "wrong contents field",
        "unknown datatype",
        "raw bytes that lie",
        "raw and typed mixed",
        "shared memory",
    ],
)
def test_grpc_malformed_tensors_never_reach_triton(edge: Supervised, unharmed: None, case: str) -> None:
    request, code = _tampered(case)
    before = edge.metrics().get('inferline_gateway_forwarded_requests_total{route="grpc"}', 0.0)
    answer = rpc(edge.record["grpc_edge"], "ModelInfer", request)
    assert code_of(answer) == code, answer
    assert edge.metrics().get('inferline_gateway_forwarded_requests_total{route="grpc"}', 0.0) == before


def test_grpc_a_message_over_the_limit_is_resource_exhausted(edge: Supervised, unharmed: None) -> None:
    """64 MB was accepted before; the edge's limit is 4 MiB by default (`--max-message-bytes`)."""
    request = infer_request()
    request.inputs[0].parameters["padding"].string_param = "x" * (5 * 1024 * 1024)
    answer = rpc(edge.record["grpc_edge"], "ModelInfer", request)
    assert code_of(answer) == "RESOURCE_EXHAUSTED", answer


def test_grpc_streaming_is_refused(edge: Supervised, unharmed: None) -> None:
    import grpc

    with grpc.insecure_channel(edge.record["grpc_edge"]) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        with pytest.raises(grpc.RpcError) as refused:
            list(stream(iter([infer_request().SerializeToString()]), timeout=30))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_grpc_server_metadata_lists_only_the_extensions_the_edge_serves(edge: Supervised, unharmed: None) -> None:
    from tritonclient.grpc import service_pb2

    answer = rpc(edge.record["grpc_edge"], "ServerMetadata", service_pb2.ServerMetadataRequest())
    extensions = list(service_pb2.ServerMetadataResponse.FromString(answer).extensions)
    assert extensions and set(extensions) <= set(SERVED_EXTENSIONS)


def test_grpc_admission_bound_is_resource_exhausted_with_pushback(edge: Supervised) -> None:
    """The admission bound over gRPC, in process against the edge server's Triton: with its one slot held and no
    queue, a call gets RESOURCE_EXHAUSTED with gRPC's retry pushback; while the model server restarts, UNAVAILABLE;
    once the slot is free, the call is served."""
    import asyncio

    import grpc
    from grpc import aio

    from inferline.core.processes import free_port
    from inferline.serving.edge_limits import GatewayLimits
    from inferline.serving.gateway import Gateway
    from inferline.serving.grpc_edge import GrpcEdge

    async def scenario() -> list[tuple[str, dict[str, str]]]:
        gateway = Gateway(edge.state()["http"], GatewayLimits(max_inflight=1, max_queued=0))
        grpc_edge = GrpcEdge(gateway, edge.state()["grpc"])
        port = free_port()
        await gateway.start("127.0.0.1", free_port())
        await grpc_edge.start("127.0.0.1", port)
        seen = []
        try:
            async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

                async def once() -> tuple[str, dict[str, str]]:
                    try:
                        await call(infer_request().SerializeToString(), timeout=30)
                        return "OK", {}
                    except aio.AioRpcError as exc:
                        return exc.code().name, dict(exc.trailing_metadata() or ())

                async with gateway.admitted():  # a request running on the one slot
                    seen.append(await once())
                gateway.available = False
                seen.append(await once())
                gateway.available = True
                seen.append(await once())
        finally:
            await grpc_edge.stop(0)
            await gateway.stop()
        return seen

    loop = asyncio.new_event_loop()
    try:
        (busy, busy_trailer), (restarting, _), (free, _) = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert busy == grpc.StatusCode.RESOURCE_EXHAUSTED.name and busy_trailer["grpc-retry-pushback-ms"] == "1000"
    assert restarting == "UNAVAILABLE" and free == "OK"


def test_grpc_edge_tls_and_api_keys(hardened: Hardened) -> None:
    """The gRPC edge of the hardened server: on the edge's own address, TLS with the client's certificate, and
    the keys file: no key and a wrong key are UNAUTHENTICATED, the health RPCs need none, a key is served, and a
    key revoked in the file is refused from the next call on; a client without a certificate is not served."""
    import grpc

    from inferline.serving.client import RequestRefused

    url = str(hardened.server.record["grpc_edge"])
    assert url.startswith("127.0.0.2:")
    pki = hardened.pki

    def channel(cert: str | None = "client") -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            pki["ca_pem"].read_bytes(),
            pki[f"{cert}_key"].read_bytes() if cert else None,
            pki[f"{cert}_pem"].read_bytes() if cert else None,
        )
        return grpc.secure_channel(url, credentials)

    carol = hardened.keys_cli("add", "carol")
    with InferlineClient(url, "grpc", pipeline="fraud", tls=hardened.tls(), api_key=carol) as client:
        assert client.predict(ROWS).ok.all()
    request = infer_request()
    assert code_of(rpc(url, "ModelInfer", request, channel=channel())) == "UNAUTHENTICATED"
    wrong = (("authorization", "Bearer ilk_not-a-key"),)
    assert code_of(rpc(url, "ModelInfer", request, channel=channel(), metadata=wrong)) == "UNAUTHENTICATED"
    from tritonclient.grpc import service_pb2

    assert code_of(rpc(url, "ServerReady", service_pb2.ServerReadyRequest(), channel=channel())) == "OK"
    for refused in (None, "stranger", "expired"):
        answer = rpc(url, "ServerReady", service_pb2.ServerReadyRequest(), channel=channel(refused), timeout=10)
        assert code_of(answer) == "UNAVAILABLE", refused  # the handshake fails: nothing is served
    hardened.keys_cli("revoke", "carol")
    with InferlineClient(url, "grpc", pipeline="fraud", tls=hardened.tls(), api_key=carol, retries=0) as client:
        with pytest.raises(RequestRefused, match=r"UNAUTHENTICATED|not valid"):
            client.predict(ROWS)
    assert hardened.server.state()["restarts"] == 0


def test_the_admin_key_is_not_on_tritonservers_command_line(edge: Supervised) -> None:
    """Triton 2.51 takes the admin key only as a flag; `/proc/PID/cmdline` is readable by every local user, so the
    key is overwritten there once Triton has parsed it, and the admin APIs still take it."""
    from inferline.core.secrets import admin_key
    from inferline.serving.client import ready_models

    state = edge.state()
    key = admin_key(edge.workdir)
    cmdline = Path(f"/proc/{state['pid']}/cmdline").read_bytes()
    assert b"tritonserver" in cmdline and b"admin-key=" in cmdline
    assert key.encode() not in cmdline and state["admin_key_hidden"] is True
    assert any(m["name"] == "fraud" for m in ready_models(state["http"], key))  # an admin API, with the key


def test_a_renewed_certificate_is_served_without_a_restart(hardened: Hardened) -> None:
    """The certificate and key files replaced (as a renewal does): the next handshakes on the HTTP and gRPC edges
    present the new certificate, the server did not restart, and callers trusting the CA are served as before."""
    import os
    import shutil
    import socket
    import ssl

    pki = hardened.pki
    host, port = hardened.url.rsplit(":", 1)
    grpc_port = int(str(hardened.server.record["grpc_edge"]).rsplit(":", 1)[1])

    def served_name(port: int, alpn: list[str] | None = None) -> str:
        context = ssl.create_default_context(cafile=str(pki["ca_pem"]))
        context.load_cert_chain(str(pki["client_pem"]), str(pki["client_key"]))
        if alpn:
            context.set_alpn_protocols(alpn)
        with socket.create_connection((host, port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls_socket:
                subject = dict(x[0] for x in tls_socket.getpeercert()["subject"])  # type: ignore[index]
                return str(subject["commonName"])

    assert served_name(int(port)) == "server" and served_name(grpc_port, ["h2"]) == "server"
    for suffix in ("key", "pem"):  # each file replaced atomically, the key first
        staged = pki[f"server_{suffix}"].with_suffix(".next")
        shutil.copyfile(pki[f"renewed_{suffix}"], staged)
        os.replace(staged, pki[f"server_{suffix}"])
    _wait(lambda: served_name(int(port)) == "renewed")
    assert served_name(grpc_port, ["h2"]) == "renewed"
    key = hardened.keys_cli("add", "renewal-test")
    for url, protocol in ((hardened.url, "http"), (str(hardened.server.record["grpc_edge"]), "grpc")):
        with InferlineClient(url, protocol, pipeline="fraud", tls=hardened.tls(), api_key=key) as client:  # type: ignore[arg-type]
            assert client.predict(ROWS).ok.all()
    assert hardened.server.state()["restarts"] == 0


# ---- the allow-list edge (issue 29): each class that crashed Triton 2.51 through a byte-for-byte edge, and its
# neighbours. Triton receives only what the edge built; the restart counter stays where it was (`unharmed`).


def _with(change: str) -> bytes:
    body: dict[str, Any] = good_request_body()
    amount = next(t for t in body["inputs"] if t["datatype"] == "FP64")  # type: ignore[union-attr]
    if change == "output classification parameter":  # SIGFPE on 2.51 with 0 classes
        body["outputs"] = [{"name": "probabilities", "parameters": {"classification": 0}}]
    elif change == "output shared-memory region":
        body["outputs"] = [
            {"name": "probabilities", "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 8}}
        ]
    elif change == "request parameter not documented":
        body["parameters"] = {"timeout": 0}
    elif change == "input parameter not documented":
        amount["parameters"] = {"shared_memory_offset": 0}
    elif change == "field not in the protocol":
        body["sneaky"] = {"inputs": []}
    elif change == "input field not in the protocol":
        amount["contents"] = {"fp64_contents": [1.0]}
    elif change == "FP64 integer beyond float range":
        amount["data"] = [10**400, 1]
    elif change == "FP32 number beyond its range":
        body["inputs"].append({"name": "extra", "datatype": "FP32", "shape": [1], "data": [1e39]})  # type: ignore[union-attr]
    return json.dumps(body).encode()


HTTP_CASES = {
    "output classification parameter": "'classification'",
    "output shared-memory region": "'shared_memory_region'",
    "request parameter not documented": "'timeout'",
    "input parameter not documented": "'shared_memory_offset'",
    "field not in the protocol": "'sneaky'",
    "input field not in the protocol": "'contents'",
    "FP64 integer beyond float range": "within +-1.8e308",
    "FP32 number beyond its range": "within +-3.4e38",
}


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_http_fields_and_parameters_outside_the_allow_list_are_400s_naming_them(
    edge: Supervised, unharmed: None, case: str, record_property: Any
) -> None:
    forwarded = 'inferline_gateway_forwarded_requests_total{route="infer"}'
    before = edge.metrics().get(forwarded, 0.0)
    status, body = send(edge, "POST", "/v2/models/fraud/infer", _with(case))
    record_property("answer", f"{status} {json.loads(body)['error'][:160]}")
    assert status == 400 and HTTP_CASES[case] in body, body
    assert edge.metrics().get(forwarded, 0.0) == before  # refused at the edge: Triton saw nothing


@pytest.mark.parametrize(
    "headers",
    [
        {"Accept-Encoding": "gzip;q=abc"},  # Triton's parser of this header aborted the server (SIGABRT)
        {"Accept-Encoding": "deflate;q=1e999, gzip;q=-1"},
        {"Inference-Header-Content-Length": "00000000000000000000"},
        {"X-Forwarded-For": "not an address", "Content-Type": "text/plain", "Accept": "image/*;q=x"},
    ],
    ids=["q-value not a number", "q-values out of range", "header length all zeros", "odd headers"],
)
def test_caller_headers_never_reach_triton(
    edge: Supervised, unharmed: None, headers: dict[str, str], record_property: Any
) -> None:
    """The edge writes the headers Triton needs itself: a caller's only change what the edge reads (a header
    length that does not fit the body is a 400), never what Triton parses."""
    status, body = send(edge, "POST", "/v2/models/fraud/infer", json.dumps(good_request_body()).encode(), **headers)
    record_property("answer", f"{status} {body[:160]}")
    if HEADER_LENGTH in headers:
        assert status == 400 and HEADER_LENGTH in body, body
    else:
        assert status == 200 and "Content-Encoding" not in body, body


def test_a_second_content_encoding_header_is_refused_before_the_body_is_read(
    edge: Supervised, unharmed: None, record_property: Any
) -> None:
    """`identity` then `gzip`: the check read the first; aiohttp inflated by the last."""
    import gzip
    import http.client

    host, port = str(edge.record["gateway"]).rsplit(":", 1)
    payload = gzip.compress(json.dumps(good_request_body()).encode())
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", "/v2/models/fraud/infer")
        for name, value in (("Content-Encoding", "identity"), ("Content-Encoding", "gzip")):
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(payload)))
        connection.endheaders(payload)
        answer = connection.getresponse()
        status, body = answer.status, answer.read().decode()
    finally:
        connection.close()
    record_property("answer", f"{status} {body[:160]}")
    assert status == 415 and "'gzip'" in body, body


def _grpc_with(change: str) -> tuple[Any, str]:
    request = infer_request()
    if change == "output classification parameter":
        request.outputs.add(name="probabilities").parameters["classification"].int64_param = 0
    elif change == "request parameter not documented":
        request.parameters["priority"].int64_param = 1
    elif change == "input parameter not documented":
        request.inputs[0].parameters["binary_data_size"].int64_param = 4
    elif change == "output shared-memory region":
        request.outputs.add(name="probabilities").parameters["shared_memory_region"].string_param = "r"
        return request, "PERMISSION_DENIED"
    return request, "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "case",
    [
        "output classification parameter",
        "request parameter not documented",
        "input parameter not documented",
        "output shared-memory region",
        "field not in the protocol",
    ],
)
def test_grpc_fields_and_parameters_outside_the_allow_list_are_refused(
    edge: Supervised, unharmed: None, case: str, record_property: Any
) -> None:
    import grpc

    before = edge.metrics().get('inferline_gateway_forwarded_requests_total{route="grpc"}', 0.0)
    if case == "field not in the protocol":
        # field 99 (varint 1): no field of ModelInferRequest; protobuf keeps it as an unknown field
        request, code = infer_request().SerializeToString() + b"\x98\x06\x01", "INVALID_ARGUMENT"
    else:
        request, code = _grpc_with(case)
    answer = rpc(edge.record["grpc_edge"], "ModelInfer", request)
    details = "" if isinstance(answer, bytes) else str(answer.details())
    record_property("answer", f"{code_of(answer)} {details[:160]}")
    assert code_of(answer) == code, answer
    if code == "INVALID_ARGUMENT":
        assert ("does not take" in details) or ("field number(s) [99]" in details), details
    assert isinstance(answer, grpc.RpcError)
    assert edge.metrics().get('inferline_gateway_forwarded_requests_total{route="grpc"}', 0.0) == before
