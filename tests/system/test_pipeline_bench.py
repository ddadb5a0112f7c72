"""``inferline bench run --pipeline``: short load sweeps against the session's real Triton (HTTP and gRPC) and
against a supervised server's edge. The results parse with every figure present, achieved throughput follows the
offered load where it must, Triton's per-model counts equal the requests the generator sent, failures are counted
by kind, and the comparison, markdown and PNG are written. No timing is asserted beyond generous tracking of the
offered rate (the machine is shared)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from inferline.benchmarks.__main__ import main as bench_main
from inferline.benchmarks.pipeline_bench import run_sweep
from inferline.benchmarks.pipeline_report import write_outputs
from inferline.core.errors import UserError
from inferline.core.processes import free_port
from inferline.serving.load.aio import arrival_times
from inferline.serving.load.payloads import Payloads, load_rows, payloads_from_frame, resolve_pipeline
from inferline.serving.load.stats import PHASES, StatsUnavailable, model_stats
from inferline.serving.load.step import Step, measure_step
from inferline.serving.load.target import Target, resolve_target
from inferline.serving.server import TritonServer

from .conftest import Published, Supervised, private_server, supervised_server

# `make test` installs Debian's wrk (`make system-deps`); a machine without it skips the closed-loop wrk steps
needs_wrk = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="needs Debian's wrk (apt-get install wrk, or `make system-deps`)"
)

LATENCIES = ("p50", "p95", "p99", "p99.9", "mean", "max")
STEP = 1.0  # seconds per load step: short, to keep the file fast


def _strict_json(path: Path) -> dict[str, Any]:
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds {token}: not strict JSON")

    data: dict[str, Any] = json.loads(path.read_text(), parse_constant=refuse)
    return data


@pytest.fixture(scope="module")
def triton(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A server of this module's own, on a copy of the session's releases: the session server traces every
    request, which stalls Triton 2.51 under sustained load (`serve up --trace-rate`), and Triton's counters must
    see this module's requests only."""
    server = private_server(published, tmp_path_factory.mktemp("pipeline-bench"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def payloads(published: Published) -> Iterator[Payloads]:
    spec, current, _ = resolve_pipeline("fraud", published.repository)
    assert current == published.releases[-1].version
    frame, source = load_rows(spec, pool_rows=300, seed=5)
    p = payloads_from_frame(spec, frame, rows_per_request=1, pool_rows=300, seed=5, source=source)
    try:
        yield p
    finally:
        p.close()


def _assert_answered_step(step: dict[str, Any], rows: int = 1) -> dict[str, Any]:
    """Every figure of a step that was answered: present, finite, ordered; Triton's count of the served model
    equals what the generator sent. Returns the served model's server-side entry."""
    assert step["errors"] == {}, step["errors"]
    assert step["ok"] + step["unanswered"] == step["sent"] and step["ok"] > 0
    # wrk stops with its connections' last requests in flight; the asyncio generator waits for every one
    assert 0 <= step["unanswered"] <= (step["value"] if step["generator"] == "wrk" else 0)
    assert step["throughput_rps"] > 0 and step["rows_per_s"] == pytest.approx(rows * step["throughput_rps"])
    lat = step["latency_ms"]
    assert set(LATENCIES) <= set(lat) and all(isinstance(lat[k], float) and lat[k] > 0 for k in LATENCIES)
    assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    gen = step["loadgen"]
    assert gen["cpu_s"] >= 0 and 0 <= gen["core_share"] and gen["machine_share"] <= gen["core_share"]
    assert step["server"] is not None, step["server_note"]
    served = next(m for m in step["server"] if m["model"] == "fraud")
    assert served["requests"] + served["failed"] == step["sent"], (served, step["sent"])
    assert served["failed"] == 0 and served["executions"] >= 1 and served["inferences"] == rows * served["requests"]
    assert set(served["us_per_request"]) == set(PHASES)
    assert all(v >= 0 for v in served["us_per_request"].values()) and served["us_per_request"]["compute_infer"] > 0
    assert served["request_us"] >= served["us_per_request"]["compute_infer"]
    return dict(served)


@needs_wrk
def test_an_http_sweep_against_triton(triton: TritonServer, payloads: Payloads, tmp_path: Path) -> None:
    """Closed loop (wrk) at c=1 and 4, open loop (asyncio) at 20 and 60 requests/s: the JSON parses strictly with
    every figure, the open-loop steps achieve the offered rate, Triton counts exactly what was sent, and the
    markdown and PNG are written."""
    target = resolve_target("fraud", "http", url=triton.config.http_url, workdir=None)
    assert (target.via, target.triton_http) == ("triton", triton.config.http_url)  # it answers the statistics API
    steps = [Step("concurrency", 1), Step("concurrency", 4), Step("rate", 20), Step("rate", 60)]
    results = run_sweep(target, payloads, steps, STEP, warmup_s=0.5, seed=1)
    written = write_outputs(results, tmp_path / "out")
    assert [p.name for p in written] == ["results.json", "results.md", "results.png"]
    doc = _strict_json(tmp_path / "out" / "results.json")
    assert doc["release"] == "fraud:2" and doc["release_number"] == 2
    assert doc["pool_check"]["ok"] == doc["pool_check"]["rows"] > 0
    assert doc["payloads"]["distinct_requests"] == 300 and doc["payloads"]["distinct_rows"] == 300
    by = {s["step"]: s for s in doc["steps"]}
    assert list(by) == ["c=1", "c=4", "rate=20/s", "rate=60/s"]
    assert [by[k]["generator"] for k in by] == ["wrk", "wrk", "asyncio", "asyncio"]
    for s in doc["steps"]:
        _assert_answered_step(s)
    # more in flight serves at least about as much (it must not collapse); the open loop follows the offered rate
    assert by["c=4"]["throughput_rps"] >= 0.8 * by["c=1"]["throughput_rps"]
    for rate in (20, 60):
        s = by[f"rate={rate}/s"]
        assert s["offered_rps"] == pytest.approx(rate, rel=0.5)  # Poisson arrivals (seeded) over one second
        assert s["throughput_rps"] == pytest.approx(s["offered_rps"], rel=0.25)  # what was offered, was served
        assert s["loadgen"]["schedule_lag_p99_ms"] is not None
    assert by["rate=60/s"]["throughput_rps"] > by["rate=20/s"]["throughput_rps"]
    md = (tmp_path / "out" / "results.md").read_text()
    assert all(label in md for label in by) and "compute infer" in md
    png = (tmp_path / "out" / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_grpc_steps_against_triton(triton: TritonServer, payloads: Payloads) -> None:
    """The asyncio gRPC generator, closed and open loop: answered, counted by Triton exactly."""
    target = resolve_target(
        "fraud", "grpc", url=triton.config.grpc_url, workdir=None, triton_http=triton.config.http_url
    )
    for step in (Step("concurrency", 2), Step("rate", 40)):
        r = measure_step(target, payloads, step, STEP, seed=2)
        assert r.generator == "asyncio"
        _assert_answered_step(r.as_dict())
    r = measure_step(target, payloads, Step("rate", 40), STEP, arrivals="uniform")
    assert r.offered_rps == pytest.approx(40) and r.throughput_rps == pytest.approx(40, rel=0.25)
    # one request in flight at most: the arrivals beyond are dropped, counted, and never sent
    r = measure_step(target, payloads, Step("rate", 400), STEP, arrivals="uniform", max_inflight=1)
    assert r.errors["dropped"] > 0 and set(r.errors) == {"dropped"} and r.unanswered == 0
    assert r.sent + r.errors["dropped"] == 400 and r.ok == r.sent


@needs_wrk
def test_several_rows_per_request(triton: TritonServer, payloads: Payloads) -> None:
    spec = payloads.spec
    four = payloads_from_frame(spec, payloads.frame, rows_per_request=4, pool_rows=300)
    try:
        assert four.n_requests == 75
        target = resolve_target("fraud", "http", url=triton.config.http_url, workdir=None)
        r = measure_step(target, four, Step("concurrency", 2), STEP, loadgen="asyncio").as_dict()
        served = _assert_answered_step(r, rows=4)
        assert served["rows_per_execution"] >= 4
    finally:
        four.close()
    as_json = payloads_from_frame(spec, payloads.frame, rows_per_request=2, pool_rows=300, encoding="json")
    try:
        assert as_json.http_bodies()[0].json_length is None and as_json.http_bodies()[0].body.startswith(b"{")
        r = measure_step(target, as_json, Step("concurrency", 2), STEP).as_dict()  # wrk, all-JSON bodies
        assert r["generator"] == "wrk"
        _assert_answered_step(r, rows=2)
    finally:
        as_json.close()
    with pytest.raises(UserError, match="max_batch_size"):
        payloads_from_frame(spec, payloads.frame, rows_per_request=spec.model.max_batch_size + 1)


@needs_wrk
def test_failures_are_counted_by_kind_not_raised(payloads: Payloads) -> None:
    """Nothing listens on the port: every generator records connection errors, and the step still reports."""
    url = f"127.0.0.1:{free_port()}"
    http = Target(url, "http", "fraud", stats_note="no server")
    for step, loadgen in ((Step("concurrency", 2), "wrk"), (Step("rate", 30), "asyncio")):
        r = measure_step(http, payloads, step, STEP, loadgen=loadgen)  # type: ignore[arg-type]
        assert r.ok == 0 and r.errors.get("connect", 0) > 0, r.errors
        assert r.throughput_rps == 0 and math.isnan(r.latency_ms["p99"])
        assert r.server is None and r.server_note == "no server"
        assert any("failed request" in w for w in r.warnings)
    r = measure_step(http, payloads, Step("rate", 30), STEP, loadgen="asyncio")
    assert sum(r.errors.values()) == r.sent  # the open loop sends on schedule: every request failed, none lost
    grpc = Target(url, "grpc", "fraud")
    r = measure_step(grpc, payloads, Step("rate", 20), STEP)
    assert r.ok == 0 and sum(r.errors.values()) == r.sent > 0
    assert set(r.errors) <= {"connect", "grpc_UNAVAILABLE"}, r.errors


def test_the_edge_and_the_command_line(published: Published, tmp_path: Path) -> None:
    """`inferline bench run --pipeline fraud --workdir W` finds the edge and Triton's statistics port in the server
    record; the edge refuses the statistics API; a second run with --compare writes the ratio lines."""
    # no hang probe: the steps compare Triton's own request count with what the generator sent
    server: Supervised = supervised_server(published, tmp_path / "srv", "--no-trace", "--probe-interval", "0")
    try:
        record = server.record
        with pytest.raises(StatsUnavailable, match="403"):
            model_stats(record["gateway"])
        target = resolve_target("fraud", "http", workdir=server.workdir)
        assert (target.url, target.via, target.triton_http) == (record["gateway"], "edge", record["http"])
        grpc = resolve_target("fraud", "grpc", workdir=server.workdir)
        assert (grpc.url, grpc.via) == (record["grpc_edge"], "edge")
        spec, _, _ = resolve_pipeline("fraud", published.repository)
        frame = pd.read_parquet(published.runs[-1].run_dir / "holdout.parquet")
        edge_payloads = payloads_from_frame(spec, frame, pool_rows=200)
        try:
            r = measure_step(grpc, edge_payloads, Step("concurrency", 2), STEP)
            _assert_answered_step(r.as_dict())
        finally:
            edge_payloads.close()

        common = ["run", "--pipeline", "fraud", "--workdir", str(server.workdir), "--duration", str(STEP)]
        common += ["--warmup", "0", "--holdout", "--runs", str(published.runs[-1].run_dir.parent), "--pool", "200"]
        assert bench_main([*common, "--concurrency", "2", "--out", str(tmp_path / "first")]) == 0
        first = _strict_json(tmp_path / "first" / "results.json")
        assert first["payloads"]["source"].startswith(f"holdout of run {published.runs[-1].run_dir.name}")
        assert first["target"]["via"] == "edge"
        assert not any("traces" in w for w in first["warnings"]), first["warnings"]  # started with --no-trace
        previous = tmp_path / "first" / "results.json"
        argv = [*common, "--concurrency", "2", "--rate", "25", "--out", str(tmp_path / "second")]
        assert bench_main([*argv, "--compare", str(previous)]) == 0
        second = _strict_json(tmp_path / "second" / "results.json")
        for s in second["steps"]:
            _assert_answered_step(s)
        lines = second["comparison"]["lines"]
        assert lines[0].startswith("release 2 (this run) vs release 2 (previous run): throughput x")
        assert " at c=2 (p99 x" in lines[0]
        assert lines[1].endswith("rate=25/s not measured by the previous run")
        assert "## Compared with" in (tmp_path / "second" / "results.md").read_text()
        assert (tmp_path / "second" / "results.png").stat().st_size > 10_000
    finally:
        server.stop()


def test_payload_sources(published: Published, payloads: Payloads) -> None:
    from inferline.benchmarks import cnn_bench
    from inferline.features.pipelines import fraud

    spec = payloads.spec
    frame, source = load_rows(
        spec, holdout=True, repository=published.repository, runs=published.runs[-1].run_dir.parent
    )
    assert source.startswith("holdout of run") and len(frame) == len(
        pd.read_parquet(published.runs[-1].run_dir / "holdout.parquet")
    )
    with pytest.raises(UserError, match="--runs"):
        load_rows(spec, holdout=True, repository=published.repository, runs=Path("/nonexistent"))
    # no free text repeats in a pool (the served model caches per-value text verdicts); nulls stay null
    generated = fraud.generate(2_000, seed=5)
    assert generated["description"].nunique() < 100  # the generator's few descriptions
    pooled = payloads_from_frame(fraud.SPEC, generated, pool_rows=2_000).frame["description"]
    texts = pooled[pooled.notna() & (pooled != "")]
    assert texts.is_unique and len(texts) > 1_500 and pooled.isna().sum() == generated["description"].isna().sum()
    # a tensor pipeline without a generator: seeded random tensors of the declared shape and dtype
    images, source = load_rows(cnn_bench.SPEC, pool_rows=12, seed=1)
    assert source.startswith("seeded random tensors")
    p = payloads_from_frame(cnn_bench.SPEC, images, rows_per_request=4, pool_rows=12)
    assert p.n_requests == 3 and p.distinct_rows == 12
    assert p.request(0)["image"].shape == (4, 3, 64, 64) and p.request(0)["image"].dtype == "float32"
    assert p.http_bodies()[0].json_length is not None  # binary tensor extension
    # Poisson arrivals are seeded: two runs offer the same load
    assert (arrival_times(50, 2.0, "poisson", 3) == arrival_times(50, 2.0, "poisson", 3)).all()
    assert len(arrival_times(50, 2.0, "uniform", 3)) == 100
