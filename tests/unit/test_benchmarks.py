"""The benchmark's arithmetic (ratios paired per repetition, goals judged on the median, never hidden), its payload
pool (distinct rows, unique text, valid), and its baselines (the floor answers what the ensemble answers; the
FastAPI stack that shares no inferline code computes inferline's features)."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from inferline.benchmarks import fastapi_own
from inferline.benchmarks.report import markdown, summary, write_results
from inferline.benchmarks.stacks import (
    fastapi_body,
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
from inferline.training.model import load_checkpoint
from inferline.training.train import RunResult


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
