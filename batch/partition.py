"""One partition, start to finish, on a Dask worker: read -> validate -> quarantine -> shared feature kernels ->
the release's exact ``model.onnx`` -> predictions, written exactly once.

Exactly once, without coordination: every output is a pure function of (partition, release, the copies of
repeated unique values the job's pre-pass assigned it: ``batch.duplicates``), written to a
hidden temporary file, fsynced and renamed to its deterministic name; the partition's commit record is renamed
into ``_commits/`` last. A retried or duplicated attempt rewrites identical bytes under the same names, and a
partition without a commit record is simply computed again.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferline.batch.plan import Partition
from inferline.core.files import atomic_write_json, atomic_write_parquet, sha256_file
from inferline.features.backend import BackendName, get_backend
from inferline.features.contract import Contract, compile_contract
from inferline.features.duplicates import ROW, mark_copies, with_row
from inferline.features.parquet_reader import read_parquet
from inferline.features.spec import PipelineSpec, spec_beside
from inferline.features.state import FeatureState
from inferline.features.tensors import PreprocessFailed, isolate_rows
from inferline.features.validation import ValidationResult
from inferline.release.runtime import Device, onnx_session
from inferline.serving.batches import MODEL_FAILED, blank_outputs

__all__ = [
    "COMMITS",
    "QUARANTINE",
    "PartitionRejected",
    "Task",
    "output_columns",
    "prediction_frame",
    "run_partition",
    "score_frame",
    "source_names",
    "wait_at_gate",
]

COMMITS = "_commits"
QUARANTINE = "_quarantine"
MODEL_CHUNK_ROWS = 65_536  # rows per onnxruntime call: bounds the activations' memory on big partitions


class PartitionRejected(ValueError):
    """A partition refused: one of a file whose share of invalid rows is over the limit (the gate is per file,
    ``batch.job``: each partition of such a file is withdrawn from the output, its quarantine kept), or one with
    more valid rows the pipeline cannot score than the search for them allows. ``reason``: the failure's
    machine-readable reason (``features.dataset.refusal_reason`` reads it)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Task:
    """Everything a worker needs for one partition; small and picklable, no open handles."""

    partition: Partition
    job: str  # the job identity: a commit record counts only for the job that wrote it
    release: str  # "fraud:2"
    pipeline: str
    model_path: str
    model_sha256: str
    state_path: str
    output: str
    backend: BackendName
    device: Device
    threads: int
    monitor_url: str | None = None  # http://127.0.0.1:9400: a sample of each partition's rows and predictions
    monitor_rows: int = 2_000
    monitor_key: str | None = field(default=None, repr=False)  # the monitor's ingest key
    gate: str | None = None  # a folder: hold the partition there until the caller lets it through (JobConfig.gate)
    # per unique column, the rows (positions in this partition) whose values repeat elsewhere in the input or in
    # it, that the column's policy quarantines (batch.duplicates), and their digest for the commit record
    duplicates: tuple[tuple[str, tuple[int, ...]], ...] = ()
    duplicates_sha256: str | None = None
    # the input file as the outputs name it (``source_file``): its path relative to the folder that holds every
    # input file of the job (``source_names``); empty: the file's name
    source_file: str = ""
    # valid rows the pipeline may fail to score alone (found by bisection), as a share of the partition: past it the
    # search stops and the partition is refused (--max-invalid-share)
    max_unscored_share: float = 0.05


_session_loads: dict[tuple[str, str, str, int], int] = {}  # per worker process: how often each session was made


@cache
def _session(model_path: str, model_sha256: str, device: Device, threads: int) -> Any:
    """One onnxruntime session per worker process and release, loaded on first use."""
    key = (model_path, model_sha256, device, threads)
    _session_loads[key] = _session_loads.get(key, 0) + 1
    return onnx_session(model_path, device=device, threads=threads)


@cache
def _contract(pipeline: str, state_path: str) -> Contract:
    """The release's compiled contract (its spec snapshot beside its feature state), once per worker process."""
    return compile_contract(spec_beside(state_path, pipeline), FeatureState.load(state_path))


SOURCE = ("source_file", "source_row")  # where every output row came from: its input file and its row there


def source_names(files: list[str]) -> dict[str, str]:
    """Each input file -> its name in the outputs: the path relative to the deepest folder holding them all
    (``a.parquet``, ``2026-12/b.parquet``), so that two files of one name in different folders stay apart."""
    if not files:
        return {}
    root = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    return {f: os.path.relpath(os.path.abspath(f), root) for f in files}


