"""The benchmark's arithmetic (ratios paired per repetition, goals judged on the median, never hidden), its payload
pool (distinct rows, unique text, valid), and its baselines (the floor answers what the ensemble answers; the
FastAPI stack that shares no inferline code computes inferline's features)."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from inferline.benchmarks import fastapi_own
from inferline.benchmarks.batch_bench import bench_batch
from inferline.benchmarks.report import markdown, summary, write_results
from inferline.benchmarks.stacks import (
    FLOOR_MODEL,
    Release,
    _FloorServer,
    fastapi_body,
    floor_repository,
    json_rows,
    payload_pool,
    save_torchscript,
    triton_body,
    write_bodies,
)
from inferline.benchmarks.suite import comparisons, goals
from inferline.features.contract import compile_contract
from inferline.features.pipelines import fraud
from inferline.features.state import FeatureState
from inferline.features.validation import validate_frame
from inferline.serving.client import encode_rows
from inferline.serving.server import ServerConfig, TritonServer
from inferline.training.model import load_checkpoint
from inferline.training.train import RunResult

from .conftest import Published


def _run(rps: float, p50: float, p99: float, per_cpu: float) -> dict[str, float]:
    return {
        "throughput_rps": rps,
        "p50_ms": p50,
        "p95_ms": p99,
        "p99_ms": p99,
        "requests": rps,
        "errors": 0,
        "server_cpu_s": 1.0,
        "loadgen_cpu_s": 0.5,
        "inferences_per_server_cpu_s": per_cpu,
    }


def _serving(errors: int = 0) -> dict:
    # three interleaved repetitions per stack and concurrency
    triton = {c: [_run(1000.0 * k, 2.0, 10.0, 800.0) for k in (1, 2, 3)] for c in ("1", "16", "64")}
    own = {c: [_run(200.0 * k, 1.0, 20.0, 100.0) for k in (1, 1, 1)] for c in ("1", "16", "64")}
    nobatch = {c: [_run(500.0, 2.0, 10.0, 400.0) for _ in range(3)] for c in ("1", "16", "64")}
    floor = {c: [_run(2500.0, 0.5, 5.0, 3000.0) for _ in range(3)] for c in ("1", "16", "64")}
    gateway = {c: [_run(500.0 * k, 3.0, 30.0, 400.0) for k in (1, 2, 3)] for c in ("1", "16", "64")}
    gateway["64"][0]["errors"] = errors
    raw = {
        "floor_http": floor,
        "triton_batching_http": triton,
        "fastapi_own_http": own,
        "triton_nobatch_http": nobatch,
        "gateway_http": gateway,
    }
    return {
        "stacks": {k: k for k in raw},
        "raw": raw,
        "summary": {
            n: {c: {k: summary([r[k] for r in runs]) for k in runs[0]} for c, runs in pc.items()}
            for n, pc in raw.items()
        },
    }


def test_goals_pair_repetitions_and_judge_the_median() -> None:
    inprocess = {
        "per_call_us": {"onnxruntime": {"1": [30.0, 40.0, 50.0]}, "torch_eager": {"1": [100.0] * 3}},
        "notes": {},
    }
    rows = {g["goal"]: g for g in goals({"serving": _serving(), "inprocess": inprocess})}
    floor = rows["throughput >= 0.6x the floor at c=16"]
    assert floor["ratio"] == "triton_batching_http / floor_http (req/s)"
    assert (floor["min"], floor["median"], floor["max"]) == pytest.approx((0.4, 0.8, 1.2)) and floor["met"]
    thr = rows["throughput >= 5x FastAPI own at c=16"]
    assert (thr["min"], thr["median"], thr["max"]) == (5.0, 10.0, 15.0) and thr["met"]
    p99 = rows["p99 no worse than FastAPI own at c=64"]  # fastapi-own's p99 / inferline's: higher is better
    assert p99["ratio"] == "fastapi_own_http / triton_batching_http (p99)"
    assert p99["median"] == pytest.approx(2.0) and p99["met"]
    p50 = rows["p50 at c=1 no worse than FastAPI own"]
    assert p50["median"] == pytest.approx(0.5) and not p50["met"]
    assert rows["inferences per server CPU-second >= 5x FastAPI own at c=64"]["median"] == pytest.approx(8.0)
    assert rows["dynamic batching >= 2.5x no batching at c=16"]["median"] == pytest.approx(4.0)
    ort = rows["onnxruntime batch-1 latency <= 0.5x PyTorch eager"]
    assert ort["median"] == pytest.approx(0.4) and ort["met"]


def test_a_goal_not_met_is_said_so_and_one_not_measured_is_never_met() -> None:
    serving = _serving()
    del serving["raw"]["floor_http"]  # a side that did not run
    results = {"serving": serving, **_header()}
    rows = {g["goal"]: g for g in goals(results)}
    missing = rows["throughput >= 0.6x the floor at c=64"]
    assert not missing["measured"] and not missing["met"]
    results["goals"] = list(rows.values())
    text = markdown(results)
    assert "| p50 at c=1 no worse than FastAPI own | fastapi_own_http / triton_batching_http (p50) | 0.50x" in text
    assert text.count("**NOT MET**") == 3  # p50, and both floor goals
    assert "not measured (a side did not run)" in text


def test_failed_requests_void_a_goal_and_are_reported_beside_a_ratio() -> None:
    serving = _serving(errors=7)
    serving["raw"]["triton_batching_http"]["64"][1]["errors"] = 2
    rows = {g["goal"]: g for g in goals({"serving": serving})}
    thr = rows["throughput >= 5x FastAPI own at c=64"]
    assert thr["median"] == pytest.approx(10.0) and thr["errors"] == 2 and not thr["met"]
    gateway = {(r["ratio"], r["concurrency"]): r for r in comparisons({"serving": serving})}
    direct = gateway[("gateway_http / triton_batching_http (req/s)", 64)]
    assert direct["median"] == pytest.approx(0.5) and direct["errors"] == 9
    assert gateway[("gateway_http / floor_http (req/s)", 16)]["max"] == pytest.approx(0.6)
    text = markdown({"serving": serving, **_header(), "comparisons": list(gateway.values())})
    assert "| gateway_http / triton_batching_http (req/s) | 64 | 0.50x [0.50-0.50], 9 failed requests |" in text


def _header() -> dict:
    return {
        "created_at": "2026-11-25T00:00:00",
        "mode": "quick",
        "wall_s": 1.0,
        "machine": {"cpu": "test cpu", "cores": 2, "memory_gib": 1.0, "gpu": "none", "python": "3.11"},
        "gpu": "not measured",
    }


def test_results_are_written_in_three_forms(tmp_path: Path) -> None:
    results = {
        **_header(),
        "serving": _serving(),
        "inprocess": {"per_call_us": {"onnxruntime": {"1": [1.0]}, "torch_eager": {"1": [2.0]}}, "notes": {}},
    }
    write_results(results, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"results.json", "results.md", "serving.png", "inprocess.png"}
    text = markdown(results)
    assert "test cpu, 2 cores" in text
    assert "| triton_batching_http | 16 | 2000 [1000-3000] |" in text


def test_batch_benchmark_runs_every_side_on_the_same_rows(published: Published, tmp_path: Path) -> None:
    result = bench_batch(20_000, 1, tmp_path, published.repository, 2)
    assert set(result["seconds"]) == {"dask_2_workers", "dask_1_worker", "single_process"}
    assert result["max_abs_diff_between_sides"] <= 1e-6  # the same rows, release and kernels on every side
    seconds = result["seconds"]
    assert all(len(v) == 1 and v[0] > 0 for v in seconds.values())
    # rows/s ratios, paired per repetition: the same rows in less time is a higher ratio
    single = [s / d for d, s in zip(seconds["dask_2_workers"], seconds["single_process"], strict=True)]
    one = [o / d for d, o in zip(seconds["dask_2_workers"], seconds["dask_1_worker"], strict=True)]
    assert result["ratio_dask2_over_single"] == pytest.approx(single)
    assert result["ratio_dask2_over_dask1"] == pytest.approx(one)
    assert result["rows_per_s"]["single_process"] == pytest.approx([20_000 / seconds["single_process"][0]])

    rows = {g["goal"]: g for g in goals({"batch": result})}
    expected = {  # goal -> (its ratio's name, the measured ratios, target)
        "Dask job (2 workers x 1 thread) >= 0.8x a single-process pandas + onnxruntime loop": (
            "dask_2_workers / single_process (rows/s)",
            single,
            0.8,
        ),
        "Dask job: 2 workers >= 1.6x 1 worker": ("dask_2_workers / dask_1_worker (rows/s)", one, 1.6),
    }
    assert set(rows) == set(expected)
    for name, (ratio, measured, target) in expected.items():
        g = rows[name]
        assert (g["ratio"], g["target"], g["higher_is_better"]) == (ratio, target, True)
        assert g["median"] == pytest.approx(summary(measured)["median"])
        assert (g["min"], g["max"]) == pytest.approx((min(measured), max(measured)))
        assert g["met"] is (g["median"] >= target), "met is judged on the median against the goal's target"


def test_the_payload_pool_is_distinct_valid_and_not_the_training_data(tmp_path: Path) -> None:
    pool = payload_pool(10_000)
    assert len(pool) == 10_000 and pool["transaction_id"].is_unique
    text = pool["description"].dropna()
    assert text.is_unique and len(text) > 9_000  # about 3 % of rows have no description, as upstream sends them
    assert validate_frame(pool, fraud.SPEC, include_label=False).rows_quarantined == 0
    with pytest.raises(ValueError, match="training"):
        payload_pool(10, seed=42)
    rows = json_rows(pool.head(3))
    assert rows[0]["event_time"].endswith("+00:00") and isinstance(rows[0]["customer_age_days"], int)
    path = write_bodies(tmp_path / "bodies.jsonl", rows, triton_body)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and len(set(lines)) == 3
    first = {i["name"]: i for i in json.loads(lines[0])["inputs"]}
    assert list(first) == [c.name for c in fraud.SPEC.input_columns]
    assert first["amount"] == {"name": "amount", "shape": [1, 1], "datatype": "FP64", "data": [rows[0]["amount"]]}
    assert json.loads(fastapi_body(rows[0])) == {"rows": [rows[0]]}


def test_fastapi_own_shares_no_inferline_code() -> None:
    tree = ast.parse(Path(fastapi_own.__file__).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported and not [m for m in imported if m.split(".")[0] in ("inferline", "features", "serving")]


def test_fastapi_own_computes_inferline_features_and_scores_bad_rows_apart(
    run: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = FeatureState.load(run.run_dir / "feature_state.json")
    pool = payload_pool(300)
    rows = json_rows(pool)
    expected, status = compile_contract(fraud.SPEC, state).featurize(encode_rows(pool, fraud.SPEC))
    assert set(status) == {"ok"}
    features = fastapi_own.Features(dataclasses.asdict(state))
    numeric, categorical = zip(*(features.row(fastapi_own.Row.model_validate(r)) for r in rows), strict=True)
    assert np.abs(np.array(numeric, dtype=np.float32) - expected.numeric).max() < 1e-5
    assert (np.array(categorical) == expected.categorical).all()

    monkeypatch.setenv("FASTAPI_OWN_MODEL", str(save_torchscript(run.run_dir, tmp_path / "model.ts")))
    monkeypatch.setenv("FASTAPI_OWN_FEATURE_STATE", str(run.run_dir / "feature_state.json"))
    bad = [dict(rows[1], amount=-1.0), dict(rows[2], event_time="2026-01-01T00:00:00"), dict(rows[3], channel="fax")]

    async def serve_once() -> dict:  # the app's own lifespan and handler (HTTP itself: the suite's answer check)
        async with fastapi_own.lifespan(fastapi_own.app):
            return await fastapi_own.predict(fastapi_own.PredictRequest(rows=[rows[0], *bad, rows[4]]))

    with warnings.catch_warnings():  # the app loads TorchScript, which torch 2.13 calls deprecated
        warnings.filterwarnings("ignore", r"`torch\.jit\.load` is deprecated", DeprecationWarning)
        answer = asyncio.run(serve_once())
    assert answer["status"] == ["ok", "amount", "event_time", "channel", "ok"]
    assert answer["probabilities"][1:4] == [None] * 3 and answer["predicted_class"][1:4] == [None] * 3
    with torch.inference_mode():
        probabilities, _ = load_checkpoint(run.run_dir / "checkpoint.pt")(
            torch.from_numpy(expected.numeric[[0, 4]]), torch.from_numpy(expected.categorical[[0, 4]])
        )
    served = np.array([answer["probabilities"][0], answer["probabilities"][4]])
    assert np.abs(served - probabilities.numpy()).max() < 1e-5


def _post(url: str, body: str) -> dict:
    request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as r:
        answer: dict = json.loads(r.read())
    return answer


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def test_the_floor_takes_and_answers_what_the_ensemble_does(
    published: Published, triton: TritonServer, tmp_path: Path
) -> None:
    release = Release(published.runs[1].run_dir, published.repository, 2, json_rows(payload_pool(4)), tmp_path)
    floor = _FloorServer(ServerConfig.on_free_ports(floor_repository(release, tmp_path / "repo"), tmp_path / "w"))
    floor.start(timeout_s=120)
    try:
        real_url, floor_url = f"http://{triton.config.http_url}", f"http://{floor.config.http_url}"
        assert _get(f"{floor_url}/v2/models/fraud/ready")[0] != 200  # the floor's server loads the floor only
        real, const = _get(f"{real_url}/v2/models/fraud")[1], _get(f"{floor_url}/v2/models/{FLOOR_MODEL}")[1]
        bodies = [triton_body(r) for r in release.pool]
        answers = [
            (_post(f"{real_url}/v2/models/fraud/infer", b), _post(f"{floor_url}/v2/models/{FLOOR_MODEL}/infer", b))
            for b in bodies
        ]
    finally:
        floor.stop()
    assert [i["name"] for i in real["inputs"]] == [c.name for c in fraud.SPEC.input_columns]
    assert (real["inputs"], real["outputs"]) == (const["inputs"], const["outputs"])

    def shapes(answer: dict) -> dict:
        return {o["name"]: (o["datatype"], o["shape"]) for o in answer["outputs"]}

    for ensemble, constant in answers:
        assert shapes(ensemble) == shapes(constant)
        assert {o["name"]: o["data"] for o in constant["outputs"]}["status"] == ["ok"]


def test_agreement_is_judged_against_the_reference_spread() -> None:
    """``benchmarks.agreement``: a median inside the reference's min-max (at least +-10 %) agrees; outside it does
    not; the ratio is per repetition."""
    from inferline.benchmarks.agreement import agree

    reference = [1000.0, 1100.0, 900.0]
    inside = agree(reference, [1050.0, 980.0, 1000.0])
    assert inside["agrees"] and inside["band"] == [900.0, 1100.0]
    assert inside["ratio"]["min"] == pytest.approx(980.0 / 1100.0)
    assert not agree(reference, [1400.0, 1350.0, 1300.0])["agrees"]
    tight = agree([1000.0, 1001.0, 999.0], [1080.0, 1090.0, 1085.0])  # within the 10 % floor, not the tight spread
    assert tight["agrees"] and tight["band"] == [pytest.approx(900.0), pytest.approx(1100.0)]
    assert not agree([1000.0, 1001.0, 999.0], [1150.0, 1160.0, 1170.0])["agrees"]


def test_bench_tune_tries_instance_counts_up_to_the_cores() -> None:
    from inferline.benchmarks.__main__ import cpu_instances

    assert cpu_instances(1) == (1,) and cpu_instances(2) == (1, 2) and cpu_instances(6) == (1, 2, 4)
    assert cpu_instances(64) == (1, 2, 4, 8)  # at most 4 values: each is a reload and a measurement


def test_the_nginx_designs_of_the_edge_benchmark_answer_and_refuse(triton: TritonServer, tmp_path: Path) -> None:
    """The two nginx rows of `bench run --only edge` measure what they claim: the plain proxy forwards, the njs
    allow-list prototype (benchmarks/nginx_edge.js) answers a good body as Triton does and refuses what the Python
    edge refuses (a parameter off the allow-list, a field not in the protocol, a shape the data does not fill)."""
    import shutil as _shutil

    from inferline.benchmarks.edge_bench import NJS_MODULE, nginx_edge
    from inferline.core.processes import stop_process as _terminate

    if _shutil.which("nginx") is None or not Path(NJS_MODULE).exists():
        pytest.skip("needs Debian's nginx and libnginx-mod-http-js (`make system-deps`)")
    started = nginx_edge(triton.config.http_url, tmp_path)
    assert started is not None
    proc, proxy, njs = started
    try:
        body = triton_body(json_rows(payload_pool(2))[0])
        direct = _post(f"http://{triton.config.http_url}/v2/models/fraud/infer", body)
        for url in (proxy, njs):
            answer = _post(f"http://{url}/v2/models/fraud/infer", body)
            assert {o["name"]: o["data"] for o in answer["outputs"]} == {
                o["name"]: o["data"] for o in direct["outputs"]
            }
        request = json.loads(body)
        for change, named in (
            ({"outputs": [{"name": "probabilities", "parameters": {"classification": 0}}]}, "classification"),
            ({"sneaky": 1}, "sneaky"),
            ({"inputs": [{**request["inputs"][0], "shape": [2, 1]}, *request["inputs"][1:]]}, "declares 2"),
        ):
            refused = urllib.request.Request(
                f"http://{njs}/v2/models/fraud/infer", data=json.dumps({**request, **change}).encode(), method="POST"
            )
            with pytest.raises(urllib.error.HTTPError) as error:
                urllib.request.urlopen(refused, timeout=10)
            assert error.value.code == 400 and named in error.value.read().decode()
    finally:
        _terminate(proc)
