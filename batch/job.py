"""The batch job driver: plan, resume, schedule partitions on Dask, reconcile, report.

Output directory layout (readers such as ``pandas.read_parquet(out)`` see only the ``part-*.parquet`` files;
pyarrow skips names that start with ``_`` or ``.``)::

    part-00000.parquet ...      predictions: id, probability_<class>..., predicted_class, release
    _quarantine/part-*.parquet  the rows each partition refused, with their reasons
    _commits/part-*.json        one commit record per partition (the commit manifest)
    _job.json                   the job's identity (inputs, release, plan) and status
    _report.json                the job report, rewritten at the end of every run

Values of unique columns repeated across the input (or within a partition) are found by a pre-pass before any
partition is scheduled (``batch.duplicates``); each partition quarantines its own copies by the column's policy,
and the report counts them (``duplicates``).

A job is its release, backend and partition geometry (files, row groups). A rerun of the same job skips every
partition whose commit record, output files, input file content and assigned duplicate copies check out, so after
a file is fixed in place only its partitions (and those whose copies it changed) run again; stale files (hidden
temporaries, parts or records that no commit of this job vouches for) are removed first. Results of another
job are never mixed in: that needs a new --output or --overwrite.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from inferline.batch.duplicates import Duplicates, Scan, find_duplicates, scan_partition, scan_task
from inferline.batch.partition import COMMITS, QUARANTINE, PartitionRejected, Task, run_partition, source_names
from inferline.batch.partition import _contract as worker_contract
from inferline.batch.plan import Partition, Plan, plan_job
from inferline.core.command import fraction, new_dir, positive_int
from inferline.core.errors import UserError
from inferline.core.files import atomic_write_json, sha256_file
from inferline.core.options import config, option
from inferline.features.backend import BackendName, get_backend
from inferline.features.dataset import refusal_reason
from inferline.release.resolve import Release, resolve_release
from inferline.release.runtime import Device

__all__ = ["BatchJobFailed", "JobConfig", "JobReport", "OutputInUse", "run_job"]

log = logging.getLogger("inferline.batch")
LAYOUT_VERSION = 1


class OutputInUse(UserError, RuntimeError):
    """The output directory holds another job's results."""

    docs = "tutorials/batch.md"


class BatchJobFailed(UserError, RuntimeError):
    """Some partitions failed; the others are committed and a rerun retries only the failed ones."""

    docs = "tutorials/batch.md"

    def __init__(self, report: JobReport) -> None:
        self.report = report
        lines = [f"  - {f['source']}: {f['error']}" for f in report.failed]
        super().__init__(
            f"batch job failed on {len(report.failed)} of {report.partitions} partitions "
            f"({report.partitions_committed} committed, kept in {report.output}):\n" + "\n".join(lines)
        )


def _gate_from_env() -> Path | None:
    value = os.environ.get("INFERLINE_BATCH_GATE")
    return Path(value) if value else None


BACKENDS = ("pandas", "cudf")  # what --backend offers: CPU or NVIDIA GPU frames (features.backend)