def output_columns(spec: PipelineSpec) -> list[str]:
    """The prediction file's columns: the spec's id column (when it has one), ``source_file`` (the input file, as
    ``Task.source_file`` names it) and ``source_row`` (the row's 0-based position in that file), the task's
    outputs (``probability_<class>`` per class and ``predicted_class``, or ``prediction``) and the release. The
    quarantine's rows carry ``source_file`` and ``source_row`` too."""
    ids = [*([spec.id_column.name] if spec.id_column is not None else []), *SOURCE]
    if spec.task == "regression":
        return [*ids, "prediction", "release"]
    return [*ids, *(f"probability_{c}" for c in spec.classes), "predicted_class", "release"]


def score_frame(
    valid: pd.DataFrame,
    spec: PipelineSpec,
    state: FeatureState,
    session: Any,
    backend: BackendName,
    contract: Contract | None = None,
    failed: dict[int, str] | None = None,
    max_failed: int | None = None,
) -> dict[str, np.ndarray]:
    """Validated rows -> the model's outputs by name (``probabilities`` [n, classes] and ``predicted_class`` [n],
    or ``prediction`` [n]) with the shared contract. Rows whose tensors differ in shape (a variable dimension) are
    scored in groups of one shape and put back in order.

    A bad row costs only itself. Rows a column's ``preprocess`` function raises on (found alone by
    ``features.tensors``) get ``<column>:preprocess`` and the others are featurized again without them; when the
    model raises on a group, its features are halved down to the single rows it raises on (``model:failed``;
    ``features.tensors.isolate_rows``, past ``max_failed`` such rows the rest of the unresolved rows fail with
    them: the caller refuses the partition then). With ``failed`` given, each such row's position in ``valid`` is
    recorded there with its reason and its outputs are zeros; without it, the first such error is raised."""
    b = get_backend(backend)
    contract = contract if contract is not None else compile_contract(spec, state)  # a worker passes its cached one
    outputs = contract.outputs[:-2]
    names = [t.name for t in outputs]
    out = {name: [] for name in names}  # type: dict[str, list[np.ndarray]]
    order: list[np.ndarray] = []
    groups = contract.shape_groups(valid) if spec.tensor_columns else [np.arange(len(valid))]

    def features_of(rows: pd.DataFrame) -> dict[str, np.ndarray]:
        m = contract.features(b.from_pandas(rows) if not spec.tensor_columns else rows)
        return {k: b.to_numpy(v) for k, v in contract.feeds(m).items()}

    def add(group: np.ndarray, values: list[np.ndarray]) -> None:
        for name, value in zip(names, values, strict=True):
            out[name].append(value.reshape(-1) if name in ("predicted_class", "prediction") else value)
        order.append(group)

    for group in groups:
        rows = valid if len(groups) == 1 else valid.iloc[group].reset_index(drop=True)
        while len(group):
            try:
                feeds = features_of(rows)
                break
            except PreprocessFailed as exc:
                if failed is None:
                    raise
                failed.update({int(i): exc.reason for i in group[exc.rows]})  # answered zeros, then quarantined
                add(group[exc.rows], blank_outputs(outputs, int(exc.rows.sum())))
                group, rows = group[~exc.rows], rows[~exc.rows].reset_index(drop=True)
        if not len(group):
            continue

        def run(lo: int, hi: int, feeds: dict[str, np.ndarray] = feeds) -> list[np.ndarray]:
            pieces = [
                session.run(names, {k: v[start : min(start + MODEL_CHUNK_ROWS, hi)] for k, v in feeds.items()})
                for start in range(lo, hi, MODEL_CHUNK_ROWS)
            ]
            return [np.concatenate([p[j] for p in pieces]) for j in range(len(names))]

        limit = None if max_failed is None or failed is None else max(0, max_failed - len(failed))
        scored, bad, errors = isolate_rows(run, len(rows), limit)
        if bad.any():
            if failed is None:
                raise errors[int(np.flatnonzero(bad)[0])]
            failed.update({int(group[i]): MODEL_FAILED for i in errors})
        add(group, scored if scored is not None else blank_outputs(outputs, len(rows)))
    if not order or not len(valid):
        empty: dict[str, np.ndarray] = {
            "probabilities": np.zeros((0, len(spec.classes)), np.float32),
            "predicted_class": np.zeros(0, np.int64),
        }
        return {name: empty.get(name, np.zeros(0, np.float32)) for name in names}
    inverse = np.argsort(np.concatenate(order), kind="stable")
    return {name: np.concatenate(out[name])[inverse] for name in names}  # add() flattened the per-row outputs


