"""Fitted feature state and the feature transform built on the shared kernels.

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

from inferline.features.artifacts import atomic_write_json
from inferline.features.backend import FrameBackend, backend_for
from inferline.features.kernels import KERNELS
from inferline.features.spec import FeatureDef, PipelineSpec

__all__ = ["FeatureMatrix", "FeatureState", "StateMismatch", "compute_features", "fit_state"]


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

    def __len__(self) -> int:
        return int(self.numeric.shape[0])


def _raw_numeric(frame: Any, defs: tuple[FeatureDef, ...], b: FrameBackend) -> Any:
    cols = [KERNELS[f.kernel](b, frame[f.source], f.params) for f in defs]
    return b.xp.stack(cols, axis=1) if cols else b.xp.zeros((len(frame), 0))


def fit_state(frame: pd.DataFrame, spec: PipelineSpec, threshold: float = 0.5) -> FeatureState:
    """Fit vocabularies (most frequent values, ties by value) and standardization statistics on training rows."""
    b = backend_for(frame)
    vocabularies: dict[str, list[str]] = {}
    for f in spec.categorical_features:
        counts = frame[f.source].dropna().value_counts()
        counts = counts[counts >= 5]
        ordered = sorted(counts.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
        vocabularies[f.name] = [str(v) for v, _ in ordered[: spec.model.max_vocab]]
    raw = b.to_numpy(_raw_numeric(frame, spec.numeric_features, b))
    mean = raw.mean(axis=0)
    std = np.maximum(raw.std(axis=0), 1e-6)
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
    """Raw canonical columns (pandas or cuDF frame) -> model inputs, on the frame's own backend."""
    b = backend_for(frame)
    xp = b.xp
    raw = _raw_numeric(frame, spec.numeric_features, b)
    mean = xp.asarray(state.mean, dtype="float64")
    std = xp.asarray(state.std, dtype="float64")
    numeric = ((raw - mean) / std).astype("float32")
    cats = [
        KERNELS[f.kernel](b, frame[f.source], {**f.params, "vocabulary": state.vocabularies[f.name]})
        for f in spec.categorical_features
    ]
    categorical = xp.stack(cats, axis=1).astype("int64") if cats else xp.zeros((len(frame), 0), dtype="int64")
    return FeatureMatrix(numeric=numeric, categorical=categorical)