@config
class JobConfig:
    """One batch job. Fields made with ``option`` are also ``inferline batch run``'s flags (core.options)."""

    inputs: list[str] = option("--input", "Parquet files, globs ('data/*.parquet') or directories", nargs="+")
    output: Path = option(
        "--output", "output directory (part-*.parquet, _quarantine/, _report.json)", type=new_dir, convert=Path
    )
    model: str  # PIPELINE (its current release) or PIPELINE:VERSION (the command resolves --model)
    repository: Path = option(
        "--repository", "the Triton model repository releases live in", default=Path("triton_models"), convert=Path
    )
    scheduler: str | None = option("--scheduler", "tcp://HOST:PORT of an existing Dask scheduler", default=None)
    workers: int | None = option(
        "--workers",
        "LocalCluster workers (default: one per CPU core, or per GPU with --backend cudf); not with --scheduler",
        default=None,
        type=positive_int,
    )
    backend: BackendName = option("--backend", "pandas (CPU) or cudf (NVIDIA GPU)", default="pandas", choices=BACKENDS)
    partition_rows: int = option(
        "--partition-rows", "rows per partition (whole row groups)", default=250_000, type=positive_int
    )
    max_invalid_share: float = option(
        "--max-invalid-share",
        "per file (over all its partitions): a file whose share of invalid rows is above it is withdrawn from the "
        "output and its partitions fail; its quarantine is kept",
        default=0.05,
        type=fraction,
    )
    overwrite: bool = option(
        "--overwrite",
        "replace another job's results in --output (they are deleted when this job starts)",
        default=False,
    )
    progress: bool = True
    monitor_url: str | None = None  # send each partition's sample of rows and predictions to this monitor
    monitor_key: str | None = field(default=None, repr=False)  # its ingest key (core.secrets.monitor_key)
    # Hold partitions at a gate the caller controls (tests that kill a worker or the driver while partitions are
    # provably pending, staged runs): a folder every worker can read. Each partition, before it reads its input,
    # creates <gate>/part-NNNNN.waiting and waits until <gate>/part-NNNNN (that one) or <gate>/open (all) exists.
    # Default: $INFERLINE_BATCH_GATE, so a driver started as a command can be held too; unset: no gate.
    gate: Path | None = field(default_factory=_gate_from_env)
    # inputs of up to this many rows have their unique columns scanned for duplicates on the client; larger ones
    # as one Dask task per partition (batch.duplicates)
    scan_local_rows: int = 1_000_000


@dataclass
class JobReport:
    job: str
    output: str
    release: dict[str, Any]
    backend: str
    cluster: dict[str, Any]
    partitions: int
    partitions_committed: int = 0
    partitions_resumed: int = 0
    rows_in: int = 0
    rows_predicted: int = 0
    rows_quarantined: int = 0
    rows_failed: int = 0
    rows_sent_to_monitor: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    # per unique column: policy, values repeated in the input, rows quarantined as <column>:duplicate, examples
    duplicates: dict[str, Any] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)
    workers_used: list[str] = field(default_factory=list)
    sessions_per_worker: int = 0
    wall_s: float = 0.0
    rows_per_s: float = 0.0
    status: str = "running"

    @property
    def reconciled(self) -> bool:
        return self.rows_in == self.rows_predicted + self.rows_quarantined + self.rows_failed

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["reconciled"] = self.reconciled
        return out


