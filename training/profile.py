"""Reference profile: distributions of every feature and of the predictions at training time (the drift baseline).

Built by training (features over every split, scores out of sample) with the monitor's own reference types, so
the binning the monitor compares against is defined in one place (``monitor.drift``):

- numeric features and the positive-class score: quantile bin edges with counts, plus a uniform sample of at most
  ``sample_size`` values for the Kolmogorov-Smirnov test;
- categorical features: counts per vocabulary label, with ``<unknown>`` for values outside the vocabulary.

Profiles are mergeable (counts add, samples are re-drawn by weight), and each release carries its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferline.features.state import FeatureMatrix, FeatureState
from inferline.monitor.drift import CategoricalReference, NumericReference

__all__ = ["PROFILE_VERSION", "reference_profile"]

PROFILE_VERSION = 2


def reference_profile(
    features: FeatureMatrix,
    state: FeatureState,
    predictions: np.ndarray,
    task: str = "binary",
    sample_size: int = 5_000,
    seed: int = 0,
) -> dict[str, Any]:
    """``predictions``: class probabilities [n, classes] for a classifier (a binary task may pass the positive-class
    score [n]), values [n] for regression."""
    predictions = np.asarray(predictions, dtype=np.float64)
    if task == "regression":
        scores = predictions.reshape(-1)
    elif predictions.ndim == 2:
        scores = predictions[:, -1]
    else:
        scores = predictions
    numeric = np.asarray(features.numeric)
    categorical = np.asarray(features.categorical)
    profile: dict[str, Any] = {
        "version": PROFILE_VERSION,
        "rows": len(features),
        "numeric": {
            name: NumericReference.from_values(numeric[:, i], sample_size=sample_size, seed=seed + i).as_dict()
            for i, name in enumerate(state.numeric)
        },
        "categorical": {
            name: CategoricalReference.from_values(state.category_labels(name, categorical[:, j])).as_dict()
            for j, name in enumerate(state.categorical)
        },
        "prediction": NumericReference.from_values(scores, sample_size=sample_size, seed=seed).as_dict(),
        "task": task,
    }
    if task == "binary":
        profile["positive_share_at_threshold"] = float((scores >= state.threshold).mean()) if len(scores) else 0.0
    return profile
