"""Issue 16, class 2: values of a unique column repeated within one stage (a file, the files of a training set, the
partitions of a batch job), quarantined as ``<column>:duplicate`` by the column's declared policy on every path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from inferline.batch import JobReport
from inferline.core.files import sha256_file
from inferline.features.pipelines import fraud
from tests.duplicates_cases import DUP, ID, _two_files, _write

from .conftest import DaskCluster, Published, score_batch


def _batch_cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "inferline", "batch", "run", "--quiet", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def test_batch_job_quarantines_copies_across_partitions_and_resumes(
    published: Published, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    _, _, shared = _two_files(inputs)
    out = tmp_path / "out"
    report = score_batch(published, dask_cluster, [inputs], out, model="fraud:2")
    assert report.duplicates[ID]["policy"] == "all" and report.duplicates[ID]["values"] == 5
    assert report.duplicates[ID]["rows_quarantined"] == 11 == report.reasons[DUP]
    repeated = set(pd.read_parquet(inputs / "a.parquet")[ID].iloc[:5])
    assert report.duplicates[ID]["examples"] == sorted(repeated)[:3]  # in input order: a.parquet's first rows
    predicted = pd.read_parquet(out)
    quarantined = pd.read_parquet(out / "_quarantine")
    assert predicted[ID].is_unique and not set(predicted[ID]) & repeated  # "all": zero times
    assert (quarantined["_reasons"].str.contains(DUP)).sum() == 11
    assert quarantined.loc[quarantined[ID] == shared["bad_too"], "_reasons"].tolist() == [
        DUP,
        f"amount:negative;{DUP}",
    ]
    assert report.rows_in == 400 == report.rows_predicted + report.rows_quarantined == len(predicted) + len(quarantined)
    assert json.loads((out / "_report.json").read_text())["duplicates"] == report.duplicates
    before = {p.relative_to(out): sha256_file(p) for p in out.rglob("part-*.parquet")}

    # the rerun, as a command, with the pre-pass on the cluster this time: it finds the same copies, so every
    # partition's commit still counts and nothing is written again
    again = _batch_cli(
        "--input", str(inputs), "--output", str(out), "--model", "fraud:2",
        "--repository", str(published.repository), "--scheduler", dask_cluster.address,
        "--alerts", str(tmp_path / "alerts.jsonl"),
    )  # fmt: skip
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["partitions_resumed"] == resumed["partitions"] == 2
    assert resumed["duplicates"] == report.duplicates
    assert f"5 value(s) of unique column '{ID}' repeat in the input: 11 row(s) quarantined" in again.stderr
    assert {p.relative_to(out): sha256_file(p) for p in out.rglob("part-*.parquet")} == before


def test_batch_pre_pass_on_the_cluster_matches_the_client(
    published: Published, dask_cluster: DaskCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scan_local_rows=0`` sends the pre-pass to the cluster; a changed file elsewhere re-runs the partitions
    whose copies it changed, and only those."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    a, b, _ = _two_files(inputs)
    _write(inputs / "c.parquet", fraud.generate(200, seed=23))
    out = tmp_path / "out"

    def job() -> JobReport:
        return score_batch(published, dask_cluster, [inputs], out, model="fraud:2", scan_local_rows=0)

    first = job()
    assert first.duplicates[ID]["values"] == 5 and first.partitions == 3
    # a.parquet drops its first id: b's copy of it is no longer a duplicate, so b runs again, c does not
    frame = pd.read_parquet(a)
    frame.loc[0, ID] = "tx-fresh-0"
    _write(a, frame)
    second = job()
    assert second.partitions_resumed == 1  # c.parquet
    assert second.duplicates[ID]["values"] == 4 and second.duplicates[ID]["rows_quarantined"] == 9
    predicted = pd.read_parquet(out)
    assert np.isin([pd.read_parquet(b)[ID].iloc[0], "tx-fresh-0"], predicted[ID]).all()
    assert second.reconciled and second.rows_in == 600 == second.rows_predicted + second.rows_quarantined


def test_validate_command_prints_duplicates_without_a_traceback(tmp_path: Path) -> None:
    a, b, _ = _two_files(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "inferline", "validate", "--pipeline", "fraud", str(a), str(b), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    report = json.loads(done.stdout)
    assert report["rows_in"] == 400 == report["rows_valid"] + report["rows_quarantined"] == 389 + 11
