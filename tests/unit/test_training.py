from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from inferline.core.files import atomic_write_parquet
from inferline.features.pipelines import fraud
from inferline.features.validation import FileLevelError
from inferline.training.model import load_checkpoint
from inferline.training.train import RunResult, latest_run, train


def test_run_directory_is_complete(run: RunResult) -> None:
    names = {p.name for p in run.run_dir.iterdir()}
    assert {
        "checkpoint.pt",
        "feature_state.json",
        "metrics.json",
        "reference_profile.json",
        "holdout.parquet",
        "run.json",
    } <= names
    metrics = json.loads((run.run_dir / "metrics.json").read_text())["holdout"]
    assert metrics["roc_auc"] > 0.85, metrics
    assert 0.0 < metrics["threshold"] < 1.0
    for key in ("pr_auc", "precision", "recall"):
        assert 0.0 <= metrics[key] <= 1.0
    profile = json.loads((run.run_dir / "reference_profile.json").read_text())
    assert set(profile["numeric"]) >= {"log_amount", "hour_sin"} and "prediction" in profile
    # categorical references count the rows the vocabulary was not fitted on (validation and holdout)
    assert sum(profile["categorical"]["channel_idx"]["counts"].values()) == profile["categorical_rows"]
    assert 0 < profile["categorical_rows"] < profile["rows"]
    assert sum(profile["numeric"]["log_amount"]["counts"]) == profile["rows"]
    assert 0 < len(profile["prediction"]["sample"]) <= 5_000
    assert latest_run(run.run_dir.parent) == run.run_dir


def test_checkpoint_loads_weights_only(run: RunResult) -> None:
    payload = torch.load(run.run_dir / "checkpoint.pt", weights_only=True)
    assert payload["pipeline"] == "fraud"
    model = load_checkpoint(run.run_dir / "checkpoint.pt")
    state = json.loads((run.run_dir / "feature_state.json").read_text())
    assert float(model.threshold) == pytest.approx(state["threshold"])


def test_failed_training_keeps_last_good_run(run: RunResult, tmp_path: Path) -> None:
    runs = run.run_dir.parent
    before = sorted(p.name for p in runs.iterdir())
    broken = tmp_path / "broken.parquet"
    atomic_write_parquet(broken, fraud.generate(500, seed=9).drop(columns=["country"]))
    with pytest.raises(FileLevelError, match=r"broken\.parquet"):
        train([broken], fraud.SPEC, runs, seed=0, epochs=1, progress=False)
    assert sorted(p.name for p in runs.iterdir()) == before, "no partial run directory left behind"
    assert latest_run(runs) == run.run_dir


def test_holdout_is_the_most_recent_slice(run: RunResult, raw_files: list[Path]) -> None:
    holdout = pd.read_parquet(run.run_dir / "holdout.parquet")
    everything = pd.concat([pd.read_parquet(p) for p in raw_files])
    assert holdout["event_time"].min() >= everything["event_time"].quantile(0.8)
