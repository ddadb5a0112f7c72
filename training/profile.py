"""Reference profile: distributions of every tabular feature and of the model's outputs at training time (the
drift baseline).

Built by training (features over every split, outputs out of sample) or by ``export.publish`` for a model published
without training, with the monitor's own reference types, so the binning the monitor compares against is defined
in one place (``monitor.drift``):

- numeric features and numeric outputs: quantile bin edges with counts, plus a uniform sample of at most
  ``sample_size`` values for the Kolmogorov-Smirnov test;
- categorical features: counts per vocabulary label, with ``<unknown>`` for values outside the vocabulary, over
  the rows the vocabulary was *not* fitted on (``fitted_rows``). The vocabulary keeps the values frequent in its
  own rows, so over those rows ``<unknown>`` is rarer, and the kept values near the cut more frequent, than in any
  other sample (Zipf 5,000 categories, 20,000 rows, ``max_vocab`` 1,000: ``<unknown>`` 20.5 % over the fitted rows,
  23.0 % in serving), which flagged up to 31 % of undrifted windows; held-out rows are an unbiased sample.

Tensor columns (images, token ids) have no reference: feature drift covers the tabular features only.

Format (``version`` 3), keyed as the monitor reads it:

- ``rows``, ``task``, ``numeric`` ({feature: NumericReference}), ``categorical`` ({feature: CategoricalReference}),
  ``categorical_rows`` (the rows those count: the rows the vocabulary was not fitted on, or every row);
- classification: ``probabilities``, one NumericReference per class in class-index order (the monitor names the
  test of class ``k`` ``probability_<classes[k]>`` from the release's spec), and ``predicted_class``, a
  CategoricalReference over the class indices as text (``"0"``, ``"1"``, ...), the predicted class being what the
  served head answers: the decision threshold on the last class's probability for a binary task
  (``p[:, 1] >= threshold`` in float32), the argmax for more classes;
- ``prediction``: the regression's predicted values; for a classifier the last class's probability, the field
  version 2 had (kept for readers of version 2);
- binary only: ``positive_share_at_threshold``;
- ``missing`` (when training passed its raw rows): ``{column: {"rows", "nulls"}}`` for every raw tabular input
  column but the id (:func:`null_counts`), the baseline of the monitor's per-column missingness tests.

Profiles are mergeable (counts add, samples are re-drawn by weight), and each release carries its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from inferline.core.reference import CategoricalReference, NumericReference
from inferline.features.spec import Column, PipelineSpec
from inferline.features.state import FeatureMatrix, FeatureState

__all__ = ["PROFILE_VERSION", "TASKS", "missing_columns", "null_counts", "predicted_classes", "reference_profile"]

PROFILE_VERSION = 3
TASKS = ("binary", "multiclass", "regression")
OUTPUT_SAMPLE_BUDGET = 100_000
"""Sampled values kept over all class probabilities together: with many classes each class keeps fewer (but at
least 1,000), so a profile stays small."""


def missing_columns(spec: PipelineSpec) -> tuple[Column, ...]:
    """The raw columns whose missingness is profiled and watched: every tabular input column but the id."""
    return tuple(c for c in spec.input_columns if c.kind not in ("tensor", "id"))


def null_counts(frame: pd.DataFrame, spec: PipelineSpec) -> dict[str, dict[str, int]]:
    """``{column: {"rows", "nulls"}}`` over the raw rows of ``frame``: NaN/None/NaT, and empty text (a null on the
    wire: ``features.wire``)."""
    out = {}
    for c in missing_columns(spec):
        values = frame[c.name]
        null = values.isna()
        if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
            null |= values.astype(object).map(lambda v: isinstance(v, str | bytes) and len(v) == 0).astype(bool)
        out[c.name] = {"rows": len(frame), "nulls": int(null.sum())}
    return out


def predicted_classes(probabilities: np.ndarray, task: str, threshold: float) -> np.ndarray:
    """The class index the served head answers for each row of ``probabilities`` [n, classes]: the threshold on
    the last class's probability for a binary task (compared in float32, as the head does), else the argmax."""
    p = np.asarray(probabilities, dtype=np.float32)
    if task == "binary":
        return (p[:, -1] >= np.float32(threshold)).astype(np.int64)
    return np.argmax(p, axis=1).astype(np.int64)


