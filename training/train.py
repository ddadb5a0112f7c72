"""Train a pipeline's model on validated data; write a complete run directory or nothing.

A run directory holds: ``checkpoint.pt`` (weights_only-loadable; the model's factory by import path and its
arguments), ``feature_state.json`` (vocabularies, statistics, decision threshold), ``spec.json`` (the pipeline spec
it was trained on, snapshotted), ``metrics.json`` (holdout and validation metrics of the task: ROC AUC, PR AUC and
precision/recall at the threshold for binary; accuracy, per-class precision/recall, macro F1 and the confusion
matrix for multi-class; MAE, RMSE and R² for regression; for a classifier its ``calibration``, see
``training.calibration``), ``reference_profile.json`` (feature and prediction distributions, and the calibration
measured, which the monitor exports), ``holdout.parquet`` (raw holdout rows, the
parity set), ``run.json`` (lineage) and ``quarantine/``. It is built under a temporary name and renamed into
place, and ``LATEST`` moves only after that: a failed run leaves the last good run as it was.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from inferline.core.errors import PathNotFound, UserError
from inferline.core.files import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from inferline.features.contract import Contract, compile_contract
from inferline.features.dataset import DatasetReport, InvalidShareExceeded, load_validated, refusal_reason
from inferline.features.spec import SPEC_FILE, PipelineSpec, write_spec
from inferline.features.state import STATE_FILE, FeatureMatrix, FeatureState, fit_state
from inferline.training.calibration import calibrate
from inferline.training.metrics import choose_threshold, task_metrics
from inferline.training.model import (
    ModelLayout,
    ScoringModel,
    build_model,
    factory_args_of,
    layout_for,
    save_checkpoint,
)
from inferline.training.profile import null_counts, reference_profile

__all__ = ["SPLITS", "NotEnoughData", "RunResult", "latest_run", "split_by_time", "split_frame", "train"]

SPLITS = ("auto", "time", "random", "stratified")
FRACTIONS = (0.7, 0.85)  # train | validation (threshold, early checks) | holdout (reported metrics, parity set)


class NotEnoughData(UserError, ValueError):
    """The valid rows cannot make a training, a validation and a holdout split (``reason``: ``not_enough_rows``),
    or the training split lacks some of the classes (``missing_classes``: all-zero labels, a single class)."""

    docs = "tutorials/bring-your-own-model.md#5-train"

    def __init__(self, message: str, reason: str = "not_enough_rows") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    seconds: float


def split_by_time(
    frame: pd.DataFrame, spec: PipelineSpec, fractions: tuple[float, float] = FRACTIONS
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train on the past, choose the threshold on the next slice, report on the most recent (as production would)."""
    time_col = spec.timestamp_column.name if spec.timestamp_column else None
    id_col = spec.id_column.name if spec.id_column else None
    keys = [k for k in (time_col, id_col) if k]
    ordered = frame.sort_values(keys, kind="mergesort").reset_index(drop=True) if keys else frame
    a, b = int(len(ordered) * fractions[0]), int(len(ordered) * fractions[1])
    return (
        ordered.iloc[:a].reset_index(drop=True),
        ordered.iloc[a:b].reset_index(drop=True),
        ordered.iloc[b:].reset_index(drop=True),
    )


def resolve_split(how: str, spec: PipelineSpec) -> str:
    """``auto`` is ``time`` when the spec has a timestamp column, else ``stratified`` for a classifier and
    ``random`` for regression; ``time`` without a timestamp column is refused."""
    if how not in SPLITS:
        raise UserError(f"--split {how!r}; expected one of {SPLITS}")
    if how == "auto":
        if spec.timestamp_column is not None:
            return "time"
        return "random" if spec.task == "regression" else "stratified"
    if how == "time" and spec.timestamp_column is None:
        raise UserError(
            f"--split time needs a timestamp column, and pipeline {spec.name!r} has none; use --split stratified "
            "(classes in proportion) or --split random"
        )
    if how == "stratified" and spec.task == "regression":
        raise UserError("--split stratified needs classes; a regression pipeline splits with --split random")
    return how


