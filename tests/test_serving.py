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

from inferline.features.pipelines import fraud
from inferline.serving.client import InferlineClient, encode_rows
from inferline.serving.demo import in_process_probabilities
from inferline.serving.server import TritonServer, free_port

from .conftest import Published

SPEC = fraud.SPEC


def _assert_live(server: TritonServer) -> None:
    assert server.process is not None and server.process.poll() is None
    assert server.is_ready()


def test_repository_loads_exactly_the_current_release(triton: TritonServer, published: Published) -> None:
    with InferlineClient(triton.config.http_url, "http", pipeline="fraud", admin_key=triton.admin_key) as client:
        index = {(m["name"], m.get("version")): m["state"] for m in client.repository_index()}
    assert index[("fraud", "1")] == "READY"
    assert index[("fraud_preprocess", "2")] == "READY"
    assert index[("fraud_model", "2")] == "READY"
    assert ("fraud_model", "1") not in index or index[("fraud_model", "1")] != "READY"
    # both versions are on disk, so a rollback can load the previous one
    assert (published.repository / "fraud_model" / "1" / "model.onnx").exists()


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
        assert {(m["name"], m["version"]) for m in info["loaded"]} >= {("fraud_model", "2"), ("fraud_preprocess", "2")}
        assert (workdir / "admin.key").stat().st_mode & 0o777 == 0o600
        status = subprocess.run([*base, "status", *wd], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and json.loads(status.stdout)["pid"] == info["pid"]
        rows_file = tmp_path / "rows.jsonl"
        rows = holdout.head(3).drop(columns=["is_fraud"]).copy()
        rows["event_time"] = rows["event_time"].map(lambda t: t.isoformat())
        rows.to_json(rows_file, orient="records", lines=True)
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
            assert all(x["status"] == "ok" and x["release"] == "fraud:2" for x in lines)
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
        "from inferline.serving.server import ServerConfig, TritonServer, free_port\n"
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
