"""Label-free performance estimates for a binary classifier, in the manner of NannyML's CBPE (confidence-based
performance estimation): when labels arrive late or never, a *calibrated* score says how often each prediction is
right, so the expected confusion matrix, precision, recall and ROC AUC follow from the scores alone.

With calibrated probabilities ``p_i = P(y_i = 1 | x_i)`` and predictions ``yhat_i = [p_i >= threshold]``:

* expected TP = sum of ``p_i`` over ``yhat_i = 1``, FP = sum of ``1 - p_i`` there; FN = sum of ``p_i`` over
  ``yhat_i = 0``, TN = sum of ``1 - p_i`` there (each row is a positive with probability ``p_i``);
* precision and recall are the ratios of those expectations (CBPE's estimate, not the expectation of the ratio);
* ROC AUC: rows sorted by score, the expected true and false positive rates at every cut are the running sums of
  ``p`` and ``1 - p`` over their totals, and the area under that curve is the estimate.

It is only as good as the calibration: :func:`calibration_error` (expected calibration error over equal-mass bins)
is what a training run checks before it trusts the estimate. Not wired into the monitor service yet (issue 18).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["PerformanceEstimate", "calibration_error", "estimate_binary", "realized_binary"]


@dataclass(frozen=True)
class PerformanceEstimate:
    rows: int
    tp: float
    fp: float
    fn: float
    tn: float
    precision: float
    recall: float
    roc_auc: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def _scores(scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
    p = np.asarray(scores, dtype=np.float64).ravel()
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("scores must be probabilities in [0, 1] (the positive class's), without NaN")
    return p


def estimate_binary(scores: npt.ArrayLike, threshold: float = 0.5) -> PerformanceEstimate:
    """The expected confusion matrix, precision, recall and ROC AUC of a window from its positive-class scores."""
    p = _scores(scores)
    order = np.argsort(-p, kind="stable")
    ranked = p[order]
    # ties share a cut: the curve moves diagonally across a block of equal scores, as the realized curve does
    cuts = np.flatnonzero(np.diff(ranked) != 0)
    edges = np.concatenate([cuts, [ranked.size - 1]]) if ranked.size else np.array([], dtype=np.int64)
    tpr = np.concatenate([[0.0], np.cumsum(ranked)[edges]]) / max(float(p.sum()), 1e-300)
    fpr = np.concatenate([[0.0], np.cumsum(1.0 - ranked)[edges]]) / max(float((1.0 - p).sum()), 1e-300)
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0)) if ranked.size else float("nan")
    return _figures(p >= threshold, p, auc)


def realized_binary(scores: npt.ArrayLike, labels: npt.ArrayLike, threshold: float = 0.5) -> PerformanceEstimate:
    """The same figures from the labels, once they join: what an estimate is compared against."""
    p = _scores(scores)
    y = np.asarray(labels).ravel().astype(bool)
    if y.size != p.size:
        raise ValueError(f"{p.size} scores but {y.size} labels")
    auc = float("nan")
    if 0 < y.sum() < y.size:
        # Mann-Whitney: the chance that a positive outscores a negative, ties counting half
        ranks = _average_ranks(p)
        n_pos = float(y.sum())
        auc = float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (y.size - n_pos)))
    return _figures(p >= threshold, y.astype(np.float64), auc)


def _figures(predicted: npt.NDArray[np.bool_], positive: npt.NDArray[np.float64], auc: float) -> PerformanceEstimate:
    """The confusion matrix, precision and recall when row ``i`` is a positive with weight ``positive[i]``: its
    label (0 or 1) once labels join, its calibrated score for the estimate."""
    tp, fp = float(positive[predicted].sum()), float((1.0 - positive[predicted]).sum())
    fn, tn = float(positive[~predicted].sum()), float((1.0 - positive[~predicted]).sum())
    return PerformanceEstimate(
        rows=int(predicted.size),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        roc_auc=auc,
    )


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(1, values.size + 1, dtype=np.float64)
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks, minlength=unique.size)
    return np.asarray((sums / counts)[inverse], dtype=np.float64)


def calibration_error(scores: npt.ArrayLike, labels: npt.ArrayLike, bins: int = 15) -> float:
    """Expected calibration error: over ``bins`` equal-mass bins of the scores, the row-weighted mean of
    ``|mean score - positive share|``. Near 0 for calibrated scores; the estimates above assume it is small."""
    p = _scores(scores)
    y = np.asarray(labels).ravel().astype(np.float64)
    if y.size != p.size or p.size == 0:
        raise ValueError(f"need as many labels as scores, got {p.size} scores and {y.size} labels")
    order = np.argsort(p, kind="stable")
    total = 0.0
    for part in np.array_split(order, min(bins, p.size)):
        total += part.size * abs(float(p[part].mean()) - float(y[part].mean()))
    return total / p.size
