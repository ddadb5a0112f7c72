"""Against a real tritonserver, over the real tritonclient HTTP and gRPC clients."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from inferline.core.processes import free_port
from inferline.demo import in_process_probabilities
from inferline.features.pipelines import fraud
from inferline.serving.client import InferlineClient, encode_rows
from inferline.serving.server import TritonServer

from .conftest import Published

SPEC = fraud.SPEC


def _assert_live(server: TritonServer) -> None:
    assert server.process is not None and server.process.poll() is None
    assert server.is_ready()


def test_repository_loads_exactly_the_current_release(triton: TritonServer, published: Published) -> None:
    with InferlineClient(triton.config.http_url, "http", pipeline="fraud", admin_key=triton.admin_key) as client:
        index = {(m["name"], m.get("version")): m.get("state") for m in client.repository_index()}
    # the local target serves one fused Python-backend model whose version is the release: nothing else is loaded
    assert {key for key, state in index.items() if state == "READY"} == {("fraud", "2")}
    # both versions are on disk, so a rollback can load the previous one
    for v in (1, 2):
        assert (published.repository / "fraud_model" / str(v) / "model.onnx").exists()
        assert (published.repository / "fraud" / str(v) / "model.py").exists()


def _in_process(repository: Path, version: int, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What release ``version`` answers, computed in this process: the contract on the raw columns, then
    onnxruntime on the release's own model; bad rows too (their neutral features are scored as well)."""
    from inferline.features.contract import compile_contract
    from inferline.features.spec import read_spec
    from inferline.features.state import FeatureState
    from inferline.release.runtime import onnx_session

    release = repository / "fraud_preprocess" / str(version)
    contract = compile_contract(read_spec(release / "spec.json"), FeatureState.load(release / "feature_state.json"))
    m, status = contract.featurize({k: v.reshape(-1) for k, v in arrays.items()})
    session = onnx_session(repository / "fraud_model" / str(version) / "model.onnx")
    probabilities, predicted = session.run(
        ["probabilities", "predicted_class"], {"numeric": m.numeric, "categorical": m.categorical}
    )
    return {"probabilities": probabilities, "predicted_class": predicted, "status": np.asarray(status)}


