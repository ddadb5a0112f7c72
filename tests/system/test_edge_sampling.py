"""The monitor watches every caller (issue 29, part 5): callers that use no inferline code (urllib with a JSON body,
tritonclient over gRPC and over HTTP with binary tensors) send rows with one feature shifted through the edge of a
server started as users start it (`inferline serve up --monitor-url ... --sample-rate 1`); the edge's sampler hands
them to a real monitor holding the ingest key of the server's work directory, which flags drift on that feature.
Then the monitor goes away: serving still answers, and the dropped samples are counted."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from inferline.core.processes import free_port
from inferline.core.secrets import monitor_key
from inferline.features.pipelines import fraud
from inferline.features.synthetic import apply_shifts, parse_shift
from inferline.features.wire import encode_rows
from inferline.monitor.app import MonitorServer
from inferline.monitor.config import MonitorConfig
from inferline.monitor.service import Monitor
from inferline.serving.edge_decode import decode_grpc, decode_http
from inferline.serving.edge_tap import EdgeSampler

from .conftest import Published, Supervised, supervised_server, wait_until

ROWS = 100  # per request
SAMPLES = "inferline_edge_samples_total"


def shifted(seed: int) -> pd.DataFrame:
    """Rows of the demo pipeline with ``amount`` tripled (the feature ``log_amount`` moves), no label column."""
    frame = fraud.generate(ROWS, seed=seed).drop(columns=[fraud.SPEC.label])
    return apply_shifts(frame, fraud.SPEC, [parse_shift("amount=x3")], seed=seed)


def json_body(frame: pd.DataFrame) -> bytes:
    """A KServe v2 JSON request written by hand: one tensor per input column, as a curl user would send it."""
    inputs = []
    for c in fraud.SPEC.input_columns:
        values = encode_rows(frame[[c.name]], [c])[c.name].reshape(-1)
        if c.triton_dtype == "BYTES":
            data: list[object] = [v.decode() for v in values]
        else:
            data = [None if isinstance(v, float) and np.isnan(v) else v.item() for v in values]
        inputs.append({"name": c.name, "datatype": c.triton_dtype, "shape": [len(frame), 1], "data": data})
    return json.dumps({"inputs": inputs}).encode()


def grpc_inputs(frame: pd.DataFrame, module: object) -> list[object]:
    arrays = encode_rows(frame, fraud.SPEC)
    inputs = []
    for c in fraud.SPEC.input_columns:
        tensor = module.InferInput(c.name, list(arrays[c.name].shape), c.triton_dtype)  # type: ignore[attr-defined]
        if module is httpclient:
            tensor.set_data_from_numpy(arrays[c.name], binary_data=True)
        else:
            tensor.set_data_from_numpy(arrays[c.name])
        inputs.append(tensor)
    return inputs


def complete(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows without NaN numbers: JSON has no NaN (a raw JSON caller sends complete rows)."""
    numeric = [c.name for c in fraud.SPEC.input_columns if c.triton_dtype == "FP64"]
    return frame.dropna(subset=numeric)


@pytest.fixture
def watched(published: Published, tmp_path: Path) -> tuple[Supervised, MonitorServer]:
    workdir = tmp_path / "work"  # the supervised server's --workdir: the monitor reads the same ingest key
    config = MonitorConfig(
        repository=tmp_path / "triton_models",
        pipeline="fraud",
        port=free_port(),
        nvml=False,
        min_samples=200,
        drift_window_rows=1_000,
    )
    server = supervised_server(published, tmp_path, up=False)  # copies the repository the monitor reads
    monitor = MonitorServer(Monitor(config), ingest_key=monitor_key(workdir)).start(ticking=False)
    server.up_args += ["--monitor-url", monitor.url, "--sample-rate", "1"]
    server.up()
    return server, monitor


def test_raw_http_and_grpc_callers_are_watched_and_a_dead_monitor_costs_serving_nothing(
    watched: tuple[Supervised, MonitorServer],
) -> None:
    server, monitor = watched
    try:
        edge = server.record["gateway"]
        sent = 0
        for seed in (1, 2, 3):  # urllib, a JSON body written by hand
            frame = complete(shifted(seed))
            request = urllib.request.Request(
                f"http://{edge}/v2/models/fraud/infer",
                data=json_body(frame),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=30) as r:
                answer = json.loads(r.read())
            assert {o["name"] for o in answer["outputs"]} >= {"probabilities", "status", "release"}
            sent += len(frame)
        with grpcclient.InferenceServerClient(server.record["grpc_edge"]) as client:  # tritonclient, gRPC
            for seed in (4, 5, 6):
                result = client.infer("fraud", grpc_inputs(shifted(seed), grpcclient), client_timeout=30)
                assert result.as_numpy("release").reshape(-1)[0] == b"fraud:2"
                sent += ROWS
        with httpclient.InferenceServerClient(edge) as client:  # tritonclient, HTTP with binary tensors
            for seed in (7, 8):
                result = client.infer("fraud", grpc_inputs(shifted(seed), httpclient))
                assert len(result.as_numpy("status").reshape(-1)) == ROWS
                sent += ROWS

        wait_until(lambda: sum(monitor.monitor.status()["rows"].values()) == sent, 30, f"{sent} rows at the monitor")
        metrics = server.metrics()
        assert metrics[f'{SAMPLES}{{outcome="offered"}}'] == metrics[f'{SAMPLES}{{outcome="sent"}}'] == 8
        assert metrics["inferline_edge_sample_rows_sent_total"] == sent
        status = monitor.monitor.tick()
        assert status["sources"] == {"serving": sent}
        assert [key for key in status["latency"] if key.startswith("edge|")] == ["edge|fraud|2"]  # measured at the edge
        assert not [key for key in status["latency"] if key.startswith("client|")]
        states = {f["feature"]: f["state"] for f in status["drift"]["features"]}
        assert states["log_amount"] == "drift", states
        assert states["channel_idx"] == "ok", states  # an unshifted feature stays quiet

        monitor.stop()  # the monitor goes away: serving answers as before, the samples are dropped and counted
        with grpcclient.InferenceServerClient(server.record["grpc_edge"]) as client:
            for seed in (9, 10, 11):
                result = client.infer("fraud", grpc_inputs(shifted(seed), grpcclient), client_timeout=30)
                assert (result.as_numpy("status").reshape(-1) != b"").all()
        server.wait_until(
            lambda: server.metrics().get(f'{SAMPLES}{{outcome="dropped_monitor_down"}}', 0) == 3,
            30,
            "three samples counted as dropped (monitor down)",
        )
        assert server.metrics()[f'{SAMPLES}{{outcome="offered"}}'] == 11
    finally:
        server.stop()
        monitor.stop()