def _job_identity(plan: Plan, release: Release, backend: str) -> str:
    body = {
        "layout": LAYOUT_VERSION,
        "plan": plan.digest(),  # geometry; each commit also names its input file's content
        "release": release.name,
        "manifest_sha256": release.manifest_sha256,
        "model_sha256": release.model_sha256,
        "backend": backend,  # cuDF and pandas agree to float32 tolerance, not bit for bit
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _valid_commit(root: Path, part: Partition, job: str, duplicates: Duplicates) -> dict[str, Any] | None:
    path = root / COMMITS / f"{part.name}.json"
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("job") != job or record.get("partition") != part.index:
        return None
    if record.get("input_sha256") != part.file_sha256:  # the file changed since: score it again
        return None
    if record.get("duplicates_sha256") != duplicates.digest_of(part):  # another file changed its copies
        return None
    files = [(root / record["part"], record["sha256"])]
    if record.get("quarantine"):
        files.append((root / QUARANTINE / record["quarantine"], record["quarantine_sha256"]))
    for file, digest in files:
        if not file.exists() or sha256_file(file) != digest:
            return None
    return record


def _remove_stale(root: Path, keep: set[str]) -> None:
    """Delete hidden temporaries (an attempt killed mid-write leaves one) and part files of partitions not in
    ``keep``, from the output and its _quarantine/ and _commits/ folders."""
    removed = 0
    for folder in (root, root / QUARANTINE, root / COMMITS):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            stale_part = path.name.startswith("part-") and path.name.split(".")[0] not in keep
            if path.is_file() and (stale_part or path.name.startswith(".")):
                path.unlink()
                removed += 1
    if removed:
        log.info("removed %d stale files from %s", removed, root)


def _prepare_output(
    root: Path, plan: Plan, release: Release, job: str, overwrite: bool, duplicates: Duplicates
) -> dict[int, Any]:
    """Claim the output directory for this job and return the partitions already committed by it."""
    job_file = root / "_job.json"
    if job_file.exists():
        previous = json.loads(job_file.read_text())
        if previous.get("job") != job and not overwrite:
            raise OutputInUse(
                f"{root} holds the results of another job ({previous.get('job')}: release "
                f"{previous.get('release', {}).get('release')}, inputs {previous.get('files')}, status "
                f"{previous.get('status')}); received job {job} (release {release.name}, inputs {plan.files}). "
                "Choose a new --output, or pass --overwrite to replace those results"
            )
    elif root.exists() and any(p.name.startswith("part-") for p in root.iterdir()):
        raise OutputInUse(
            f"{root} holds part files that no inferline batch job recorded; choose an empty --output directory"
        )
    committed = {p.index: rec for p in plan.partitions if (rec := _valid_commit(root, p, job, duplicates)) is not None}
    _remove_stale(root, keep={plan.partitions[i].name for i in committed})
    return committed


@contextmanager
def _cluster(config: JobConfig) -> Iterator[tuple[Any, dict[str, Any]]]:
    from distributed import Client, LocalCluster

    if config.scheduler:
        with Client(config.scheduler, timeout="30s") as client:
            n = len(client.scheduler_info()["workers"])
            yield client, {"kind": "existing", "scheduler": config.scheduler, "workers": n}
        return
    if config.backend == "cudf":  # pragma: no cover - GPU machines only
        from dask_cuda import LocalCUDACluster

        cluster: Any = LocalCUDACluster(  # one worker per visible GPU unless --workers says otherwise
            n_workers=config.workers, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        )
        kind = "LocalCUDACluster"
    else:
        workers = config.workers or len(os.sched_getaffinity(0))
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address="127.0.0.1:0",  # any free port: the scheduler's HTTP server runs even without bokeh
        )
        kind = "LocalCluster"
    with cluster, Client(cluster) as client:
        n = len(cluster.scheduler_info["workers"])
        yield client, {"kind": kind, "scheduler": cluster.scheduler_address, "workers": n}


def _scan(
    config: JobConfig, release: Release, job: str, parts: list[Partition], connect: Callable[[], Any]
) -> list[Scan]:
    """The duplicate pre-pass's reads (``batch.duplicates``): on the client for a small input (no cluster, no task
    overhead), else one Dask task per partition; one result per partition, in plan order."""
    state_path = str(release.state_path.resolve())
    if sum(p.rows for p in parts) <= config.scan_local_rows:
        contract = worker_contract(release.pipeline, state_path)
        return [scan_partition(contract, p) for p in parts]
    client = connect()
    run_id = uuid.uuid4().hex[:8]
    futures = [
        client.submit(scan_task, release.pipeline, state_path, p, key=f"inferline-scan-{job}-{run_id}-{p.name}")
        for p in parts
    ]
    scans: list[Scan] = client.gather(futures)
    return scans