def reference_profile(
    features: FeatureMatrix,
    state: FeatureState,
    predictions: np.ndarray,
    task: str = "binary",
    sample_size: int = 5_000,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    missing: dict[str, dict[str, int]] | None = None,
    fitted_rows: int | None = None,
) -> dict[str, Any]:
    """The drift baseline of ``features`` (numeric and categorical; tensor inputs are not profiled) and the model's
    ``predictions``: class probabilities [n, classes] for a classifier (a binary task may pass the last class's
    score [n]), values [n] or [n, 1] for regression. ``classes``, when given, is checked against the width.
    ``missing``: the raw rows' null counts per column (:func:`null_counts`).

    ``fitted_rows``: the first ``fitted_rows`` rows of ``features`` are those ``state``'s vocabularies were fitted
    on; categorical references count the other rows only (all rows when there are no others). ``None`` (the
    default) takes the rows without a prediction: training passes every split's features, the training rows
    first, and the outputs of the out-of-sample rows only, so ``len(features) - len(predictions)`` are the fitted
    rows; a profile of equally many features and outputs (``export.publish``) counts every row."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    predictions = np.asarray(predictions, dtype=np.float64)
    numeric = np.asarray(features.numeric)
    categorical = np.asarray(features.categorical)
    if fitted_rows is None:
        fitted_rows = max(len(features) - len(predictions), 0)
    if not 0 <= fitted_rows <= len(features):
        raise ValueError(f"fitted_rows must be in [0, {len(features)}] (the rows of features), got {fitted_rows}")
    held_out = categorical[fitted_rows:] if fitted_rows < len(features) else categorical
    profile: dict[str, Any] = {
        "version": PROFILE_VERSION,
        "rows": len(features),
        "task": task,
        "numeric": {
            name: NumericReference.from_values(numeric[:, i], sample_size=sample_size, seed=seed + i).as_dict()
            for i, name in enumerate(state.numeric)
        },
        "categorical_rows": len(held_out),
        "categorical": {
            name: CategoricalReference.from_values(state.category_labels(name, held_out[:, j])).as_dict()
            for j, name in enumerate(state.categorical)
        },
    }
    if missing is not None:
        profile["missing"] = missing
    if task == "regression":
        if predictions.ndim == 2 and predictions.shape[1] != 1:
            raise ValueError(f"regression predictions must be [n] or [n, 1], got shape {predictions.shape}")
        values = predictions.reshape(-1)
        profile["prediction"] = NumericReference.from_values(values, sample_size=sample_size, seed=seed).as_dict()
        return profile
    if predictions.ndim == 1:  # a binary task's last-class score alone
        if task != "binary":
            raise ValueError(f"a {task} profile needs probabilities [n, classes], got one score per row")
        predictions = np.stack([1.0 - predictions, predictions], axis=1)
    width = predictions.shape[1]
    if classes is not None and len(classes) != width:
        raise ValueError(f"predictions hold {width} probabilities per row, but the pipeline has classes {classes}")
    if (task == "binary") != (width == 2):
        raise ValueError(f"a {task} profile got {width} probabilities per row")
    per_class = min(sample_size, max(1_000, OUTPUT_SAMPLE_BUDGET // width))
    probabilities = [
        NumericReference.from_values(predictions[:, k], sample_size=per_class, seed=seed + k).as_dict()
        for k in range(width)
    ]
    predicted = predicted_classes(predictions, task, state.threshold)
    profile["probabilities"] = probabilities
    profile["predicted_class"] = CategoricalReference.from_values(predicted.astype(str)).as_dict()
    profile["prediction"] = probabilities[-1]
    if task == "binary":
        profile["positive_share_at_threshold"] = float(predicted.mean()) if len(predicted) else 0.0
    return profile
