"""Fitted feature state: what training learns about the features, loaded by every stage with its release.

``FeatureState`` (vocabularies, standardization statistics, decision threshold) is an artifact of training. The
Triton preprocess model, the batch job and export's parity gate all load it from the same release file, so
features and model are versioned, promoted and rolled back together.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferline.core.files import atomic_write_json
from inferline.features.spec import PipelineSpec

__all__ = ["STATE_FILE", "FeatureMatrix", "FeatureState", "StateMismatch", "compute_features", "fit_state"]

STATE_FILE = "feature_state.json"  # the fitted state a training run and a release carry, beside the spec snapshot


UNKNOWN_LABEL = "<unknown>"


class StateMismatch(ValueError):
    """A fitted state does not belong to the pipeline spec it is used with."""


@dataclass
class FeatureState:
    pipeline: str
    feature_hash: str
    numeric: list[str]
    categorical: list[str]
    vocabularies: dict[str, list[str]]
    mean: list[float]
    std: list[float]
    threshold: float = 0.5
    extra: dict[str, Any] = field(default_factory=dict)

    def cardinalities(self) -> list[int]:
        """Embedding sizes: vocabulary length + 1 for the unknown bucket."""
        return [len(self.vocabularies[name]) + 1 for name in self.categorical]

    def category_labels(self, name: str, codes: Any) -> np.ndarray:
        """Codes of categorical feature ``name`` -> the vocabulary labels, ``<unknown>`` for code 0 (the bucket of
        values outside the vocabulary): the form in which categorical drift is measured."""
        labels = np.array([UNKNOWN_LABEL, *self.vocabularies[name]], dtype=object)
        return labels[np.asarray(codes, dtype=np.int64)]

    def check(self, spec: PipelineSpec) -> None:
        if self.pipeline != spec.name or self.feature_hash != spec.feature_hash():
            raise StateMismatch(
                f"feature state was fitted for pipeline {self.pipeline!r} with feature hash {self.feature_hash[:12]}, "
                f"but the spec in use is {spec.name!r} with hash {spec.feature_hash()[:12]}; the columns, rules or "
                "features changed since training: retrain and republish, or serve the release that matches this code"
            )

    def save(self, path: Path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path | str) -> FeatureState:
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class FeatureMatrix:
    numeric: Any  # float32 [n, n_numeric]  (numpy or cupy)
    categorical: Any  # int64 [n, n_categorical]
    tensors: dict[str, Any] = field(default_factory=dict)  # tensor column -> model input [n, *shape]

    def take(self, index: Any) -> FeatureMatrix:
        """The rows ``index`` (an integer array or a slice) of every input."""
        return FeatureMatrix(
            self.numeric[index], self.categorical[index], {k: v[index] for k, v in self.tensors.items()}
        )

    @staticmethod
    def concat(parts: list[FeatureMatrix]) -> FeatureMatrix:
        return FeatureMatrix(
            np.concatenate([p.numeric for p in parts]),
            np.concatenate([p.categorical for p in parts]),
            {k: np.concatenate([p.tensors[k] for p in parts]) for k in (parts[0].tensors if parts else {})},
        )

    def __len__(self) -> int:
        return int(self.numeric.shape[0])


def fit_state(frame: pd.DataFrame, spec: PipelineSpec, threshold: float = 0.5) -> FeatureState:
    """Fit vocabularies (most frequent values, ties by value) and standardization statistics on training rows."""
    from inferline.features.contract import compile_contract

    vocabularies: dict[str, list[str]] = {}
    for f in spec.categorical_features:
        counts = frame[f.source].dropna().value_counts()
        counts = counts[counts >= 5]
        ordered = sorted(counts.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
        vocabularies[f.name] = [str(v) for v, _ in ordered[: spec.model.max_vocab]]
    raw = compile_contract(spec).raw_numeric(frame)
    raw = raw.get() if hasattr(raw, "get") else np.asarray(raw)
    scaled = np.array([f.scale == "standard" for f in spec.numeric_features], dtype=bool)
    mean = np.where(scaled, raw.mean(axis=0) if len(raw) else 0.0, 0.0)  # scale="none": the kernel's value as is
    std = np.where(scaled, np.maximum(raw.std(axis=0) if len(raw) else 1.0, 1e-6), 1.0)
    return FeatureState(
        pipeline=spec.name,
        feature_hash=spec.feature_hash(),
        numeric=[f.name for f in spec.numeric_features],
        categorical=[f.name for f in spec.categorical_features],
        vocabularies=vocabularies,
        mean=[float(x) for x in mean],
        std=[float(x) for x in std],
        threshold=threshold,
    )


def compute_features(frame: Any, spec: PipelineSpec, state: FeatureState) -> FeatureMatrix:
    """Raw columns (a pandas or cuDF frame, or canonical arrays) -> model inputs, on the frame's own backend.
    Compiles the contract for this call; a caller that featurizes repeatedly holds a compiled ``Contract``."""
    from inferline.features.contract import compile_contract

    return compile_contract(spec, state).features(frame)