def prediction_frame(
    valid: pd.DataFrame, spec: PipelineSpec, outputs: dict[str, np.ndarray], release: str
) -> pd.DataFrame:
    """The output rows (``output_columns``): the row's identity (its id, ``source_file`` and ``source_row``, those
    of them ``valid`` carries: the batch job's rows carry all), the task's outputs and the release."""
    ids = [c for c in output_columns(spec)[: len(SOURCE) + (spec.id_column is not None)] if c in valid.columns]
    out = pd.DataFrame({name: valid[name].to_numpy() for name in ids})  # a caller's frame may lack source_*
    if spec.task == "regression":
        out["prediction"] = outputs["prediction"]
    else:
        for i, name in enumerate(spec.classes):
            out[f"probability_{name}"] = outputs["probabilities"][:, i]
        out["predicted_class"] = outputs["predicted_class"]
    out["release"] = release
    return out


GATE_POLL_S = 0.02


def wait_at_gate(gate: str, name: str) -> None:
    """The hold point of ``JobConfig.gate``: announce ``<gate>/<name>.waiting``, then wait until the caller lets
    this partition through with ``<gate>/<name>`` or opens the gate for all with ``<gate>/open``. The files are
    the signal because workers are other processes, possibly on other machines sharing the folder."""
    folder = Path(gate)
    (folder / f"{name}.waiting").touch()
    while not (folder / "open").exists() and not (folder / name).exists():
        time.sleep(GATE_POLL_S)  # polling a file another process creates: the gate's own wait


def run_partition(task: Task) -> dict[str, Any]:
    part = task.partition
    if task.gate is not None:
        wait_at_gate(task.gate, part.name)
    started = time.perf_counter()
    contract = _contract(task.pipeline, task.state_path)
    spec, state = contract.spec, contract.state
    assert state is not None
    session = _session(task.model_path, task.model_sha256, task.device, task.threads)
    raw = read_parquet(Path(part.file), part.row_groups)  # a corrupt page: FileLevelError, never an abort
    # every row's input file and position in it ride beside validation into the predictions and the quarantine
    raw.insert(0, "source_row", np.arange(part.first_row, part.first_row + len(raw), dtype=np.int64))
    raw.insert(0, "source_file", pd.Series([task.source_file or Path(part.file).name] * len(raw), dtype=object))
    keep: tuple[str, ...] = SOURCE
    raw = raw.drop(columns=[spec.label], errors="ignore")  # a label column is allowed in scoring input, unused
    if task.duplicates:  # the row positions ride beside validation, to find the copies among valid and bad rows
        raw, keep = with_row(raw), (*keep, ROW)
    result = contract.validate(raw, source=part.describe(), include_label=False, keep=keep)
    examples: dict[str, list[str]] = {}
    if task.duplicates:
        result = mark_copies(result, dict(task.duplicates))
        examples = _examples(result.quarantine, [name for name, _ in task.duplicates])
    # the invalid-share gate is per file, over all its partitions (batch.job); here only the search for valid rows
    # the pipeline raises on alone is bounded: past max_unscored_share of the partition it stops and refuses it
    unscored: dict[int, str] = {}  # valid rows the pipeline raised on alone: quarantined with their reason
    allowed = int(task.max_unscored_share * result.rows_in)
    outputs = score_frame(result.valid, spec, state, session, task.backend, contract, unscored, allowed)
    if unscored:
        result, outputs = _quarantine_unscored(result, outputs, unscored)
        if len(unscored) > allowed:  # e.g. a preprocess function that raises on every row
            raise PartitionRejected(
                f"{len(unscored)} valid rows of {result.rows_in} could not be scored "
                f"({dict(Counter(unscored.values()))}), above the allowed "
                f"{task.max_unscored_share:.1%}; nothing of it was written. The workers' log holds "
                "the first error: fix the function or the model, then rerun",
                reason="unscorable_rows",
            )
    out = prediction_frame(result.valid, spec, outputs, task.release)

    root = Path(task.output)
    quarantine_path = root / QUARANTINE / f"{part.name}.parquet"
    if result.rows_quarantined:
        atomic_write_parquet(quarantine_path, result.quarantine)
    part_path = root / f"{part.name}.parquet"
    atomic_write_parquet(part_path, out)
    record = {
        "job": task.job,
        "partition": part.index,
        "source": part.describe(),
        "input_sha256": part.file_sha256,
        "part": part_path.name,
        "sha256": sha256_file(part_path),
        "quarantine": quarantine_path.name if result.rows_quarantined else None,
        "quarantine_sha256": sha256_file(quarantine_path) if result.rows_quarantined else None,
        "rows_in": result.rows_in,
        "rows_out": len(out),
        "rows_quarantined": result.rows_quarantined,
        "reasons": result.reason_counts,
        "duplicates_sha256": task.duplicates_sha256,
        "duplicate_examples": examples,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "sessions_loaded": _session_loads[(task.model_path, task.model_sha256, task.device, task.threads)],
        "seconds": round(time.perf_counter() - started, 4),
    }
    atomic_write_json(root / COMMITS / f"{part.name}.json", record)  # the commit point
    if task.monitor_url and len(out):
        record["monitor"] = _send_sample(task.monitor_url, task, spec, result.valid, outputs)
    return record


