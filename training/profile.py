"""Reference profile: distributions of every feature and of the predictions at training time (the drift baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np

from features.state import FeatureMatrix, FeatureState

__all__ = ["reference_profile"]


def _numeric_profile(values: np.ndarray, bins: int = 20) -> dict[str, Any]:
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    counts, _ = np.histogram(values, bins=edges)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "quantiles": {str(q): float(np.quantile(values, q)) for q in (0.01, 0.05, 0.5, 0.95, 0.99)},
        "bin_edges": [float(e) for e in edges],
        "bin_counts": [int(c) for c in counts],
    }


def reference_profile(features: FeatureMatrix, state: FeatureState, scores: np.ndarray) -> dict[str, Any]:
    numeric = np.asarray(features.numeric)
    categorical = np.asarray(features.categorical)
    profile: dict[str, Any] = {"rows": len(features), "numeric": {}, "categorical": {}}
    for i, name in enumerate(state.numeric):
        profile["numeric"][name] = _numeric_profile(numeric[:, i])
    for j, name in enumerate(state.categorical):
        counts = np.bincount(categorical[:, j], minlength=len(state.vocabularies[name]) + 1)
        labels = ["<unknown>"] + state.vocabularies[name]
        profile["categorical"][name] = {label: int(c) for label, c in zip(labels, counts, strict=True)}
    profile["prediction"] = _numeric_profile(scores)
    profile["prediction"]["positive_share_at_threshold"] = float((scores >= state.threshold).mean())
    return profile
