from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from inferline.core.files import atomic_write_parquet
from inferline.features.dataset import quarantine_name
from inferline.features.pipelines import fraud
from inferline.training.train import train


def test_training_is_deterministic_for_a_seed(raw_files: list[Path], tmp_path: Path) -> None:
    a = train(raw_files, fraud.SPEC, tmp_path / "a", seed=3, epochs=1, progress=False)
    b = train(raw_files, fraud.SPEC, tmp_path / "b", seed=3, epochs=1, progress=False)
    c = train(raw_files, fraud.SPEC, tmp_path / "c", seed=4, epochs=1, progress=False)
    sa, sb, sc = (torch.load(r.run_dir / "checkpoint.pt", weights_only=True)["state_dict"] for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.metrics["holdout"] == b.metrics["holdout"]


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
