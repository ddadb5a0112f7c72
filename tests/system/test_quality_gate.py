"""The quality gate (``export.quality``; champion/challenger at ``export publish`` and ``export promote``): a
candidate trained on shuffled labels is refused with both figures, an equal candidate is promoted, and
``--accept-worse`` is recorded in the registry's history. Real training runs, real releases, the real command line;
no server (the comparison runs in process with onnxruntime).

The pipeline is ``tests.pipelines.loans`` with a golden set of true labels declared in its spec: the shuffled-label
run's own holdout carries shuffled labels too, so the golden set is what shows it worse beyond doubt."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from inferline.core.files import atomic_write_parquet
from inferline.export.publish import publish
from inferline.export.quality import QualityGateRefused
from inferline.release.registry import Registry, model_names
from inferline.training.train import RunResult, train
from tests.pipelines import loans, yields

FIGURES = re.compile(
    r"roc_auc on golden \(1500 rows\): candidate release (\d+) ([0-9]+\.[0-9]+), current release (\d+) ([0-9]+\.[0-9]+)"
)


@dataclass
class Runs:
    good: RunResult
    shuffled: RunResult


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("quality")
    atomic_write_parquet(root / "golden.parquet", loans.generate(1500, seed=9))
    spec = dataclasses.replace(loans.SPEC, golden_set=str(root / "golden.parquet"))
    good = loans.generate(3000, seed=1)
    shuffled = good.copy()
    shuffled["defaulted"] = np.random.default_rng(0).permutation(shuffled["defaulted"].to_numpy())
    atomic_write_parquet(root / "good.parquet", good)
    atomic_write_parquet(root / "shuffled.parquet", shuffled)
    return Runs(
        good=train([root / "good.parquet"], spec, root / "runs", seed=0, epochs=2, progress=False),
        shuffled=train([root / "shuffled.parquet"], spec, root / "runs", seed=0, epochs=2, progress=False),
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferline.export", *args], capture_output=True, text=True, timeout=300
    )


def first_release(runs: Runs, repository: Path) -> None:
    released = publish(runs.good.run_dir, repository, load_check=False)
    assert released.quality is not None and released.quality.status == "first_release"
    assert released.manifest.quality["status"] == "first_release"
    assert set(released.manifest.quality_sets) == {"holdout", "golden"}  # kept in the release for promote


def test_a_shuffled_label_candidate_is_refused_with_both_metrics(runs: Runs, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    first_release(runs, repository)
    alerts = tmp_path / "alerts.jsonl"
    refused = cli(
        "publish",
        "--run",
        str(runs.shuffled.run_dir),
        "--repository",
        str(repository),
        "--no-load-check",
        "--alerts",
        str(alerts),
    )
    assert refused.returncode == 1, refused.stderr
    # one line of error; the alert's own log line beside it (as for a refused parity gate), nothing else
    lines = refused.stderr.strip().splitlines()
    assert "Traceback" not in refused.stderr and len(lines) == 2, refused.stderr
    assert lines[0].startswith("[export] quality_gate_refused:") and lines[1].startswith(
        "inferline export publish: error:"
    )
    assert "quality gate refused release 2: worse than release 1" in refused.stderr
    found = FIGURES.search(refused.stderr)
    assert found is not None, refused.stderr
    candidate, current = float(found.group(2)), float(found.group(4))
    assert candidate < 0.6 and current > 0.65 and current - candidate > 0.01, refused.stderr
    alert = json.loads(alerts.read_text().splitlines()[-1])  # alerted like a refused parity gate, with the figures
    assert alert["reason"] == "quality_gate_refused" and alert["details"]["status"] == "worse", alert
    assert alert["details"]["sets"]["golden"]["candidate"] == pytest.approx(candidate, abs=1e-4), alert
    registry = Registry(repository, "loans").read()
    assert registry["current"] == 1 and list(registry["releases"]) == ["1"]  # nothing published
    assert not (repository / model_names("loans")["model"] / "2").exists()


def test_without_a_golden_set_the_current_releases_holdout_refuses_a_shuffled_label_candidate(
    tmp_path: Path,
) -> None:
    # the candidate's own holdout is shuffled like its training rows, so both models look alike there (about 0.5);
    # the rows release 1 held out carry true labels, and on them the candidate is plainly worse
    good = loans.generate(3000, seed=3)
    shuffled = good.copy()
    shuffled["defaulted"] = np.random.default_rng(1).permutation(shuffled["defaulted"].to_numpy())
    atomic_write_parquet(tmp_path / "good.parquet", good)
    atomic_write_parquet(tmp_path / "shuffled.parquet", shuffled)
    first = train([tmp_path / "good.parquet"], loans.SPEC, tmp_path / "runs", seed=0, epochs=2, progress=False)
    worse = train([tmp_path / "shuffled.parquet"], loans.SPEC, tmp_path / "runs", seed=0, epochs=2, progress=False)
    repository = tmp_path / "repo"
    publish(first.run_dir, repository, load_check=False)
    with pytest.raises(QualityGateRefused) as refused:
        publish(worse.run_dir, repository, load_check=False)
    sets = refused.value.report.sets
    assert set(sets) == {"holdout", "release 1 holdout"}, sets
    assert abs(sets["holdout"]["candidate"] - sets["holdout"]["current"]) < 0.1, sets  # alike on shuffled labels
    champion = sets["release 1 holdout"]
    assert champion["worse"] and champion["current"] - champion["candidate"] > 0.05, sets
    assert Registry(repository, "loans").current == 1


def test_an_equal_candidate_is_promoted_and_the_comparison_is_in_its_manifest(runs: Runs, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    first_release(runs, repository)
    done = publish(runs.good.run_dir, repository, load_check=False)
    assert done.version == 2 and done.promoted and Registry(repository, "loans").current == 2
    quality = Registry(repository, "loans").manifest(2).quality
    assert quality["status"] == "passed" and quality["metric"] == "roc_auc" and quality["current_version"] == 1
    assert quality["sets"]["golden"]["candidate"] == pytest.approx(quality["sets"]["golden"]["current"], abs=1e-6)
    assert quality["sets"]["golden"]["rows"] == 1500 and quality["sets"]["holdout"]["rows"] == 450
    promoted = Registry(repository, "loans").read()["history"][-1]
    assert promoted["action"] == "promote" and promoted["quality"]["status"] == "passed"


def test_accept_worse_is_recorded_in_the_history_with_both_figures(runs: Runs, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    first_release(runs, repository)
    args = ["--run", str(runs.shuffled.run_dir), "--repository", str(repository), "--no-load-check"]
    done = cli("publish", *args, "--accept-worse", "labels re-audited upstream")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["quality"]["status"] == "accepted_worse"
    assert "quality gate worse, accepted" in done.stderr and FIGURES.search(done.stderr) is not None, done.stderr
    registry = Registry(repository, "loans").read()
    assert registry["current"] == 2
    accepted = [h for h in registry["history"] if h["action"] == "accept_worse"]
    assert len(accepted) == 1 and accepted[0]["reason"] == "labels re-audited upstream", registry["history"]
    golden = accepted[0]["quality"]["sets"]["golden"]
    assert golden["candidate"] < golden["current"] - 0.01 and accepted[0]["quality"]["against"] == 1
    assert Registry(repository, "loans").manifest(2).quality["accepted_reason"] == "labels re-audited upstream"


def test_promote_runs_the_same_comparison(runs: Runs, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    first_release(runs, repository)
    # published, not current: the comparison is recorded (worse), nothing refused
    parked = publish(runs.shuffled.run_dir, repository, promote=False, load_check=False)
    assert (
        parked.quality is not None and parked.quality.status == "worse" and Registry(repository, "loans").current == 1
    )
    refused = cli("promote", "2", "--repository", str(repository), "--alerts", str(tmp_path / "alerts.jsonl"))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert FIGURES.search(refused.stderr) is not None and "Release 1 stays current" in refused.stderr, refused.stderr
    assert Registry(repository, "loans").current == 1
    alert = json.loads((tmp_path / "alerts.jsonl").read_text().splitlines()[-1])
    assert alert["reason"] == "quality_gate_refused" and alert["details"]["current_version"] == 1, alert

    accepted = cli("promote", "2", "--repository", str(repository), "--accept-worse", "rollback drill")
    assert accepted.returncode == 0, accepted.stderr
    history = Registry(repository, "loans").read()["history"]
    assert history[-2]["action"] == "accept_worse" and history[-2]["reason"] == "rollback drill"
    assert history[-1]["action"] == "promote" and history[-1]["quality"]["status"] == "accepted_worse"
    assert Registry(repository, "loans").current == 2


def test_a_worse_candidate_published_in_process_raises_a_user_error(runs: Runs, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    first_release(runs, repository)
    with pytest.raises(QualityGateRefused, match=r"Nothing was published; release 1 stays current"):
        publish(runs.shuffled.run_dir, repository, load_check=False)
    # a looser tolerance lets it through: the tolerance is what decides
    loose = publish(runs.shuffled.run_dir, repository, load_check=False, quality_tolerance=0.5)
    assert loose.quality is not None and loose.quality.status == "passed" and loose.quality.tolerance == 0.5


def test_a_current_release_that_cannot_be_read_is_not_comparable_and_does_not_block(runs: Runs, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    first_release(runs, repository)
    damaged = repository / model_names("loans")["model"] / "1" / "model.onnx"
    damaged.write_bytes(damaged.read_bytes() + b"\0")  # no longer the manifest's model
    released = publish(runs.shuffled.run_dir, repository, load_check=False)
    assert released.quality is not None and released.quality.status == "not_comparable"
    assert "release 1 cannot be read" in released.quality.reason and "does not match" in released.quality.reason
    assert Registry(repository, "loans").current == 2


def test_a_regression_candidate_is_compared_on_rmse_with_a_relative_tolerance(tmp_path: Path) -> None:
    atomic_write_parquet(tmp_path / "golden.parquet", yields.generate(500, seed=9))
    spec = dataclasses.replace(yields.SPEC, golden_set=str(tmp_path / "golden.parquet"))
    rows = yields.generate(1500, seed=1)
    atomic_write_parquet(tmp_path / "good.parquet", rows)
    rows["tonnes"] = np.random.default_rng(0).permutation(rows["tonnes"].to_numpy())
    atomic_write_parquet(tmp_path / "shuffled.parquet", rows)
    runs = {n: train([tmp_path / f"{n}.parquet"], spec, tmp_path / n, progress=False) for n in ("good", "shuffled")}
    repository = tmp_path / "repo"
    publish(runs["good"].run_dir, repository, load_check=False)
    with pytest.raises(QualityGateRefused, match=r"tolerance 0\.02 relative: .*rmse on golden \(500 rows\)") as info:
        publish(runs["shuffled"].run_dir, repository, load_check=False)
    golden = info.value.report.sets["golden"]
    assert golden["candidate"] > golden["current"] * 1.02 and info.value.report.metric == "rmse"
