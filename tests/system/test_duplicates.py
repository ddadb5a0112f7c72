"""Issue 16, class 2: values of a unique column repeated within one stage (a file, the files of a training set, the
partitions of a batch job), quarantined as ``<column>:duplicate`` by the column's declared policy on every path."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pandera.errors import SchemaErrors

from inferline.batch import JobReport
from inferline.batch.duplicates import find_duplicates, scan_partition
from inferline.batch.plan import plan_job
from inferline.core.files import sha256_file
from inferline.features.contract import compile_contract
from inferline.features.dataset import load_validated, quarantine_name
from inferline.features.pipelines import fraud
from inferline.features.spec import PipelineSpec
from inferline.features.state import fit_state
from inferline.features.wire import encode_rows

from .conftest import DaskCluster, Published, score_batch

SPEC = fraud.SPEC
ID = "transaction_id"
DUP = f"{ID}:duplicate"


def _keep_first(spec: PipelineSpec) -> PipelineSpec:
    """The fraud spec with its id column declared ``duplicates="all_but_first"``."""
    columns = tuple(dataclasses.replace(c, duplicates="all_but_first") if c.name == ID else c for c in spec.columns)
    return dataclasses.replace(spec, columns=columns)


def _write(path: Path, frame: pd.DataFrame) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def _two_files(tmp_path: Path, n: int = 200) -> tuple[Path, Path, dict[str, str]]:
    """a.parquet and b.parquet (``n`` rows each, distinct ids) then made to share ids: b's rows 0-2 carry a's ids
    0-2, b's row 3 a's id 3 and breaks a rule too (amount -1), b's rows 4 and 5 both carry a's id 4 (a value
    repeated within a file and across files)."""
    a = fraud.generate(n, seed=21)
    b = fraud.generate(n, seed=22)
    ids = a[ID].tolist()
    b.loc[0:3, ID] = ids[0:4]
    b.loc[3, "amount"] = -1.0
    b.loc[4:5, ID] = ids[4]
    shared = {"plain": ids[0], "bad_too": ids[3], "thrice": ids[4]}
    return _write(tmp_path / "a.parquet", a), _write(tmp_path / "b.parquet", b), shared


def _quarantine(folder: Path, path: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / quarantine_name(path))


def test_all_quarantines_every_copy_across_files_with_every_reason(tmp_path: Path) -> None:
    a, b, shared = _two_files(tmp_path)
    valid, report = load_validated([a, b], SPEC, quarantine_dir=tmp_path / "q")
    qa, qb = _quarantine(tmp_path / "q", a), _quarantine(tmp_path / "q", b)
    a_ids = pd.read_parquet(a)[ID].tolist()
    # the first copies, in the earlier file, are quarantined in their own file too
    assert qa[ID].tolist() == a_ids[:5] and set(qa["_reasons"]) == {DUP}
    assert qb[ID].tolist() == [*a_ids[:4], shared["thrice"], shared["thrice"]]
    assert qb["_reasons"].tolist() == [DUP] * 3 + [f"amount:negative;{DUP}"] + [DUP] * 2  # one row, all reasons
    assert set(qa["_source"]) == {str(a)} and set(qb["_source"]) == {str(b)}
    assert [f["reasons"] for f in report.files] == [{DUP: 5}, {DUP: 6, "amount:negative": 1}]
    for f, q in zip(report.files, (qa, qb), strict=True):
        assert f["rows_in"] == 200 == f["rows_valid"] + f["rows_quarantined"] and f["rows_quarantined"] == len(q)
    assert report.rows_in == 400 == len(valid) + len(qa) + len(qb)
    assert not set(valid[ID]) & set(shared.values()) and valid[ID].is_unique


def test_all_but_first_keeps_the_first_copy_in_input_order(tmp_path: Path) -> None:
    a, b, shared = _two_files(tmp_path)
    valid, report = load_validated([a, b], _keep_first(SPEC), quarantine_dir=tmp_path / "q")
    assert not (tmp_path / "q" / quarantine_name(a)).exists(), "every first copy is in a.parquet, and valid"
    qb = _quarantine(tmp_path / "q", b)
    assert qb["_reasons"].tolist() == [DUP] * 3 + [f"amount:negative;{DUP}"] + [DUP] * 2
    assert report.files[1]["reasons"] == {DUP: 6, "amount:negative": 1}
    assert report.rows_in == 400 == len(valid) + len(qb) and valid[ID].is_unique
    assert set(shared.values()) <= set(valid[ID])


def test_all_but_first_within_one_file_keeps_its_first_row(tmp_path: Path) -> None:
    frame = fraud.generate(30, seed=5)
    frame.loc[[7, 19], ID] = frame.loc[2, ID]
    path = _write(tmp_path / "one.parquet", frame)
    valid, report = load_validated([path], _keep_first(SPEC), quarantine_dir=tmp_path / "q", max_invalid_share=0.1)
    assert report.files[0]["reasons"] == {DUP: 2} and len(valid) == 28
    assert frame.loc[2, "amount"] == valid.loc[valid[ID] == frame.loc[2, ID], "amount"].item()
    try:  # pandera's own uniqueness check, built from the same spec, agrees
        compile_contract(_keep_first(SPEC)).schema().validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        assert cases.loc[cases["check"] == "field_uniqueness", "index"].tolist() == [7, 19]
    else:
        pytest.fail("pandera found no duplicate")


def test_nfc_and_nfd_look_alikes_are_one_id_across_files(tmp_path: Path) -> None:
    a, b = fraud.generate(20, seed=31), fraud.generate(20, seed=32)
    a.loc[0, ID] = unicodedata.normalize("NFC", "tx-caf\u00e9-1")
    b.loc[0, ID] = unicodedata.normalize("NFD", "tx-caf\u00e9-1")
    assert a.loc[0, ID] != b.loc[0, ID]
    pa_, pb = _write(tmp_path / "a.parquet", a), _write(tmp_path / "b.parquet", b)
    valid, report = load_validated([pa_, pb], SPEC, quarantine_dir=tmp_path / "q", max_invalid_share=0.1)
    assert [f["reasons"] for f in report.files] == [{DUP: 1}, {DUP: 1}]
    for path in (pa_, pb):
        q = _quarantine(tmp_path / "q", path)
        assert q[ID].tolist() == ["tx-caf\u00e9-1"] and q["_reasons"].tolist() == [DUP]  # compared, kept as NFC
    assert len(valid) == 38


def test_the_request_path_follows_the_policy() -> None:
    rows = fraud.generate(12, seed=3).drop(columns=[SPEC.label])
    rows.loc[[4, 9], ID] = rows.loc[1, ID]
    for spec, expected in ((SPEC, [1, 4, 9]), (_keep_first(SPEC), [4, 9])):
        contract = compile_contract(spec, fit_state(fraud.generate(300, seed=2), spec))
        for n in (12, 6):  # the vector lowering, and the scalar one (small requests)
            _, status = contract.featurize(encode_rows(rows.iloc[:n], spec))
            assert [i for i, s in enumerate(status) if s == DUP] == [i for i in expected if i < n]


def test_the_pre_pass_applies_the_policy_over_the_whole_input(tmp_path: Path) -> None:
    a, _, _ = _two_files(tmp_path)
    for spec, marks, values in (
        (SPEC, {0: {ID: (0, 1, 2, 3, 4)}, 1: {ID: (0, 1, 2, 3, 4, 5)}}, 5),
        (_keep_first(SPEC), {1: {ID: (0, 1, 2, 3, 4, 5)}}, 5),
    ):
        plan = plan_job([str(tmp_path)], spec)
        contract = compile_contract(spec)
        found = find_duplicates(spec, plan, lambda parts, c=contract: [scan_partition(c, p) for p in parts])
        assert found.marks == marks and found.values == {ID: values}
        assert found.digest_of(plan.partitions[1]) is not None
    plain = plan_job([str(a)], SPEC)
    alone = find_duplicates(SPEC, plain, lambda parts: [scan_partition(compile_contract(SPEC), p) for p in parts])
    assert alone.marks == {} and alone.digest_of(plain.partitions[0]) is None  # no duplicates: records as before


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
