"""Rollouts of pipelines other than the demo's (issue 32: any published pipeline): a regression (``yields``:
predictions compared by their distribution) promoted through a canary with zero failed requests, and a tensor
pipeline (``glyphs``: 4 x 4 images, never sent to the monitor) whose shadow passes on the rows both releases
answered, then is unloaded. Each on a server started as users start it, with a real monitor deciding."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from inferline.core.alerts import Alerter, JsonlSink
from inferline.core.processes import free_port
from inferline.core.secrets import admin_key, monitor_key
from inferline.export.publish import publish
from inferline.monitor.app import MonitorServer
from inferline.monitor.config import MonitorConfig
from inferline.monitor.rollout import RolloutController
from inferline.monitor.service import Monitor
from inferline.release.registry import Registry
from inferline.release.rollout import TERMINAL_PHASES, read_rollout
from inferline.training.train import train
from tests.pipelines import glyphs, yields
from tests.rollout_cases import Load, rollout

from .conftest import Published, Supervised, supervised_server, wait_until

POLICY = ["--min-rows", "300", "--min-requests", "80", "--latency-floor", "0.01"]  # as in test_rollout.py


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Releases 1 (current) and 2 (the same run published again) of ``yields`` and ``glyphs``."""
    root = tmp_path_factory.mktemp("rollout_tasks")
    for module in (yields, glyphs):
        data = root / f"{module.SPEC.name}.parquet"
        module.generate(3_000, seed=1).to_parquet(data)
        run = train([data], module.SPEC, root / "runs", seed=0, progress=False)
        publish(run.run_dir, root / "repo", load_check=False)
        publish(run.run_dir, root / "repo", promote=False, load_check=False)
    return root / "repo"


@pytest.fixture
def served(
    published: Published, repository: Path, tmp_path: Path
) -> Iterator[Callable[[ModuleType], tuple[Supervised, Path]]]:
    """``served(module)``: a server on a copy of the repository and a monitor deciding ``module``'s rollouts."""
    started: list[tuple[Supervised, MonitorServer]] = []

    def start(module: ModuleType) -> tuple[Supervised, Path]:
        import shutil

        repo = tmp_path / "triton_models"
        shutil.copytree(repository, repo)
        server = supervised_server(published, tmp_path, repository=repo, up=False)
        config = MonitorConfig(
            repository=repo, pipeline=module.SPEC.name, port=free_port(), nvml=False, interval_s=0.25
        )
        monitor = Monitor(config)
        http = MonitorServer(monitor, ingest_key=monitor_key(server.workdir))
        server.up_args += ["--monitor-url", http.url, "--sample-rate", "0.05"]
        server.up()
        config.triton_metrics_url = server.record["metrics"]
        alerter = Alerter([JsonlSink(tmp_path / "alerts.jsonl")])
        monitor.rollout = RolloutController(
            repo, module.SPEC.name, server.record["http"], admin_key(server.workdir), alerter, monitor.spec.task
        )
        started.append((server, http.start()))
        return server, repo

    try:
        yield start
    finally:
        for server, monitor in started:
            monitor.stop()
            server.stop()


def test_a_regression_canary_is_promoted_with_zero_failed_requests(
    served: Callable[[ModuleType], tuple[Supervised, Path]],
) -> None:
    server, repo = served(yields)
    with Load(yields, server.record["gateway"], server.record["grpc_edge"]) as load:
        done = rollout(
            server.workdir, "canary", "2", "--pipeline", "yields", "--steps", "50", *POLICY, "--timeout", "200"
        )
    assert done.returncode == 0, done.stdout + done.stderr
    r = read_rollout(repo, "yields")
    assert r is not None and r.phase == "promoted" and [d["verdict"] for d in r.decisions] == ["pass"]
    checks = {c["name"]: c["status"] for c in r.decisions[-1]["checks"]}
    assert checks["prediction_drift"] == "pass"  # a KS test of the predictions
    assert checks["score_drift"] == checks["estimated_quality"] == "not_applicable"  # classifier-only checks
    assert Registry(repo, "yields").current == 2
    assert not load.failures, load.failures[:3]
    assert load.answered.get("yields:2", 0) > 0 and load.answered.get("yields:1", 0) > 0


def test_a_tensor_pipeline_shadow_passes_on_the_same_rows_and_is_unloaded(
    served: Callable[[ModuleType], tuple[Supervised, Path]],
) -> None:
    server, repo = served(glyphs)
    with Load(glyphs, server.record["gateway"], server.record["grpc_edge"], protocols=("grpc", "grpc")) as load:
        started = rollout(server.workdir, "shadow", "2", "--pipeline", "glyphs", "--share", "0.5", *POLICY, "--no-wait")
        assert started.returncode == 0, started.stderr

        def decided() -> bool:
            r = read_rollout(repo, "glyphs")
            return r is not None and r.phase in TERMINAL_PHASES

        wait_until(decided, 150, "the glyphs shadow decided")
    r = read_rollout(repo, "glyphs")
    assert r is not None and r.phase == "passed", (r.phase, r.reason) if r else None
    checks = {c["name"]: c for c in r.decisions[-1]["checks"]}
    assert checks["agreement"]["status"] == "pass" and checks["agreement"]["effect"] == 0.0, checks["agreement"]
    assert checks["latency_p99"]["status"] == "not_applicable"  # copies are batched off the request path
    assert set(load.answered) == {"glyphs:1"}  # a shadow answers nobody
    assert Registry(repo, "glyphs").current == 1
    assert not load.failures, load.failures[:3]
