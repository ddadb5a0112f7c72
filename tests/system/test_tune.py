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

from inferline.release.registry import Registry
from inferline.serving.server import TritonServer

from .conftest import Published


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


def test_tune_searches_a_scratch_server_and_publishes_the_chosen_settings(
    published: Published, triton: TritonServer, tmp_path: Path
) -> None:
    """One `inferline bench tune --publish` run: fewer points than the grid, every point kept, a front no point
    beats, the gain re-measured, the serving server and the release's files untouched, and the chosen settings a new
    release (not current) of the same model whose config carries them."""
    repository = tmp_path / "triton_models"
    shutil.copytree(published.repository, repository)
    current = Registry(repository, "fraud").read()["current"]
    before, files = served_count(triton), tree_digest(repository)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "inferline.benchmarks", "tune", "--pipeline", "fraud", "--p99-budget-ms", "50"]
    command += ["--repository", str(repository), "--publish", "--out", str(out)]
    command += ["--duration", "0.5", "--concurrency", "4", "--passes", "1", "--warmup", "0", "--gain-pairs", "1"]
    command += ["--instances", "1,2", "--queue-delays-us", "0,500", "--preferred", "none;4,8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert served_count(triton) == before, "the tuner sent requests to the serving server"

    saved = json.loads((out / "tune.json").read_text())
    points = saved["points"]
    assert saved["grid_size"] == 8 and 2 <= saved["measured_points"] == len(points) < saved["grid_size"]
    assert saved["default"] == {"instances": 1, "max_queue_delay_us": 0, "preferred_batch_size": []}
    assert all(p["throughput_rps"] > 0 and p["p99_ms"] > 0 and p["errors"] == 0 for p in points)
    front = saved["front"]
    assert front and all(
        not any(q["throughput_rps"] > p["throughput_rps"] and q["p99_ms"] < p["p99_ms"] for q in points) for p in front
    )
    chosen = saved["chosen"]
    assert chosen in [p["settings"] for p in points] and len(saved["gain"]) == 1 and saved["gain"][0] > 0
    assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "| instances |" in (
        out / "tune.md"
    ).read_text()

    registry = Registry(repository, "fraud").read()
    new = max(int(v) for v in registry["releases"])
    assert new == current + 1 and registry["current"] == current  # published, not promoted
    after = tree_digest(repository)
    changed = {k for k, digest in files.items() if after.get(k) != digest}
    assert changed <= {"fraud.registry.json"}, f"the tuner changed the release's files: {changed}"
    added = set(after) - set(files)
    assert added and all(Path(k).parts[1] == str(new) for k in added), added  # only the new release's folders
    manifest, tuned = (Registry(repository, "fraud").manifest(v).to_dict() for v in (new, current))
    assert manifest["serving_settings"] == chosen and manifest["derived_from"] == current
    assert manifest["onnx_sha256"] == tuned["onnx_sha256"] and manifest["run_id"] == tuned["run_id"]
    config = model_config_pb2.ModelConfig()
    text_format.Parse((repository / "fraud" / str(new) / "release.config.pbtxt").read_text(), config)
    assert config.instance_group[0].count == chosen["instances"]
    assert config.dynamic_batching.max_queue_delay_microseconds == chosen["max_queue_delay_us"]
    assert list(config.dynamic_batching.preferred_batch_size) == list(chosen["preferred_batch_size"])
