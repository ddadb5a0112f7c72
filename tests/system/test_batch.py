"""The Dask batch job against real clusters (separate `dask scheduler`/`dask worker` processes, and the
LocalCluster of `inferline batch run`), real Parquet files and, for parity, the live Triton server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferline.batch import BatchJobFailed, EmptyInput, JobConfig, JobReport, OutputInUse, output_columns, run_job
from inferline.core.files import sha256_file
from inferline.demo import in_process_probabilities
from inferline.features.pipelines import fraud
from inferline.features.validation import FileLevelError
from inferline.serving.client import InferlineClient
from inferline.serving.server import TritonServer

from .conftest import DaskCluster, Published, gone, wait_until

ROW_GROUP = 1_000
BATCH_RUN = [sys.executable, "-m", "inferline.batch", "run"]
PROBS = [f"probability_{c}" for c in fraud.SPEC.classes]


def write_parquet(path: Path, frame: pd.DataFrame, row_group_size: int = ROW_GROUP) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 files x 4,000 rows in row groups of 1,000: 12 partitions at ``partition_rows=ROW_GROUP``."""
    root = tmp_path_factory.mktemp("batch_in")
    for i in range(3):
        write_parquet(root / f"tx-{i}.parquet", fraud.generate(4_000, seed=500 + i))
    return root


def config(
    inputs: Path | list[str], output: Path, published: Published, cluster: DaskCluster | None, **kw: object
) -> JobConfig:
    return JobConfig(
        inputs=[str(inputs)] if isinstance(inputs, Path) else inputs,
        output=output,
        model=str(kw.pop("model", "fraud:2")),
        repository=published.repository,
        scheduler=cluster.address if cluster else None,
        progress=False,
        **{"partition_rows": ROW_GROUP, **kw},  # type: ignore[arg-type]
    )


def input_ids(root: Path) -> set[str]:
    return set(pd.read_parquet(root, columns=["transaction_id"])["transaction_id"])


def assert_exactly_once(output: Path, expected_ids: set[str], report: JobReport) -> None:
    """Every input row is predicted once or quarantined once; one part and one commit record per partition."""
    parts = sorted(output.glob("part-*.parquet"))
    commits = sorted((output / "_commits").glob("part-*.json"))
    assert [p.stem for p in parts] == [c.stem for c in commits] == [f"part-{i:05d}" for i in range(report.partitions)]
    predicted = pd.read_parquet(output)  # pyarrow skips _commits/, _quarantine/ and hidden temporaries
    assert list(predicted.columns) == output_columns(fraud.SPEC)
    assert predicted["transaction_id"].is_unique
    quarantined = (
        pd.read_parquet(output / "_quarantine")["transaction_id"]
        if (output / "_quarantine").exists()
        else pd.Series([], dtype=object)
    )
    assert not set(quarantined) & set(predicted["transaction_id"])
    assert set(predicted["transaction_id"]) | set(quarantined) == expected_ids
    assert report.rows_in == len(expected_ids) == report.rows_predicted + report.rows_quarantined
    assert report.reconciled and report.status == "complete"
    assert not [p for p in output.rglob(".*") if p.is_file()], "a hidden temporary was left behind"
    for commit in commits:
        record = json.loads(commit.read_text())
        assert sha256_file(output / record["part"]) == record["sha256"]


