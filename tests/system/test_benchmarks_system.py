"""The benchmark's arithmetic (ratios paired per repetition, goals judged on the median, never hidden), its payload
pool (distinct rows, unique text, valid), and its baselines (the floor answers what the ensemble answers; the
FastAPI stack that shares no inferline code computes inferline's features)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from inferline.benchmarks.batch_bench import bench_batch
from inferline.benchmarks.report import summary
from inferline.benchmarks.stacks import (
    FLOOR_MODEL,
    Release,
    _FloorServer,
    floor_repository,
    json_rows,
    payload_pool,
    triton_body,
)
from inferline.benchmarks.suite import goals
from inferline.features.pipelines import fraud
from inferline.serving.server import ServerConfig, TritonServer

from .conftest import Published


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
