"""The speed gate on promotion (``export.gate``; ``inferline export promote N --gate-throughput F``, and the same on
``export publish``): a release whose model sleeps is refused and the current release stays; an equal release
passes and is promoted.
Both measured on a scratch tritonserver of the gate's own, side by side with the current release."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from inferline.benchmarks.release_faults import slow_down
from inferline.export.publish import publish
from inferline.release.registry import Registry
from inferline.training.train import RunResult

from .conftest import Published

SLEEP_S = 0.05  # per execute (a batch): at c=4 the slowed release answers at most ~80 batches a second


def promote(repository: Path, version: int, *gate: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "inferline.export", "promote", str(version), "--repository", str(repository)]
    return subprocess.run([*command, "--pipeline", "fraud", *gate], capture_output=True, text=True, timeout=300)


def test_the_gate_refuses_a_slowed_release_and_promotes_an_equal_one(
    published: Published, run: RunResult, tmp_path: Path
) -> None:
    repository = tmp_path / "triton_models"
    shutil.copytree(published.repository, repository)
    current = Registry(repository, "fraud").read()["current"]
    slowed = publish(run.run_dir, repository, promote=False, load_check=False).version  # the gate loads it
    slow_down(repository, slowed, SLEEP_S)

    gate = ["--gate-throughput", "0.6", "--gate-concurrency", "4", "--gate-duration", "1", "--gate-reps", "2"]
    refused = promote(repository, slowed, *gate)
    assert refused.returncode == 1, refused.stderr
    assert f"release {slowed} not promoted" in refused.stderr and "Traceback" not in refused.stderr
    found = re.search(
        rf"throughput x([0-9.]+) of release {current}'s at c=4 \(pairs: ([0-9/, ]+) req/s\)", refused.stderr
    )
    assert found is not None, refused.stderr
    pairs = [tuple(float(x) for x in p.split("/")) for p in found.group(2).split(", ")]
    assert float(found.group(1)) < 0.5 and len(pairs) == 2 and all(slow > 0 for slow, _ in pairs), refused.stderr
    assert Registry(repository, "fraud").read()["current"] == current  # nothing moved

    # an equal release, published with the gate in one command: measured, then promoted
    command = [sys.executable, "-m", "inferline.export", "publish", "--run", str(run.run_dir)]
    command += ["--repository", str(repository), *gate]
    passed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert passed.returncode == 0, passed.stderr
    assert "speed gate passed" in passed.stderr
    answer = json.loads(passed.stdout)
    equal = int(answer["release"].split(":")[1])
    registry = Registry(repository, "fraud").read()
    assert answer["promoted"] and registry["current"] == equal and registry["previous"] == current
    assert registry["history"][-1]["version"] == equal and "speed gate" in registry["history"][-1]["reason"]