def test_batch_triton_and_training_code_agree(
    published: Published, triton: TritonServer, holdout: pd.DataFrame, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    rows = holdout.head(3_000).reset_index(drop=True)
    write_parquet(tmp_path / "in" / "a.parquet", rows.iloc[:1_500], 500)
    write_parquet(tmp_path / "in" / "b.parquet", rows.iloc[1_500:], 500)
    report = run_job(config(tmp_path / "in", tmp_path / "out", published, dask_cluster, partition_rows=500))
    assert report.partitions == 6 and report.rows_predicted == 3_000 and report.release["release"] == "fraud:2"
    assert report.sessions_per_worker == 1  # one onnxruntime session per worker, loaded once for 6 partitions
    batch = pd.read_parquet(tmp_path / "out").set_index("transaction_id").loc[rows["transaction_id"]]
    assert set(batch["release"]) == {"fraud:2"}

    expected = in_process_probabilities(published.runs[1].run_dir, rows, "fraud")
    np.testing.assert_allclose(batch[PROBS].to_numpy(), expected, atol=1e-5, rtol=0)
    for protocol, url in (("http", triton.config.http_url), ("grpc", triton.config.grpc_url)):
        with InferlineClient(url, protocol, pipeline="fraud") as client:  # type: ignore[arg-type]
            served = client.predict(rows)
        assert served.ok.all() and set(served.release) == {"fraud:2"}
        np.testing.assert_allclose(batch[PROBS].to_numpy(), served.probabilities, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(batch["predicted_class"].to_numpy(), served.predicted_class)


def test_cli_local_cluster_report_and_resume(inputs: Path, published: Published, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [*BATCH_RUN, "--input", f"{inputs}/*.parquet", "--output", str(out)]
    command += ["--model", "fraud", "--repository", str(published.repository), "--workers", "2"]
    command += ["--partition-rows", str(4 * ROW_GROUP), "--alerts", str(tmp_path / "alerts.jsonl")]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "INFO distributed" not in first.stderr, first.stderr  # the local scheduler's log stays quiet
    report = json.loads(first.stdout)
    assert report["cluster"]["kind"] == "LocalCluster" and report["cluster"]["workers"] == 2
    assert report["partitions"] == 3 and report["partitions_resumed"] == 0
    assert report["rows_in"] == 12_000 == report["rows_predicted"] + report["rows_quarantined"]
    assert report["release"]["release"] == "fraud:2" and len(report["release"]["manifest_sha256"]) == 64
    assert report["wall_s"] > 0 and report["rows_per_s"] > 0
    assert json.loads((out / "_report.json").read_text()) == report
    before = {p.name: sha256_file(p) for p in out.glob("part-*.parquet")}

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["partitions_resumed"] == 3 and resumed["cluster"]["kind"].startswith("none")
    assert {p.name: sha256_file(p) for p in out.glob("part-*.parquet")} == before
    status = subprocess.run(
        [sys.executable, "-m", "inferline.batch", "status", "--output", str(out)], capture_output=True
    )
    assert status.returncode == 0 and json.loads(status.stdout)["job"] == report["job"]
    helped = subprocess.run([*BATCH_RUN, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--scheduler" in helped.stdout


class Gate:
    """The test's side of ``JobConfig.gate``: partitions wait in this folder until the test lets them through."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.folder = folder

    def held(self) -> set[str]:
        """Partitions waiting at the gate now (announced, not let through, the gate not open)."""
        if (self.folder / "open").exists():
            return set()
        return {p.stem for p in self.folder.glob("*.waiting") if not (self.folder / p.stem).exists()}

    def let_through(self, name: str) -> None:
        (self.folder / name).touch()

    def open(self) -> None:
        (self.folder / "open").touch()


def commits(out: Path) -> set[str]:
    return {p.stem for p in (out / "_commits").glob("part-*.json")}


def commit_two_then_hold_both_workers(gate: Gate, out: Path, alive: Callable[[], object]) -> set[str]:
    """Let two partitions through one at a time and wait for their commits, then until each of the two
    single-threaded workers holds a partition at the gate: from then on nothing can commit until the gate opens.
    Returns the held partitions."""
    for _ in range(2):
        wait_until(lambda: gate.held() or not alive(), 120, "a partition waiting at the gate")
        assert alive(), "the job ended before the gate was opened"
        name = sorted(gate.held())[0]
        gate.let_through(name)
        wait_until(lambda name=name: name in commits(out), 120, f"{name} committed")
    wait_until(lambda: len(gate.held()) == 2, 120, "both workers holding a partition at the gate")
    return gate.held()


def test_worker_killed_mid_job_completes_exactly_once(
    inputs: Path, published: Published, own_dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    """A worker is SIGKILLed while it holds a partition and 10 of 12 are provably uncommitted (held back at the
    job's gate); Dask reruns its work elsewhere and every row is still written exactly once."""
    victim = max(own_dask_cluster.worker_pids().values())
    gate, out = Gate(tmp_path / "gate"), tmp_path / "out"
    outcome: dict[str, object] = {}

    def drive() -> None:
        try:
            outcome["report"] = run_job(config(inputs, out, published, own_dask_cluster, gate=gate.folder))
        except Exception as exc:  # noqa: BLE001 - re-raised by the assertion below
            outcome["error"] = exc

    driver = threading.Thread(target=drive)
    driver.start()
    try:
        held = commit_two_then_hold_both_workers(gate, out, driver.is_alive)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: gone(victim), 30, "the killed worker process gone")
        assert len(commits(out)) == 2 and not held & commits(out), "killed while 10 partitions were pending"
    finally:
        gate.open()
        driver.join(300)
    assert "error" not in outcome, outcome
    report = outcome["report"]
    assert isinstance(report, JobReport)
    assert report.partitions == 12 and report.partitions_committed == 12 and report.partitions_resumed == 0
    assert_exactly_once(out, input_ids(inputs), report)


def test_driver_killed_mid_job_then_rerun_resumes(
    published: Published, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    """The driver is SIGKILLed with 2 partitions committed and both workers holding one at the gate; the tasks it
    leaves behind finish once the gate opens, and the rerun resumes every committed partition."""
    for i in range(2):  # 40 partitions of one 200-row group each
        write_parquet(tmp_path / "in" / f"tx-{i}.parquet", fraud.generate(4_000, seed=600 + i), 200)
    out, gate = tmp_path / "out", Gate(tmp_path / "gate")
    command = [*BATCH_RUN, "--input", str(tmp_path / "in"), "--output", str(out), "--quiet", "--partition-rows", "1"]
    command += ["--model", "fraud:2", "--repository", str(published.repository), "--scheduler", dask_cluster.address]
    environment = {**os.environ, "INFERLINE_BATCH_GATE": str(gate.folder)}  # JobConfig.gate's default
    with open(tmp_path / "driver.log", "wb") as log:
        driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=environment)
    try:
        held = commit_two_then_hold_both_workers(gate, out, lambda: driver.poll() is None)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        assert commits(out) and len(commits(out)) == 2, "the driver must die with 38 partitions pending"
        assert json.loads((out / "_job.json").read_text())["status"] == "running"
        # the scheduler forgets a dead client's tasks; the two already running on workers finish once let through
        wait_until(lambda: not batch_tasks(dask_cluster), 60, "the scheduler releasing the dead driver's tasks")
    finally:
        gate.open()
    wait_until(lambda: held <= commits(out), 60, "the dead driver's running partitions committed")
    committed_before = commits(out)
    assert len(committed_before) == 4

    report = run_job(config(tmp_path / "in", out, published, dask_cluster, partition_rows=1, gate=None))
    assert report.partitions == 40 and report.partitions_committed == 40
    assert report.partitions_resumed == len(committed_before)
    assert_exactly_once(out, input_ids(tmp_path / "in"), report)
    assert json.loads((out / "_job.json").read_text())["status"] == "complete"


def batch_tasks(cluster: DaskCluster) -> int:
    """Tasks of any inferline batch job the scheduler still knows."""
    from distributed import Client

    def count(dask_scheduler: Any) -> int:
        return sum(str(key).startswith("inferline-batch-") for key in dask_scheduler.tasks)

    with Client(cluster.address, timeout="30s") as client:
        return int(client.run_on_scheduler(count))


def test_poison_partitions_are_named_and_the_rest_commit(
    published: Published, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    good = fraud.generate(3_000, seed=7)
    write_parquet(tmp_path / "in" / "good.parquet", good)
    garbage = fraud.generate(2_000, seed=8)
    garbage.loc[:999, "amount"] = -5.0  # an upstream bug: the whole first row group is invalid
    write_parquet(tmp_path / "in" / "negative.parquet", garbage)
    corrupt = write_parquet(tmp_path / "in" / "corrupt.parquet", fraud.generate(2_000, seed=9))
    column = pq.ParquetFile(corrupt).metadata.row_group(1).column(2)  # damage row group 1's bytes, footer intact
    data = bytearray(corrupt.read_bytes())
    data[column.data_page_offset : column.data_page_offset + column.total_compressed_size] = b"\xff" * (
        column.total_compressed_size
    )
    corrupt.write_bytes(bytes(data))

    with pytest.raises(BatchJobFailed) as failed:
        run_job(config(tmp_path / "in", tmp_path / "out", published, dask_cluster))
    report = failed.value.report
    message = str(failed.value)
    assert f"{tmp_path}/in/negative.parquet, row group 0" in message and "amount:negative" in message
    assert f"{tmp_path}/in/negative.parquet, row group 1" in message, "the gate is per file: its valid half too"
    assert f"{tmp_path}/in/corrupt.parquet, row group 1" in message and "not readable as Parquet" in message
    assert [f["partition"] for f in report.failed] == [1, 5, 6]  # files in name order: corrupt, good, negative
    assert [f["reason"] for f in report.failed] == ["unreadable_file", *["invalid_share_exceeded"] * 2]
    assert report.status == "failed" and report.partitions_committed == report.partitions - 3 == 4
    assert report.rows_failed == 3_000 and report.reconciled
    assert len(list((tmp_path / "out" / "_commits").glob("*.json"))) == 4
    assert json.loads((tmp_path / "out" / "_job.json").read_text())["status"] == "failed"
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("part-*.parquet")}

    # upstream rewrites the corrupt file in place and the invalid rows are accepted into quarantine:
    # the same job resumes, and only the two failed partitions run again
    write_parquet(corrupt, fraud.generate(2_000, seed=9))
    report = run_job(config(tmp_path / "in", tmp_path / "out", published, dask_cluster, max_invalid_share=1.0))
    assert report.partitions_resumed == 3  # corrupt.parquet's other partition ran again: its file changed
    assert report.rows_quarantined == 1_000 and report.reasons == {"amount:negative": 1_000}
    unchanged = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("part-*.parquet") if p.name in kept}
    assert sum(unchanged[name] == kept[name] for name in kept) == 3
    ids = set(good["transaction_id"]) | set(garbage["transaction_id"]) | input_ids(tmp_path / "in")
    assert_exactly_once(tmp_path / "out", ids, report)
    quarantine = pd.read_parquet(tmp_path / "out" / "_quarantine")
    assert set(quarantine["_reasons"]) == {"amount:negative"} and len(quarantine) == 1_000


def test_the_invalid_share_gate_is_per_file_over_all_its_partitions(
    published: Published, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    mixed = fraud.generate(2_000, seed=41)
    mixed.loc[:149, "amount"] = -5.0  # 15 % of its first partition, 7.5 % of the file: the file passes 10 %
    write_parquet(tmp_path / "in" / "a-mixed.parquet", mixed)
    bad = fraud.generate(2_000, seed=42)
    bad.loc[:249, "amount"] = -5.0  # 25 % of its first partition, none of its second: 12.5 % of the file
    write_parquet(tmp_path / "in" / "b-bad.parquet", bad)
    good = fraud.generate(1_000, seed=43).astype({"currency": "category", "channel": "category"})
    write_parquet(tmp_path / "in" / "c-good.parquet", good)  # dictionary columns: read as their values
    out = tmp_path / "out"
    with pytest.raises(BatchJobFailed) as failed:
        run_job(config(tmp_path / "in", out, published, dask_cluster, max_invalid_share=0.1))
    report = failed.value.report
    # both partitions of b-bad.parquet, its clean one too; a-mixed.parquet's first partition is scored
    assert [f["partition"] for f in report.failed] == [2, 3]
    assert {f["reason"] for f in report.failed} == {"invalid_share_exceeded"}
    assert f"{tmp_path}/in/b-bad.parquet: 250 of 2000 rows (12.5%)" in str(failed.value)
    assert (report.rows_predicted, report.rows_quarantined, report.rows_failed) == (2_850, 150, 2_000)
    assert report.reconciled and report.reasons == {"amount:negative": 150}
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet",
                                                                  "part-00004.parquet"]  # fmt: skip
    evidence = pd.read_parquet(out / "_quarantine" / "part-00002.parquet")  # the refused file's rows, kept
    assert len(evidence) == 250 and set(evidence["_reasons"]) == {"amount:negative"}
    assert f"quarantine is kept in {out / '_quarantine' / 'part-00002.parquet'}" in str(failed.value)

    cli = subprocess.run(
        [*BATCH_RUN, "--input", str(tmp_path / "in"), "--output", str(out), "--model", "fraud:2", "--repository",
         str(published.repository), "--scheduler", dask_cluster.address, "--partition-rows", str(ROW_GROUP),
         "--max-invalid-share", "0.1", "--alerts", str(tmp_path / "alerts.jsonl"), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 1 and "Traceback" not in cli.stderr, cli.stderr
    alert = json.loads((tmp_path / "alerts.jsonl").read_text().splitlines()[-1])
    assert alert["source"] == "batch" and alert["reason"] == "invalid_share_exceeded"

    report = run_job(config(tmp_path / "in", out, published, dask_cluster, max_invalid_share=0.2))
    assert report.partitions_resumed == 3 and report.rows_predicted == 4_600 and report.rows_quarantined == 400


@pytest.mark.parametrize(
    ("change", "column", "problem"),
    [
        (lambda f: f.assign(amount=f["amount"].astype(str)), "amount", "dtype changed"),
        (lambda f: f.drop(columns=["country"]), "country", "missing"),
        (lambda f: f.assign(shop_id="s1"), "shop_id", "unexpected column"),
    ],
)
def test_schema_drift_names_file_and_column_and_writes_nothing(
    inputs: Path, published: Published, tmp_path: Path, change: object, column: str, problem: str
) -> None:
    out = tmp_path / "out"
    run_job(config(inputs, out, published, None, workers=1, partition_rows=4 * ROW_GROUP))
    before = {p.relative_to(out): sha256_file(p) for p in out.rglob("*") if p.is_file()}
    drifted = write_parquet(tmp_path / "in" / "z-drifted.parquet", change(fraud.generate(500, seed=3)))  # type: ignore[operator]
    with pytest.raises(FileLevelError) as err:
        run_job(config([f"{inputs}/*.parquet", str(drifted)], out, published, None, overwrite=True))
    assert str(drifted) in str(err.value) and f"column {column!r}: {problem}" in str(err.value)
    assert {p.relative_to(out): sha256_file(p) for p in out.rglob("*") if p.is_file()} == before


def test_empty_input_is_refused_and_overwrites_nothing(inputs: Path, published: Published, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_job(config(inputs, out, published, None, workers=1, partition_rows=4 * ROW_GROUP))
    before = {p.relative_to(out): sha256_file(p) for p in out.rglob("*") if p.is_file()}
    empty = write_parquet(tmp_path / "empty" / "none.parquet", fraud.generate(10, seed=1).head(0))
    with pytest.raises(EmptyInput, match="0 rows: nothing to score"):
        run_job(config(empty.parent, out, published, None, overwrite=True))
    with pytest.raises(FileNotFoundError, match="no Parquet files matched"):
        run_job(config([f"{tmp_path}/nowhere/*.parquet"], out, published, None, overwrite=True))
    args = ["--input", str(empty), "--output", str(out), "--overwrite", "--repository", str(published.repository)]
    cli = subprocess.run(
        [*BATCH_RUN, *args, "--alerts", str(tmp_path / "alerts.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1 and "nothing to score" in cli.stderr and "nothing written or changed" in cli.stderr
    alert = json.loads((tmp_path / "alerts.jsonl").read_text().splitlines()[-1])
    assert alert["source"] == "batch" and alert["reason"] == "no_data"
    assert {p.relative_to(out): sha256_file(p) for p in out.rglob("*") if p.is_file()} == before


def test_another_jobs_output_is_kept_unless_overwrite(inputs: Path, published: Published, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_job(config(inputs, out, published, None, workers=1, partition_rows=4 * ROW_GROUP))
    (out / "part-00099.parquet").write_bytes(b"stale")  # no commit of this job vouches for it
    (out / ".part-00001.parquet.abc.tmp").write_bytes(b"half-written")
    again = run_job(config(inputs, out, published, None, workers=1, partition_rows=4 * ROW_GROUP))
    assert again.partitions_resumed == 3 and again.job == first.job
    assert not (out / "part-00099.parquet").exists() and not (out / ".part-00001.parquet.abc.tmp").exists()

    with pytest.raises(OutputInUse, match="holds the results of another job") as err:
        run_job(config(inputs, out, published, None, workers=1, partition_rows=4 * ROW_GROUP, model="fraud:1"))
    assert "fraud:2" in str(err.value) and "--overwrite" in str(err.value)
    assert set(pd.read_parquet(out)["release"]) == {"fraud:2"}
    replaced = run_job(
        config(inputs, out, published, None, workers=1, partition_rows=4 * ROW_GROUP, model="fraud:1", overwrite=True)
    )
    assert replaced.partitions_resumed == 0 and set(pd.read_parquet(out)["release"]) == {"fraud:1"}
    assert_exactly_once(out, input_ids(inputs), replaced)


def test_every_output_row_names_its_source_file_and_row(
    published: Published, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    """Predictions and quarantine carry ``source_file`` (relative to the folder holding every input) and
    ``source_row`` (the row's position in that file) for every row: two files of one name in two folders stay
    apart, and each output row leads back to its input row."""
    first, second = fraud.generate(1_500, seed=31), fraud.generate(1_500, seed=32)
    second.loc[[10, 1_200], "amount"] = -1.0  # two bad rows: quarantined, named the same way
    write_parquet(tmp_path / "in" / "2026-11" / "tx.parquet", first, 500)
    write_parquet(tmp_path / "in" / "2026-12" / "tx.parquet", second, 500)
    report = run_job(
        config(
            [str(tmp_path / "in" / "*" / "tx.parquet")],
            tmp_path / "out",
            published,
            dask_cluster,
            max_invalid_share=0.1,
        )
    )
    predicted = pd.read_parquet(tmp_path / "out")
    quarantine = pd.read_parquet(tmp_path / "out" / "_quarantine")
    assert list(predicted.columns[:3]) == ["transaction_id", "source_file", "source_row"]
    assert report.rows_quarantined == 2 and set(quarantine["source_file"]) == {"2026-12/tx.parquet"}
    assert sorted(quarantine["source_row"]) == [10, 1_200]
    rows = pd.concat([predicted, quarantine], ignore_index=True)
    sources = {"2026-11/tx.parquet": first, "2026-12/tx.parquet": second}
    assert set(rows["source_file"]) == set(sources) and not rows.duplicated(["source_file", "source_row"]).any()
    for name, frame in sources.items():
        mine = rows[rows["source_file"] == name].sort_values("source_row")
        assert list(mine["source_row"]) == list(range(len(frame)))
        assert list(mine["transaction_id"]) == list(frame["transaction_id"])