def _mixed_rows(holdout: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` holdout rows, every fifth one breaking a different rule."""
    rows = holdout.head(n).drop(columns=[SPEC.label]).copy().reset_index(drop=True)
    rows["amount"] = rows["amount"].astype("float64")
    rows["event_time"] = rows["event_time"].map(lambda t: t.isoformat()).astype(object)
    for i in range(0, n, 5):
        kind = (i // 5) % 4
        if kind == 0:
            rows.loc[i, "amount"] = -5.0
        elif kind == 1:
            rows.loc[i, "channel"] = "fax"
        elif kind == 2:
            rows.loc[i, "event_time"] = "2026-02-01T10:00:00"  # naive
        else:
            rows.loc[i, "amount"] = np.nan
    return rows


def test_local_target_serves_through_one_python_model_equal_to_in_process(
    triton: TritonServer, published: Published, holdout: pd.DataFrame
) -> None:
    """``--target local``: clients call ``fraud`` as before, and it is one Python-backend model (no ensemble, no inner
    model loaded). Concurrent requests of different sizes, good and bad rows mixed (Triton may batch them into one
    execute), each get exactly what the release computes in process for their own rows."""
    client = httpclient.InferenceServerClient(triton.config.http_url, concurrency=8)
    try:
        config = client.get_model_config("fraud")
        assert config["backend"] == "python" and "ensemble_scheduling" not in config
        assert config["version_policy"] == {"specific": {"versions": [2]}}
        assert {o["name"] for o in config["output"]} == {"probabilities", "predicted_class", "status", "release"}
        rows = _mixed_rows(holdout, 60)
        sizes = [1, 7, 3, 13, 16, 1, 19]
        bounds = np.cumsum([0, *sizes])
        chunks = [rows.iloc[bounds[i] : bounds[i + 1]] for i in range(len(sizes))]
        pending = [client.async_infer("fraud", _raw_inputs(httpclient, chunk)) for chunk in chunks]
        for chunk, request in zip(chunks, pending, strict=True):
            answer = request.get_result()
            expected = _in_process(published.repository, 2, encode_rows(chunk, SPEC))
            n = len(chunk)
            probabilities = answer.as_numpy("probabilities")
            assert probabilities.dtype == np.float32 and probabilities.shape == (n, len(SPEC.classes))
            np.testing.assert_allclose(probabilities, expected["probabilities"], atol=1e-6, rtol=0)
            predicted = answer.as_numpy("predicted_class")
            assert predicted.dtype == np.int64 and predicted.shape == (n, 1)
            np.testing.assert_array_equal(predicted, expected["predicted_class"])
            assert answer.as_numpy("status").shape == (n, 1)
            assert [s.decode() for s in answer.as_numpy("status").reshape(-1)] == expected["status"].tolist()
            assert set(answer.as_numpy("release").reshape(-1)) == {b"fraud:2"}
        statuses = [s for c in chunks for s in _in_process(published.repository, 2, encode_rows(c, SPEC))["status"]]
        reasons = {"amount:negative", "channel:unknown_value", "event_time:naive_timestamp", "amount:null"}
        assert reasons <= set(statuses) and statuses.count("ok") >= 40  # the mix really mixes
    finally:
        client.close()
    _assert_live(triton)


class _Tensor:
    """Stand-in for ``triton_python_backend_utils.Tensor`` (only Triton provides the real one)."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class _Response:
    def __init__(self, output_tensors: list[_Tensor] | None = None, error: object = None) -> None:
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors or []}
        self.error = error


class _Error:
    def __init__(self, message: str) -> None:
        self.text = message


class _Request:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.tensors = {k: _Tensor(k, v) for k, v in arrays.items()}


def test_fused_execute_scores_a_batch_at_once_and_isolates_an_unreadable_request(
    published: Published, holdout: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fused model's ``execute`` in this process, Triton's utilities stood in for: the requests of one call are
    featurized once and scored with one ``session.run``; a request that cannot be read (a column missing) gets an
    error response and the requests beside it are still answered, each equal to the in-process computation."""
    import importlib.util
    import types

    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = _Tensor  # type: ignore[attr-defined]
    fake.InferenceResponse = _Response  # type: ignore[attr-defined]
    fake.TritonError = _Error  # type: ignore[attr-defined]
    fake.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # the shared release directory stays as published
    source = published.repository / "fraud" / "2" / "model.py"
    spec = importlib.util.spec_from_file_location("fused_under_test", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": (published.repository / "fraud" / "2" / "release.config.json").read_text(),
            "model_repository": str(published.repository / "fraud"),
            "model_version": "2",
        }
    )
    calls = {"featurize": 0, "run": 0}
    featurize, session = model.contract.featurize, model.session

    def counted_featurize(*args: object, **kwargs: object) -> object:
        calls["featurize"] += 1
        return featurize(*args, **kwargs)

    class CountedSession:
        def run(self, *args: object) -> object:
            calls["run"] += 1
            return session.run(*args)

    monkeypatch.setattr(model.contract, "featurize", counted_featurize)
    model.session = CountedSession()

    rows = _mixed_rows(holdout, 20)
    chunks = [rows.iloc[:3], rows.iloc[3:4], rows.iloc[4:20]]
    arrays = [encode_rows(c, SPEC) for c in chunks]
    responses = model.execute([_Request(a) for a in arrays])
    assert calls == {"featurize": 1, "run": 1}, "one featurize and one session.run for the whole batch"
    for a, response in zip(arrays, responses, strict=True):
        expected = _in_process(published.repository, 2, a)
        assert response.error is None
        np.testing.assert_allclose(response.outputs["probabilities"], expected["probabilities"], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(response.outputs["predicted_class"], expected["predicted_class"])
        assert [s.decode() for s in response.outputs["status"].reshape(-1)] == expected["status"].tolist()
        assert set(response.outputs["release"].reshape(-1)) == {b"fraud:2"}

    unreadable = {k: v for k, v in arrays[0].items() if k != "amount"}
    responses = model.execute([_Request(arrays[1]), _Request(unreadable), _Request(arrays[2])])
    assert [r.error is None for r in responses] == [True, False, True]
    assert "fraud could not read the request" in responses[1].error.text and "amount" in responses[1].error.text
    for a, response in zip((arrays[1], arrays[2]), (responses[0], responses[2]), strict=True):
        expected = _in_process(published.repository, 2, a)
        np.testing.assert_allclose(response.outputs["probabilities"], expected["probabilities"], atol=1e-6, rtol=0)
        assert [s.decode() for s in response.outputs["status"].reshape(-1)] == expected["status"].tolist()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_predictions_match_training_code(
    triton: TritonServer, published: Published, holdout: pd.DataFrame, protocol: str
) -> None:
    run_dir = published.runs[1].run_dir  # release 2 is current
    rows = holdout.head(1500)
    expected = in_process_probabilities(run_dir, rows, "fraud")
    url = triton.config.http_url if protocol == "http" else triton.config.grpc_url
    with InferlineClient(url, protocol, pipeline="fraud") as client:  # type: ignore[arg-type]
        p = client.predict(rows)
    assert len(p) == len(rows)
    assert all(s == "ok" for s in p.status)
    assert set(p.release) == {"fraud:2"}
    diff = float(np.abs(p.probabilities - expected).max())
    assert diff <= 1e-5, diff
    threshold = json.loads((run_dir / "feature_state.json").read_text())["threshold"]
    np.testing.assert_array_equal(p.predicted_class, (expected[:, 1] >= threshold).astype(np.int64))
    assert len(p.latencies_s) == -(-len(rows) // SPEC.model.max_batch_size)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_rows_get_a_status_and_the_rest_are_scored(
    triton: TritonServer, published: Published, holdout: pd.DataFrame, protocol: str
) -> None:
    rows = holdout.head(6).copy().reset_index(drop=True)
    rows["amount"] = rows["amount"].astype("float64")
    rows.loc[1, "amount"] = -5.0
    rows.loc[2, "amount"] = np.nan
    rows.loc[3, "channel"] = "fax"
    rows["event_time"] = rows["event_time"].map(lambda t: t.isoformat()).astype(object)
    rows.loc[4, "event_time"] = "2026-02-01T10:00:00"  # naive: the spec's policy rejects it
    url = triton.config.http_url if protocol == "http" else triton.config.grpc_url
    with InferlineClient(url, protocol, pipeline="fraud") as client:  # type: ignore[arg-type]
        p = client.predict(rows)
    _assert_live(triton)
    assert p.status == [
        "ok",
        "amount:negative",
        "amount:null",
        "channel:unknown_value",
        "event_time:naive_timestamp",
        "ok",
    ]
    assert np.isfinite(p.probabilities).all(), "never a NaN prediction"
    assert set(p.release) == {"fraud:2"}, "every row, bad or good, is answered by the current release"
    # the good rows beside the bad ones are scored as training code scores them, and as if they were sent alone
    good = [0, 5]
    expected = in_process_probabilities(published.runs[1].run_dir, holdout.head(6).loc[good], "fraud")
    np.testing.assert_allclose(p.probabilities[good], expected, atol=1e-5, rtol=0)
    with InferlineClient(url, protocol, pipeline="fraud") as client:  # type: ignore[arg-type]
        alone = client.predict(rows.loc[good])
    assert alone.status == ["ok", "ok"]
    np.testing.assert_allclose(p.probabilities[good], alone.probabilities, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(p.predicted_class[good], alone.predicted_class)


def _raw_inputs(module, rows: pd.DataFrame) -> list:
    arrays = encode_rows(rows, SPEC)
    inputs = []
    for c in SPEC.input_columns:
        inp = module.InferInput(c.name, list(arrays[c.name].shape), c.triton_dtype)
        inp.set_data_from_numpy(arrays[c.name])
        inputs.append(inp)
    return inputs


def test_bad_requests_get_clear_errors_and_the_server_stays_live(triton: TritonServer, holdout: pd.DataFrame) -> None:
    client = httpclient.InferenceServerClient(triton.config.http_url)
    rows = holdout.head(2)
    inputs = _raw_inputs(httpclient, rows)

    with pytest.raises(InferenceServerException, match=r"unknown model|not found"):
        client.infer("no_such_model", inputs)
    _assert_live(triton)

    with pytest.raises(InferenceServerException, match="expected 9 inputs but got 8"):
        client.infer("fraud", [i for i in inputs if i.name() != "amount"])
    _assert_live(triton)

    wrong_type = httpclient.InferInput("amount", [2, 1], "FP32")
    wrong_type.set_data_from_numpy(np.ones((2, 1), dtype=np.float32))
    with pytest.raises(
        InferenceServerException, match="input 'amount' data-type is 'FP32', but model 'fraud' expects 'FP64'"
    ):
        client.infer("fraud", [i if i.name() != "amount" else wrong_type for i in inputs])
    _assert_live(triton)

    wrong_shape = httpclient.InferInput("amount", [2, 3], "FP64")
    wrong_shape.set_data_from_numpy(np.ones((2, 3), dtype=np.float64))
    with pytest.raises(InferenceServerException, match="unexpected shape for input 'amount'"):
        client.infer("fraud", [i if i.name() != "amount" else wrong_shape for i in inputs])
    _assert_live(triton)

    big = pd.concat([holdout] * 2).head(SPEC.model.max_batch_size + 1)
    with pytest.raises(InferenceServerException, match="batch-size must be <= 256"):
        client.infer("fraud", _raw_inputs(httpclient, big))
    _assert_live(triton)

    # after all of that, a good request is still answered
    assert client.infer("fraud", inputs).as_numpy("status").reshape(-1).tolist() == [b"ok", b"ok"]


def test_admin_apis_need_the_secret(triton: TritonServer, tmp_path: Path) -> None:
    base = f"http://{triton.config.http_url}"
    log_file = tmp_path / "pwned.log"  # where an unauthenticated caller would redirect the server's log
    for path, body in (
        ("/v2/repository/index", b"{}"),
        ("/v2/repository/models/fraud/unload", b"{}"),
        ("/v2/logging", json.dumps({"log_file": str(log_file)}).encode()),
        ("/v2/trace/setting", b"{}"),
        ("/v2/systemsharedmemory/status", None),
    ):
        request = urllib.request.Request(base + path, data=body, method="POST" if body else "GET")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 403, path
        assert "restricted" in info.value.read().decode()
    assert not log_file.exists() and list(tmp_path.iterdir()) == [], "the restricted logging API wrote nothing"
    grpc = grpcclient.InferenceServerClient(triton.config.grpc_url)
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc.get_model_repository_index()
    with pytest.raises(InferenceServerException, match="restricted"):
        grpc.unload_model("fraud")
    # with the secret the same API answers, over both protocols; health and metadata never needed it
    authorized = urllib.request.Request(
        base + "/v2/repository/index", data=b"{}", method="POST", headers={"admin-key": triton.admin_key}
    )
    with urllib.request.urlopen(authorized, timeout=5) as r:
        assert r.status == 200
    assert grpc.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": triton.admin_key}).models
    assert grpc.is_model_ready("fraud") and grpc.get_model_metadata("fraud").name == "fraud"
    _assert_live(triton)


def test_metrics_endpoint_reports_inference_counts(triton: TritonServer) -> None:
    with urllib.request.urlopen(triton.config.metrics_url, timeout=5) as r:
        text = r.read().decode()
    assert 'nv_inference_count{model="fraud"' in text
    assert "nv_inference_request_summary_us" in text


def test_serving_command_line_up_status_predict_down(
    published: Published, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    ports = [str(free_port()) for _ in range(3)]
    base, wd = [sys.executable, "-m", "inferline.serving"], ["--workdir", str(workdir)]
    up = subprocess.run(
        [
            *base,
            "up",
            *wd,
            "--repository",
            str(published.repository),
            "--http-port",
            ports[0],
            "--grpc-port",
            ports[1],
            "--metrics-port",
            ports[2],
            "--gateway-port",
            str(free_port()),
            "--grpc-edge-port",
            str(free_port()),
            "--supervisor-metrics-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(up.stdout)
        assert info["http"] == f"127.0.0.1:{ports[0]}" and info["releases"] == {"fraud": 2}
        assert {(m["name"], m["version"]) for m in info["loaded"]} == {("fraud", "2")}  # one fused model
        assert (workdir / "admin.key").stat().st_mode & 0o777 == 0o600
        status = subprocess.run([*base, "status", *wd], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and json.loads(status.stdout)["pid"] == info["pid"]
        rows_file = tmp_path / "rows.jsonl"
        rows = holdout.head(4).drop(columns=["is_fraud"]).copy()
        rows["event_time"] = rows["event_time"].map(lambda t: t.isoformat())
        rows["amount"] = rows["amount"].astype(object)
        rows.iloc[3, rows.columns.get_loc("amount")] = None  # a refused row: its status, and no scores printed
        rows.to_json(rows_file, orient="records", lines=True)
        lacking = tmp_path / "lacking.jsonl"
        rows.drop(columns=["amount"]).to_json(lacking, orient="records", lines=True)
        command = [*base, "predict", *wd, "--file", str(lacking)]
        out = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and out.stdout == "" and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "error: rows lack column(s) ['amount']" in out.stderr and "(docs: docs/" in out.stderr, out.stderr
        assert "is the server up" not in out.stderr, out.stderr  # it is: the file is what is wrong
        for protocol in ("http", "grpc"):
            out = subprocess.run(
                [*base, "predict", *wd, "--file", str(rows_file), "--protocol", protocol],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            lines = [json.loads(x) for x in out.stdout.splitlines()]
            assert [x["transaction_id"] for x in lines] == rows["transaction_id"].tolist()
            assert all(x["status"] == "ok" and x["release"] == "fraud:2" for x in lines[:3])
            assert lines[3]["status"] == "amount:null" and lines[3]["release"] == "fraud:2", lines[3]
            assert lines[3]["probabilities"] is None and lines[3]["predicted_class"] is None, lines[3]
    finally:
        down = subprocess.run([*base, "down", *wd], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "stopped" in down.stdout
    status = subprocess.run([*base, "status", *wd], capture_output=True, text=True, timeout=60)
    assert status.returncode == 3 and "down" in status.stdout


def test_a_server_dies_with_the_process_that_owns_it(published: Published, tmp_path: Path) -> None:
    """A test run or benchmark killed with SIGKILL leaves no tritonserver behind (PR_SET_PDEATHSIG)."""
    import os
    import signal
    import time

    import psutil

    owner_code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from inferline.core.processes import free_port\n"
        "from inferline.serving.server import ServerConfig, TritonServer\n"
        f"cfg = ServerConfig(repository=Path({str(published.repository)!r}), workdir=Path({str(tmp_path)!r}),\n"
        "                   http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())\n"
        "server = TritonServer(cfg).start(timeout_s=120)\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        server_pid = int(owner.stdout.readline())
        assert psutil.pid_exists(server_pid)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.1)  # polling for the process to exit
        else:
            os.kill(server_pid, signal.SIGKILL)
            pytest.fail(f"tritonserver {server_pid} outlived its owner by 30 s")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        if owner.stdout is not None:
            owner.stdout.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "status", "--workdir", "{tmp}"],
        ["--help"],
        ["batch", "--help"],
    ],
)
def test_a_reader_that_goes_away_ends_the_command_quietly(argv: list[str], tmp_path: Path) -> None:
    """`inferline serve status | head`: when stdout's reader closes the pipe, the command stops with 141 (128 +
    SIGPIPE, as a Unix tool) and no traceback, whatever the command (the one boundary: inferline.core.command)."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    process = subprocess.Popen(
        [sys.executable, "-m", "inferline", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the command writes
    with process.stderr:
        err = process.stderr.read().decode()
    assert process.wait(timeout=60) in (0, 141), err
    assert "Traceback" not in err and "Exception ignored" not in err and "BrokenPipe" not in err, err
