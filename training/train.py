"""Train a pipeline's model on validated data; write a complete run directory or nothing.

A run directory holds: ``checkpoint.pt`` (weights_only-loadable), ``feature_state.json`` (vocabularies, statistics,
decision threshold), ``spec.json`` (the pipeline spec it was trained on, snapshotted), ``metrics.json`` (holdout
ROC AUC, PR AUC, precision/recall at the threshold),
``reference_profile.json`` (feature and prediction distributions), ``holdout.parquet`` (raw holdout rows, the
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

from inferline.features.artifacts import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from inferline.features.dataset import load_validated
from inferline.features.errors import PathNotFound
from inferline.features.spec import SPEC_FILE, PipelineSpec, write_spec
from inferline.features.state import FeatureMatrix, FeatureState, compute_features, fit_state
from inferline.training.metrics import choose_threshold, classification_metrics
from inferline.training.model import Architecture, ScoringModel, TabularNet, save_checkpoint
from inferline.training.profile import reference_profile

__all__ = ["RunResult", "latest_run", "split_by_time", "train"]


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    seconds: float


def split_by_time(
    frame: pd.DataFrame, spec: PipelineSpec, fractions: tuple[float, float] = (0.7, 0.85)
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train on the past, choose the threshold on the next slice, report on the most recent (as production would)."""
    time_col = next((c.name for c in spec.columns if c.kind == "timestamp"), None)
    id_col = spec.id_column.name if spec.id_column else None
    keys = [k for k in (time_col, id_col) if k]
    ordered = frame.sort_values(keys, kind="mergesort").reset_index(drop=True) if keys else frame
    a, b = int(len(ordered) * fractions[0]), int(len(ordered) * fractions[1])
    return (
        ordered.iloc[:a].reset_index(drop=True),
        ordered.iloc[a:b].reset_index(drop=True),
        ordered.iloc[b:].reset_index(drop=True),
    )


def _tensors(m: FeatureMatrix) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(m.numeric)), torch.from_numpy(np.ascontiguousarray(m.categorical))


def _labels(frame: pd.DataFrame, spec: PipelineSpec) -> np.ndarray:
    return frame[spec.label].to_numpy(dtype="int64")


@torch.no_grad()
def _positive_score(model: ScoringModel, m: FeatureMatrix) -> np.ndarray:
    probabilities, _ = model(*_tensors(m))
    return probabilities[:, -1].numpy().astype("float64")


def train(
    data: list[Path],
    spec: PipelineSpec,
    runs_dir: Path,
    seed: int = 0,
    epochs: int | None = None,
    max_invalid_share: float = 0.05,
    progress: bool = True,
) -> RunResult:
    started = time.perf_counter()
    runs_dir = Path(runs_dir)
    run_id = f"{spec.name}-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-s{seed}"
    tmp_dir = runs_dir / f".{run_id}.tmp"
    tmp_dir.mkdir(parents=True)
    try:
        frame, data_report = load_validated(
            data, spec, quarantine_dir=tmp_dir / "quarantine", include_label=True, max_invalid_share=max_invalid_share
        )
        train_df, val_df, hold_df = split_by_time(frame, spec)
        if min(len(train_df), len(val_df), len(hold_df)) == 0 or train_df[spec.label].nunique() < len(spec.classes):
            raise ValueError(
                f"not enough valid rows to train {spec.name!r}: {len(frame)} valid rows gave splits of "
                f"{len(train_df)}/{len(val_df)}/{len(hold_df)} and labels {sorted(train_df[spec.label].unique())}; "
                f"need every class of {spec.classes} in training data"
            )
        state = fit_state(train_df, spec)
        m_train, m_val, m_hold = (compute_features(d, spec, state) for d in (train_df, val_df, hold_df))

        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        p = spec.model
        arch = Architecture(
            cardinalities=tuple(state.cardinalities()),
            n_numeric=len(state.numeric),
            n_classes=len(spec.classes),
            embedding_dim=p.embedding_dim,
            hidden=tuple(p.hidden),
            dropout=p.dropout,
        )
        net = TabularNet(arch)
        y_train = torch.from_numpy(_labels(train_df, spec))
        counts = torch.bincount(y_train, minlength=arch.n_classes).clamp(min=1).double()
        class_weight = ((counts.sum() / (arch.n_classes * counts)) ** 0.5).float()  # tempered inverse frequency
        loss_fn = torch.nn.CrossEntropyLoss(weight=class_weight)
        optimizer = torch.optim.AdamW(net.parameters(), lr=p.learning_rate, weight_decay=p.weight_decay)
        x_num, x_cat = _tensors(m_train)
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
                    loss = loss_fn(net(x_num[idx], x_cat[idx]), y_train[idx])
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(idx)
                    bar.update()
                history.append({"epoch": epoch + 1, "train_loss": total / len(perm)})
                bar.set_postfix(loss=f"{total / len(perm):.4f}")
        net.eval()

        val_scores = _positive_score(ScoringModel(net, 0.5), m_val)
        threshold = choose_threshold(_labels(val_df, spec) == len(spec.classes) - 1, val_scores)
        state.threshold = threshold
        model = ScoringModel(net, threshold).eval()
        hold_scores = _positive_score(model, m_hold)
        metrics = {
            "holdout": classification_metrics(_labels(hold_df, spec) == len(spec.classes) - 1, hold_scores, threshold),
            "validation": classification_metrics(_labels(val_df, spec) == len(spec.classes) - 1, val_scores, threshold),
            "history": history,
            "rows": {"train": len(train_df), "validation": len(val_df), "holdout": len(hold_df)},
        }

        save_checkpoint(tmp_dir / "checkpoint.pt", net, threshold, spec.name)
        state.save(tmp_dir / "feature_state.json")
        write_spec(spec, tmp_dir / SPEC_FILE)
        atomic_write_json(tmp_dir / "metrics.json", metrics)
        # drift baseline: features over every split (the whole period, so weekly cycles are complete), scores
        # out of sample (validation + holdout), where the model is as confident as it will be in production
        everything = FeatureMatrix(
            numeric=np.concatenate([m_train.numeric, m_val.numeric, m_hold.numeric]),
            categorical=np.concatenate([m_train.categorical, m_val.categorical, m_hold.categorical]),
        )
        profile = reference_profile(everything, state, np.concatenate([val_scores, hold_scores]))
        atomic_write_json(tmp_dir / "reference_profile.json", profile)
        atomic_write_parquet(tmp_dir / "holdout.parquet", hold_df)
        seconds = time.perf_counter() - started
        atomic_write_json(
            tmp_dir / "run.json",
            {
                "run_id": run_id,
                "pipeline": spec.name,
                "schema_version": spec.version,
                "feature_hash": spec.feature_hash(),
                "seed": seed,
                "epochs": n_epochs,
                "data": data_report.as_dict(),
                "data_fingerprint": data_report.fingerprint,
                "architecture": arch.as_dict(),
                "torch": torch.__version__,
                "seconds": round(seconds, 3),
                "created_at": datetime.now(UTC).isoformat(),
            },
        )
        run_dir = runs_dir / run_id
        tmp_dir.rename(run_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    atomic_write_bytes(runs_dir / "LATEST", (run_id + "\n").encode())
    return RunResult(run_dir=run_dir, metrics=metrics, seconds=seconds)


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
    return FeatureState.load(Path(run_dir) / "feature_state.json")
