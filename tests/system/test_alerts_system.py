"""Alerts reach real sinks: a webhook receiver on 127.0.0.1, a JSON-lines file, a Prometheus registry, the log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from inferline.core.files import atomic_write_parquet, sha256_file
from inferline.features.pipelines import fraud
from inferline.serving.client import InferlineClient
from inferline.serving.server import TritonServer
from tests.conftest import Receiver

from .conftest import Published


def _snapshot(repo: Path) -> dict[str, str]:
    return {
        str(p.relative_to(repo)): sha256_file(p)
        for p in sorted(repo.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_training_over_the_invalid_threshold_publishes_nothing_and_alerts(
    receiver: Receiver, published: Published, triton: TritonServer, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    bad = fraud.generate(2000, seed=77)
    bad.loc[bad.index[::8], "amount"] = -1.0  # 12.5 % invalid, over the 5 % default
    data = tmp_path / "upstream.parquet"
    atomic_write_parquet(data, bad)
    runs = published.runs[1].run_dir.parent
    latest_before = (runs / "LATEST").read_text()
    repo_before = _snapshot(published.repository)
    env = dict(os.environ, INFERLINE_ALERT_WEBHOOK=receiver.url)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inferline.training",
            "--data",
            str(data),
            "--runs",
            str(runs),
            "--alerts",
            str(tmp_path / "alerts.jsonl"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert "last good run kept" in result.stderr and "12.5%" in result.stderr
    assert receiver.arrived.wait(10)
    alert = receiver.received[0]
    assert (alert["source"], alert["reason"], alert["severity"]) == ("training", "invalid_share_exceeded", "critical")
    assert alert["details"]["last_good_run"] == latest_before.strip()
    assert (runs / "LATEST").read_text() == latest_before
    assert _snapshot(published.repository) == repo_before, "nothing published"
    with InferlineClient(triton.config.http_url, "http", pipeline="fraud") as client:
        p = client.predict(holdout.head(3))
    assert set(p.release) == {"fraud:2"} and np.isfinite(p.probabilities).all()