def split_frame(
    frame: pd.DataFrame,
    spec: PipelineSpec,
    how: str = "auto",
    seed: int = 0,
    fractions: tuple[float, float] = FRACTIONS,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train / validation / holdout by time (the default with a timestamp), at random, or stratified by class
    (each class split in the same proportions; for data sorted by class), seeded."""
    how = resolve_split(how, spec)
    if how == "time":
        return split_by_time(frame, spec, fractions)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    if how == "random":
        groups = [np.arange(len(frame))]
    else:
        labels = frame[spec.label].to_numpy()
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for g in groups:
        g = rng.permutation(g)
        a, b = round(len(g) * fractions[0]), round(len(g) * fractions[1])
        for j, piece in enumerate((g[:a], g[a:b], g[b:])):
            parts[j].append(piece)
    index = [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]
    train_df, val_df, hold_df = (frame.iloc[i].reset_index(drop=True) for i in index)
    return train_df, val_df, hold_df


def _torch_inputs(contract: Contract, m: FeatureMatrix) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in contract.feeds(m).values()]


def _labels(frame: pd.DataFrame, spec: PipelineSpec) -> np.ndarray:
    return frame[spec.label].to_numpy(dtype="float64" if spec.task == "regression" else "int64")


@torch.no_grad()
def predict(model: ScoringModel, inputs: list[torch.Tensor], batch_size: int = 4096) -> tuple[np.ndarray, ...]:
    """The scoring model's outputs over every row, in batches (bounded memory for image inputs)."""
    n = int(inputs[0].shape[0]) if inputs else 0
    chunks = [model(*(t[s : s + batch_size] for t in inputs)) for s in range(0, n, batch_size)]
    if not chunks:
        return tuple(np.zeros((0, 1)) for _ in range(2 if model.task != "regression" else 1))
    return tuple(np.concatenate([c[i].numpy() for c in chunks]) for i in range(len(chunks[0])))


def _check_splits(spec: PipelineSpec, frame: pd.DataFrame, splits: list[pd.DataFrame], how: str) -> None:
    sizes = "/".join(str(len(d)) for d in splits)
    if min(len(d) for d in splits) == 0:
        raise NotEnoughData(
            f"not enough valid rows to train {spec.name!r}: {len(frame)} valid rows gave train/validation/holdout "
            f"splits of {sizes} (--split {how}); add data"
        )
    if spec.task != "regression":
        seen = sorted(int(v) for v in splits[0][spec.label].unique())
        if len(seen) < len(spec.classes):
            raise NotEnoughData(
                f"the training split of {spec.name!r} holds labels {seen} only, but the pipeline has "
                f"{len(spec.classes)} classes {spec.classes} (labels 0..{len(spec.classes) - 1}); {len(frame)} valid "
                f"rows split {sizes} with --split {how}. If the rows are sorted by class, use --split stratified",
                reason="missing_classes",
            )


def train(
    data: list[Path],
    spec: PipelineSpec,
    runs_dir: Path,
    seed: int = 0,
    epochs: int | None = None,
    max_invalid_share: float = 0.05,
    progress: bool = True,
    split: str = "auto",
    calibration: str = "auto",
) -> RunResult:
    """Validate ``data``, split it (``split``: auto, time, random, stratified), fit the feature state, train the
    spec's model (its factory, or the built-in TabularNet), check a classifier's calibration on the holdout
    (``calibration``: auto recalibrates or refuses when it is poor, off only records it; ``training.calibration``)
    and write a complete run directory.

    A run refused after its data was read (too many invalid rows in a file, too few rows or classes, a poor
    calibration: a ``UserError``) keeps its evidence in ``<runs_dir>/refused/<run id>/`` (``quarantine/`` and
    ``refusal.json``: the reason, the message and the data report) and the error names that folder
    (``evidence``); a file that cannot be read or breaks the schema keeps nothing (its error names file and
    column). ``LATEST`` does not move."""
    started = time.perf_counter()
    how = resolve_split(split, spec)
    runs_dir = Path(runs_dir)
    run_id = f"{spec.name}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-s{seed}"
    tmp_dir = runs_dir / f".{run_id}.tmp"
    tmp_dir.mkdir(parents=True)
    data_report: DatasetReport | None = None
    try:
        frame, data_report = load_validated(
            data, spec, quarantine_dir=tmp_dir / "quarantine", include_label=True, max_invalid_share=max_invalid_share
        )
        train_df, val_df, hold_df = split_frame(frame, spec, how, seed)
        _check_splits(spec, frame, [train_df, val_df, hold_df], how)
        state = fit_state(train_df, spec)
        contract = compile_contract(spec, state)
        m_train, m_val, m_hold = (contract.features(d) for d in (train_df, val_df, hold_df))

        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        p = spec.model
        layout = layout_for(contract)
        factory_args = factory_args_of(p)
        net = build_model(p.factory, layout, factory_args)
        y_train_np = _labels(train_df, spec)
        if spec.task == "regression":
            y_train = torch.from_numpy(y_train_np.astype("float32"))
            loss_fn: torch.nn.Module = torch.nn.MSELoss()
        else:
            y_train = torch.from_numpy(y_train_np)
            counts = torch.bincount(y_train, minlength=layout.n_outputs).clamp(min=1).double()
            class_weight = ((counts.sum() / (layout.n_outputs * counts)) ** 0.5).float()  # tempered inverse frequency
            loss_fn = torch.nn.CrossEntropyLoss(weight=class_weight)
        optimizer = torch.optim.AdamW(net.parameters(), lr=p.learning_rate, weight_decay=p.weight_decay)
        x_train = _torch_inputs(contract, m_train)
        generator = torch.Generator().manual_seed(seed)
        n_epochs = epochs if epochs is not None else p.epochs
        steps = n_epochs * -(-len(train_df) // p.batch_size)
        history = []
        with tqdm(total=steps, desc=f"train {spec.name}", unit="step", disable=None if progress else True) as bar:
            for epoch in range(n_epochs):
                net.train()
                perm = torch.randperm(len(train_df), generator=generator)
                total = 0.0
                for start in range(0, len(perm), p.batch_size):
                    idx = perm[start : start + p.batch_size]
                    optimizer.zero_grad()
                    out = net(*(t[idx] for t in x_train))
                    if spec.task == "regression":
                        out = out.reshape(-1)
                    loss = loss_fn(out, y_train[idx])
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(idx)
                    bar.update()
                history.append({"epoch": epoch + 1, "train_loss": total / len(perm)})
                bar.set_postfix(loss=f"{total / len(perm):.4f}")
        net.eval()

        x_val, x_hold = _torch_inputs(contract, m_val), _torch_inputs(contract, m_hold)
        fitted, calibration_record = None, None
        if spec.task != "regression":  # before the threshold: it is chosen on the scores that ship
            fitted, calibration_record = calibrate(
                net, (x_val, _labels(val_df, spec)), (x_hold, _labels(hold_df, spec)), spec.name, calibration
            )
        val_out = predict(ScoringModel(net, 0.5, task=spec.task, calibration=fitted).eval(), x_val)
        threshold = 0.5
        if spec.task == "binary":  # the decision threshold applies to binary tasks only
            threshold = choose_threshold(_labels(val_df, spec) == 1, val_out[0][:, 1].astype("float64"))
        state.threshold = threshold
        model = ScoringModel(net, threshold, task=spec.task, calibration=fitted).eval()
        val_out = predict(model, x_val)
        hold_out = predict(model, x_hold)
        metrics: dict[str, Any] = {
            "task": spec.task,
            "split": how,
            "holdout": task_metrics(spec.task, _labels(hold_df, spec), hold_out, spec.classes, threshold),
            "validation": task_metrics(spec.task, _labels(val_df, spec), val_out, spec.classes, threshold),
            "history": history,
            "rows": {"train": len(train_df), "validation": len(val_df), "holdout": len(hold_df)},
        }
        if calibration_record is not None:
            metrics["calibration"] = calibration_record
            metrics["holdout"]["calibration_error"] = calibration_record["error"]

        save_checkpoint(
            tmp_dir / "checkpoint.pt", net, threshold, spec.name, layout, p.factory, factory_args, calibration=fitted
        )
        state.save(tmp_dir / STATE_FILE)
        write_spec(spec, tmp_dir / SPEC_FILE)
        atomic_write_json(tmp_dir / "metrics.json", metrics)
        # drift baseline: features over every split (the whole period, so weekly cycles are complete), predictions
        # out of sample (validation + holdout), where the model is as confident as it will be in production
        everything = FeatureMatrix(
            numeric=np.concatenate([m_train.numeric, m_val.numeric, m_hold.numeric]),
            categorical=np.concatenate([m_train.categorical, m_val.categorical, m_hold.categorical]),
        )
        predictions = np.concatenate([val_out[0], hold_out[0]])
        missing = null_counts(pd.concat([train_df, val_df, hold_df], ignore_index=True), spec)
        # the vocabularies were fitted on the training rows (first): categorical references count the others
        profile = reference_profile(
            everything, state, predictions, task=spec.task, missing=missing, fitted_rows=len(m_train)
        )
        if calibration_record is not None:
            profile["calibration"] = calibration_record
        atomic_write_json(tmp_dir / "reference_profile.json", profile)
        atomic_write_parquet(tmp_dir / "holdout.parquet", hold_df)
        seconds = time.perf_counter() - started
        atomic_write_json(
            tmp_dir / "run.json",
            {
                "run_id": run_id,
                "pipeline": spec.name,
                "task": spec.task,
                "split": how,
                "schema_version": spec.version,
                "feature_hash": spec.feature_hash(),
                "seed": seed,
                "epochs": n_epochs,
                "data": data_report.as_dict(),
                "data_fingerprint": data_report.fingerprint,
                "model": model_record(p.factory, factory_args, layout),
                "torch": torch.__version__,
                "seconds": round(seconds, 3),
                "created_at": datetime.now(UTC).isoformat(),
            },
        )
        run_dir = runs_dir / run_id
        tmp_dir.rename(run_dir)
    except UserError as exc:
        if data_report is None and not isinstance(exc, InvalidShareExceeded):
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        kept = runs_dir / "refused" / run_id
        refused: UserError = exc
        if isinstance(exc, InvalidShareExceeded):
            refused = exc.kept_in(kept / "quarantine")
        else:
            exc.args = (f"{exc} The run's evidence (quarantine/, refusal.json) is kept in {kept}",)
        refused.evidence = kept  # type: ignore[attr-defined]
        _keep_refused(tmp_dir, kept, refused, data_report, spec)
        if refused is exc:
            raise
        raise refused from exc
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    atomic_write_bytes(runs_dir / "LATEST", (run_id + "\n").encode())
    return RunResult(run_dir=run_dir, metrics=metrics, seconds=seconds)


def _keep_refused(
    tmp_dir: Path, kept: Path, exc: UserError, data_report: DatasetReport | None, spec: PipelineSpec
) -> None:
    """Move a refused run's working folder to ``kept`` (its quarantine stays inside) with ``refusal.json``."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir.rename(kept)
    atomic_write_json(
        kept / "refusal.json",
        {
            "pipeline": spec.name,
            "reason": refusal_reason(exc),
            "error": str(exc),
            "files": getattr(exc, "files", None),
            "data": data_report.as_dict() if data_report is not None else None,
            "refused_at": datetime.now(UTC).isoformat(),
        },
    )


def model_record(factory: str, factory_args: dict[str, Any], layout: ModelLayout) -> dict[str, Any]:
    """What built the model, for run.json and the release manifest: the factory's import path, the sha256 of its
    module's source, its arguments and the layout."""
    from inferline.features.imports import source_sha256

    path = factory or "inferline.training.model:tabular_net"
    return {"factory": path, "source_sha256": source_sha256(path), "args": factory_args, "layout": layout.as_dict()}


def latest_run(runs_dir: Path) -> Path:
    pointer = Path(runs_dir) / "LATEST"
    if not pointer.exists():
        raise PathNotFound(
            f"no training run in {runs_dir} (no LATEST file); train one with `inferline train --runs {runs_dir}` "
            "or name a run directory with --run"
        )
    return Path(runs_dir) / pointer.read_text().strip()


def load_run(run_dir: Path) -> dict[str, Any]:
    return dict(json.loads((Path(run_dir) / "run.json").read_text()))


def load_state(run_dir: Path) -> FeatureState:
    return FeatureState.load(Path(run_dir) / STATE_FILE)