def test_decoders_read_binary_json_and_grpc_bodies_and_offers_never_raise(tmp_path: Path) -> None:
    """The sampler's decoders on bodies tritonclient builds (HTTP JSON with binary tensors, gRPC), and the request
    path's side: garbage is counted when decoded, a full queue drops at once, rate 0 takes nothing."""
    arrays = encode_rows(shifted(12).head(3), fraud.SPEC)
    inputs = grpc_inputs(shifted(12).head(3), httpclient)
    body, header_length = httpclient.InferenceServerClient.generate_request_body(inputs)
    decoded, outputs = decode_http(body, header_length, b'{"outputs": []}', None)
    assert outputs == {}
    for name, values in arrays.items():
        assert decoded[name].shape == values.shape and list(decoded[name].reshape(-1)) == list(values.reshape(-1))

    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="fraud")
    for tensor in grpc_inputs(shifted(12).head(3), grpcclient):
        request.inputs.append(tensor._get_tensor())  # type: ignore[attr-defined]
        request.raw_input_contents.append(tensor._get_content())  # type: ignore[attr-defined]
    decoded, _ = decode_grpc(request.SerializeToString(), b"")
    assert list(decoded["channel"].reshape(-1)) == list(arrays["channel"].reshape(-1))

    sampler = EdgeSampler("http://127.0.0.1:9", "k", 1.0, tmp_path, max_queue=2)
    for _ in range(3):
        sampler.offer_http("fraud", b"{not json", None, b"", None, 0.001)
    assert sampler.counts["dropped_queue_full"] == 1 and len(sampler.queue) == 2
    sampler._drain()
    assert sampler.counts["dropped_undecodable"] == 2
    idle = EdgeSampler("http://127.0.0.1:9", "k", 0.0, tmp_path)
    idle.offer_grpc("fraud", b"x", b"y", 0.001)
    assert idle.counts["offered"] == 1 and idle.counts["sampled"] == 0 and not idle.queue


def test_the_sampler_posts_with_the_ingest_key_and_a_refusal_is_counted(published: Published) -> None:
    """Against a real monitor, without a server: a sample offered with the right key arrives (its rows, its
    release); one from a sampler holding a wrong key is refused (401), counted, and changes nothing."""
    config = MonitorConfig(repository=published.repository, pipeline="fraud", port=free_port(), nvml=False)
    monitor = MonitorServer(Monitor(config), ingest_key="right").start(ticking=False)
    try:
        body, header_length = httpclient.InferenceServerClient.generate_request_body(
            grpc_inputs(shifted(13).head(3), httpclient)
        )
        answer = json.dumps({"outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [3, 2], "data": [0.9, 0.1, 0.8, 0.2, 0.3, 0.7]},
            {"name": "predicted_class", "datatype": "INT64", "shape": [3, 1], "data": [0, 0, 1]},
            {"name": "status", "datatype": "BYTES", "shape": [3, 1], "data": ["ok", "ok", "ok"]},
            {"name": "release", "datatype": "BYTES", "shape": [3, 1], "data": ["fraud:2"] * 3},
        ]}).encode()  # fmt: skip
        good = EdgeSampler(monitor.url, "right", 1.0, published.repository)
        good.offer_http("fraud", body, header_length, answer, None, 0.002)
        good._drain()
        assert good.counts["sent"] == 1 and good.rows_sent == 3
        assert monitor.monitor.status()["rows"] == {"fraud:2|ok": 3}
        forged = EdgeSampler(monitor.url, "wrong", 1.0, published.repository)
        forged.offer_http("fraud", body, header_length, answer, None, 0.002)
        forged._drain()
        assert forged.counts["dropped_monitor_refused"] == 1 and forged.counts["sent"] == 0
        assert monitor.monitor.status()["rows"] == {"fraud:2|ok": 3}
    finally:
        monitor.stop()
