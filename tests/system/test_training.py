from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from inferline.core.files import atomic_write_parquet
from inferline.features.dataset import quarantine_name
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


def test_training_is_deterministic_for_a_seed(raw_files: list[Path], tmp_path: Path) -> None:
    a = train(raw_files, fraud.SPEC, tmp_path / "a", seed=3, epochs=1, progress=False)
    b = train(raw_files, fraud.SPEC, tmp_path / "b", seed=3, epochs=1, progress=False)
    c = train(raw_files, fraud.SPEC, tmp_path / "c", seed=4, epochs=1, progress=False)
    sa, sb, sc = (torch.load(r.run_dir / "checkpoint.pt", weights_only=True)["state_dict"] for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.metrics["holdout"] == b.metrics["holdout"]


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


# ------------------------------------------------------------------------------ issue 30: data gates per file
def _train_cli(tmp_path: Path, *data: Path) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    alerts = tmp_path / "alerts.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "inferline", "train", "--pipeline", "fraud", "--data", *map(str, data), "--runs",
         str(tmp_path / "runs"), "--alerts", str(alerts), "--epochs", "1", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    sent = [json.loads(line) for line in alerts.read_text().splitlines()] if alerts.exists() else []
    return done, sent


def test_a_bad_file_beside_good_ones_refuses_training_and_keeps_its_quarantine(tmp_path: Path) -> None:
    naive = fraud.generate(100, seed=31)
    naive["event_time"] = naive["event_time"].dt.tz_localize(None)  # 100 % invalid, 3.2 % of the whole input
    bad, good = tmp_path / "naive.parquet", tmp_path / "good.parquet"
    atomic_write_parquet(bad, naive)
    atomic_write_parquet(good, fraud.generate(3000, seed=32))
    done, sent = _train_cli(tmp_path, bad, good)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert [a["reason"] for a in sent] == ["invalid_share_exceeded"]
    assert sent[0]["details"]["files"] == [str(bad)]
    kept = Path(sent[0]["details"]["evidence"])
    assert kept.parent == tmp_path / "runs" / "refused" and f"kept in {kept / 'quarantine'}" in done.stderr
    assert len(pd.read_parquet(kept / "quarantine" / quarantine_name(bad))) == 100
    assert json.loads((kept / "refusal.json").read_text())["reason"] == "invalid_share_exceeded"
    assert not (tmp_path / "runs" / "LATEST").exists()


def test_each_refusal_alerts_with_its_own_reason(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    atomic_write_parquet(good, fraud.generate(3000, seed=33))
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:2000])
    done, sent = _train_cli(tmp_path / "broken", good, truncated)
    assert done.returncode == 1 and [a["reason"] for a in sent] == ["unreadable_file"], (done.stderr, sent)
    assert sent[0]["details"]["files"] == [str(truncated)]

    one_class = tmp_path / "one_class.parquet"
    atomic_write_parquet(one_class, fraud.generate(3000, seed=34).assign(is_fraud=0))
    done, sent = _train_cli(tmp_path / "single", one_class)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert [a["reason"] for a in sent] == ["missing_classes"], (done.stderr, sent)
    kept = Path(sent[0]["details"]["evidence"])
    assert str(kept) in done.stderr
    assert json.loads((kept / "refusal.json").read_text())["data"]["rows_valid"] == 3000