def _quarantine_unscored(
    result: ValidationResult, outputs: dict[str, np.ndarray], unscored: dict[int, str]
) -> tuple[ValidationResult, dict[str, np.ndarray]]:
    """Move the valid rows that could not be scored (position -> reason) to the quarantine, with their reason:
    rows in = rows predicted + rows quarantined still holds."""
    bad = np.zeros(len(result.valid), dtype=bool)
    bad[list(unscored)] = True
    moved = result.valid[bad].copy()
    moved.insert(
        0, "_reasons", pd.Series([unscored[i] for i in np.flatnonzero(bad)], index=moved.index, dtype="string")
    )
    counts = dict(result.reason_counts)
    for reason in unscored.values():
        counts[reason] = counts.get(reason, 0) + 1
    quarantine = pd.concat([result.quarantine, moved], ignore_index=True) if len(result.quarantine) else moved
    kept = replace(
        result,
        valid=result.valid[~bad].reset_index(drop=True),
        quarantine=quarantine.reset_index(drop=True),
        reason_counts=counts,
    )
    return kept, {name: value[~bad] for name, value in outputs.items()}


def _examples(quarantine: pd.DataFrame, columns: list[str], n: int = 3) -> dict[str, list[str]]:
    """A few of the repeated values this partition quarantined, per column, for the job report."""
    out: dict[str, list[str]] = {}
    reasons = [set(r.split(";")) for r in quarantine["_reasons"].tolist()]
    for name in columns:
        carries = np.array([f"{name}:duplicate" in r for r in reasons], dtype=bool)
        values = quarantine.loc[carries, name].dropna().astype(str)
        out[name] = list(dict.fromkeys(values.tolist()))[:n]
    return out


def _send_sample(
    url: str, task: Task, spec: PipelineSpec, valid: pd.DataFrame, outputs: dict[str, np.ndarray]
) -> dict[str, Any]:
    """A seeded uniform sample of the partition's scored rows (their tabular columns: tensor columns are not sent)
    and the task's outputs, to the monitor; its failure never fails the job."""
    from inferline.core.http import post_json
    from inferline.serving.client import encode_rows
    from inferline.serving.tap import sample_payload

    rng = np.random.default_rng(task.partition.index)
    take = np.sort(rng.choice(len(valid), min(task.monitor_rows, len(valid)), replace=False))
    rows = valid.iloc[take]
    tabular = [c for c in spec.input_columns if c.kind != "tensor"]
    regression = spec.task == "regression"
    payload = sample_payload(
        encode_rows(rows, tabular),
        None if regression else outputs["probabilities"][take],
        None if regression else outputs["predicted_class"][take],
        ["ok"] * len(take),
        task.release,
        spec.name,
        source="batch",
        prediction=outputs["prediction"][take] if regression else None,
    )
    try:
        answer = post_json(f"{url.rstrip('/')}/v1/samples", payload, key=task.monitor_key)
        return {"sent": len(take), **answer}
    except OSError as exc:  # a monitor that is down costs the batch job nothing but this note
        return {"sent": 0, "error": str(exc)}