def _file_gate(
    root: Path, plan: Plan, results: dict[int, dict[str, Any]], max_invalid_share: float
) -> list[dict[str, Any]]:
    """The invalid-share gate, per input file (as on validate and train): a file whose quarantined rows, over all
    its partitions, are above ``max_invalid_share`` of its rows is refused. Each of its committed partitions is
    withdrawn from ``results`` and from the output (commit record first, then predictions): it is failed, with
    reason ``invalid_share_exceeded``, its rows counted as failed; its quarantine stays in ``_quarantine/`` as the
    evidence. A file some of whose partitions failed otherwise is refused when its known quarantined rows alone
    pass the limit. Deterministic: a rerun on the same file refuses it again; a fixed file passes."""
    refused: list[dict[str, Any]] = []
    for file in plan.files:
        parts = [p for p in plan.partitions if p.file == file]
        records = [results[p.index] for p in parts if p.index in results]
        rows = sum(p.rows for p in parts)
        bad = sum(r["rows_quarantined"] for r in records)
        if not rows or bad / rows <= max_invalid_share:
            continue
        reasons: dict[str, int] = {}
        for record in records:
            for reason, count in record["reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + count
        for part in parts:
            if part.index not in results:
                continue
            record = results.pop(part.index)
            (root / COMMITS / f"{part.name}.json").unlink(missing_ok=True)  # the commit point goes first
            (root / record["part"]).unlink(missing_ok=True)
            kept = (
                f"; its quarantine is kept in {root / QUARANTINE / record['quarantine']}"
                if record["quarantine"]
                else ""
            )
            error = PartitionRejected(
                f"{file}: {bad} of {rows} rows ({bad / rows:.1%}) failed validation, above the allowed "
                f"{max_invalid_share:.1%} per file (reasons {reasons}); this partition's {record['rows_in']} rows "
                f"were withdrawn from the output{kept}. Fix the upstream file or raise --max-invalid-share, then "
                "rerun: the other files' partitions are kept",
                reason="invalid_share_exceeded",
            )
            refused.append(
                {
                    "partition": part.index,
                    "source": part.describe(),
                    "reason": error.reason,
                    "error": f"{type(error).__name__}: {error}",
                }
            )
    return refused


def run_job(config: JobConfig, on_commit: Callable[[dict[str, Any]], None] | None = None) -> JobReport:
    """Score ``config.inputs`` with the release ``config.model`` into ``config.output``; see the module doc."""
    started = time.perf_counter()
    release = resolve_release(config.model, config.repository)
    spec = release.spec()  # the release's own snapshot, never the live module
    release.state().check(spec)
    if config.backend == "cudf":
        get_backend("cudf")  # a clear BackendUnavailable before any cluster starts
    device: Device = "cuda" if config.backend == "cudf" else "cpu"
    plan = plan_job(config.inputs, spec, config.partition_rows)
    job = _job_identity(plan, release, config.backend)
    root = Path(config.output)
    results: dict[int, dict[str, Any]] = {}
    failed: list[dict[str, Any]] = []
    cluster_info: dict[str, Any] = {"kind": "none (every partition was already committed)"}
    with ExitStack() as stack:
        held: list[tuple[Any, dict[str, Any]]] = []

        def connect() -> Any:  # the cluster starts when first needed: a resumed, small job may need none
            if not held:
                held.append(stack.enter_context(_cluster(config)))
            return held[0][0]

        duplicates = find_duplicates(spec, plan, lambda parts: _scan(config, release, job, parts, connect))
        root.mkdir(parents=True, exist_ok=True)
        committed = _prepare_output(root, plan, release, job, config.overwrite, duplicates)
        meta = {
            "job": job,
            "release": release.as_dict(),
            "files": plan.files,
            "input_fingerprint": plan.fingerprint["sha256"],
            "partitions": len(plan.partitions),
            "partition_rows": plan.partition_rows,
            "rows": plan.rows,
            "backend": config.backend,
            "status": "running",
            "updated_at": datetime.now(UTC).isoformat(),
        }
        atomic_write_json(root / "_job.json", meta)

        todo = [p for p in plan.partitions if p.index not in committed]
        sources = source_names(plan.files)  # each file's name in the outputs' source_file column
        results.update(committed)
        if todo:
            client = connect()
            cluster_info = held[0][1]
            run_id = uuid.uuid4().hex[:8]  # task keys never collide with a killed earlier driver's tasks
            futures = {
                client.submit(
                    run_partition,
                    Task(
                        partition=p,
                        job=job,
                        release=release.name,
                        pipeline=release.pipeline,
                        model_path=str(release.model_path.resolve()),
                        model_sha256=release.model_sha256,
                        state_path=str(release.state_path.resolve()),
                        output=str(root.resolve()),
                        backend=config.backend,
                        device=device,
                        threads=1,
                        monitor_url=config.monitor_url,
                        monitor_key=config.monitor_key,
                        gate=str(Path(config.gate).resolve()) if config.gate is not None else None,
                        duplicates=duplicates.rows_of(p),
                        duplicates_sha256=duplicates.digest_of(p),
                        source_file=sources[p.file],
                        max_unscored_share=config.max_invalid_share,
                    ),
                    key=f"inferline-batch-{job}-{run_id}-{p.name}",
                    pure=False,
                    retries=0,  # a raised error is about the data and would fail again; lost workers are retried
                ): p
                for p in todo
            }
            from distributed import as_completed

            bar = tqdm(total=len(todo), unit="part", desc=f"batch {release.name}", disable=not config.progress)
            for future in as_completed(futures):
                part = futures[future]
                try:
                    record = future.result()
                except Exception as exc:  # noqa: BLE001 - one partition's failure is reported, the rest go on
                    failed.append(
                        {
                            "partition": part.index,
                            "source": part.describe(),
                            "reason": (
                                refusal_reason(exc) if isinstance(exc, UserError | PartitionRejected) else "error"
                            ),
                            "error": f"{type(exc).__name__}: {exc}",
                        }
                    )
                    bar.update(1)
                    continue
                results[part.index] = record
                if on_commit is not None:
                    on_commit(record)
                bar.update(1)
            bar.close()

    failed += _file_gate(root, plan, results, config.max_invalid_share)
    report = JobReport(
        job=job,
        output=str(root),
        release=release.as_dict(),
        backend=config.backend,
        cluster=cluster_info,
        partitions=len(plan.partitions),
        partitions_committed=len(results),
        partitions_resumed=len(committed),
        rows_in=plan.rows,
        failed=sorted(failed, key=lambda f: f["partition"]),
    )
    for record in results.values():
        report.rows_predicted += record["rows_out"]
        report.rows_quarantined += record["rows_quarantined"]
        for reason, count in record["reasons"].items():
            report.reasons[reason] = report.reasons.get(reason, 0) + count
    if any(duplicates.values.values()):
        report.duplicates = duplicates.as_dict(list(results.values()))
    report.rows_failed = sum(plan.partitions[f["partition"]].rows for f in failed)
    report.rows_sent_to_monitor = sum(r.get("monitor", {}).get("sent", 0) for r in results.values())
    fresh = [r for i, r in results.items() if i not in committed]
    report.workers_used = sorted({r["worker"] for r in fresh})
    report.sessions_per_worker = max((r["sessions_loaded"] for r in fresh), default=0)
    report.wall_s = round(time.perf_counter() - started, 3)
    scored = sum(r["rows_in"] for r in fresh)
    report.rows_per_s = round(scored / report.wall_s, 1) if report.wall_s else 0.0
    report.status = "failed" if failed else "complete"
    if not report.reconciled:  # a bug, never a data problem: say so loudly
        raise RuntimeError(f"bug: batch job {job} does not reconcile rows in and out: {report.as_dict()}")
    withdrawn = {plan.partitions[f["partition"]].name for f in failed if f["reason"] == "invalid_share_exceeded"}
    _remove_stale(root, keep={plan.partitions[i].name for i in results} | withdrawn)  # killed attempts' leftovers
    atomic_write_json(root / "_report.json", report.as_dict())
    atomic_write_json(
        root / "_job.json", {**meta, "status": report.status, "updated_at": datetime.now(UTC).isoformat()}
    )
    if failed:
        raise BatchJobFailed(report)
    return report
