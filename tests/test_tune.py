"""``inferline bench tune`` (``benchmarks.pipeline_tune``): the search measures fewer points than the grid, keeps
every point, gives a Pareto front and the chosen setting's gain, never touches the serving server or the
repository, and ``--publish`` makes the chosen settings a new release (not current) whose config carries them."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from inferline.benchmarks.pipeline_tune import pareto_front, tune, write_tune
from inferline.export.registry import Registry
from inferline.serving.server import TritonServer

from .conftest import Published

SPACE = {"instances": (1, 2), "max_queue_delay_us": (0, 500), "preferred_batch_size": ((),)}


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def served_count(triton: TritonServer) -> float:
    with urllib.request.urlopen(f"http://{triton.config.http_url}/v2/models/stats", timeout=10) as r:
        stats = json.loads(r.read())["model_stats"]
    return float(sum(m["inference_count"] for m in stats))


def test_tune_searches_fewer_points_than_the_grid_on_a_scratch_server(
    published: Published, triton: TritonServer, tmp_path: Path
) -> None:
    before, files = served_count(triton), tree_digest(published.repository)
    result = tune(
        published.repository,
        "fraud",
        50.0,
        concurrency=4,
        duration_s=1.0,
        space=SPACE,
        max_passes=1,
        gain_pairs=1,
        warmup_s=0.2,
    )
    assert served_count(triton) == before, "the tuner sent requests to the serving server"
    assert tree_digest(published.repository) == files, "the tuner changed the repository"
    assert result.grid_size == 4 and 2 <= len(result.points) < result.grid_size
    assert result.default == {"instances": 1, "max_queue_delay_us": 0, "preferred_batch_size": ()}
    assert all(p.throughput_rps > 0 and p.p99_ms > 0 and p.errors == 0 for p in result.points)
    front = pareto_front(result.points)
    assert front and all(
        not any(q.throughput_rps > p.throughput_rps and q.p99_ms < p.p99_ms for q in result.points) for p in front
    )
    assert result.chosen in [p.settings for p in result.points] and len(result.gain) == 1 and result.gain[0] > 0
    paths = write_tune(result, tmp_path / "out")
    saved = json.loads(paths[0].read_text())
    assert saved["measured_points"] == len(result.points) and saved["front"]
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "| instances |" in paths[1].read_text()


def test_tune_publish_makes_the_chosen_settings_a_new_release(published: Published, tmp_path: Path) -> None:
    repository = tmp_path / "triton_models"
    shutil.copytree(published.repository, repository)
    current = Registry(repository, "fraud").read()["current"]
    command = [sys.executable, "-m", "inferline.benchmarks", "tune", "--pipeline", "fraud", "--p99-budget-ms", "50"]
    command += ["--repository", str(repository), "--publish"]
    command += ["--duration", "0.5", "--concurrency", "4", "--passes", "1", "--out", str(tmp_path / "out")]
    command += ["--warmup", "0", "--gain-pairs", "1"]
    command += ["--instances", "1,2", "--queue-delays-us", "0", "--preferred", "none;4,8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    chosen = json.loads((tmp_path / "out" / "tune.json").read_text())["chosen"]
    registry = Registry(repository, "fraud").read()
    new = max(int(v) for v in registry["releases"])
    assert new == current + 1 and registry["current"] == current  # published, not promoted
    manifest, tuned = Registry(repository, "fraud").manifest(new), Registry(repository, "fraud").manifest(current)
    assert manifest["serving_settings"] == chosen and manifest["derived_from"] == current
    assert manifest["onnx_sha256"] == tuned["onnx_sha256"] and manifest["run_id"] == tuned["run_id"]
    config = model_config_pb2.ModelConfig()
    text_format.Parse((repository / "fraud" / str(new) / "release.config.pbtxt").read_text(), config)
    assert config.instance_group[0].count == chosen["instances"]
    assert config.dynamic_batching.max_queue_delay_microseconds == chosen["max_queue_delay_us"]
    assert list(config.dynamic_batching.preferred_batch_size) == list(chosen["preferred_batch_size"])
