"""Label-free performance estimates for a classifier, in the manner of NannyML's CBPE (confidence-based
performance estimation): when labels arrive late or never, a *calibrated* score says how often each prediction is
right, so the expected confusion matrix, precision, recall and ROC AUC follow from the scores alone.

With calibrated probabilities ``p_i = P(y_i = 1 | x_i)`` and predictions ``yhat_i`` (the model's decisions, or
``[p_i >= threshold]``):

* expected TP = sum of ``p_i`` over ``yhat_i = 1``, FP = sum of ``1 - p_i`` there; FN = sum of ``p_i`` over
  ``yhat_i = 0``, TN = sum of ``1 - p_i`` there (each row is a positive with probability ``p_i``);
* precision and recall are the ratios of those expectations (CBPE's estimate, not the expectation of the ratio);
* ROC AUC: rows sorted by score, the expected true and false positive rates at every cut are the running sums of
  ``p`` and ``1 - p`` over their totals, and the area under that curve is the estimate.

More than two classes: one-vs-rest macro averages. Class ``k``'s score is its probability ``p_ik``, its predicted
positives the rows predicted as ``k``; the three figures are computed per class as above and averaged over the
classes where they are defined (the cheap generalization: no extra pass beyond one per class, and the same
formulas, so the same calibration assumption, class by class).

It is only as good as the calibration: :func:`calibration_error` (expected calibration error over equal-mass bins;
:func:`classwise_calibration_error` for a probability matrix) is what a training run checks before it trusts the
estimate, against :func:`calibration_noise`, the error that perfectly calibrated scores of the same size show by
chance (``inferline.training.calibration``). It also assumes no *concept* shift: the scores must still be right
about ``P(y | x)`` on the window, which a covariate shift (other rows, the same world) keeps and a changed
relation between features and label does not.

The monitor (``Monitor.performance_estimate``) runs :func:`estimated_performance` over the drift window of the
release now served and :func:`realized_performance` over the labels joined so far (at least
:data:`MIN_REALIZED_ROWS`, both classes of a binary task present).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from inferline.core.calibration import as_probabilities, as_scores

__all__ = [
    "FIGURES",
    "MIN_REALIZED_ROWS",
    "PerformanceEstimate",
    "estimate_binary",
    "estimated_performance",
    "realized_binary",
    "realized_enough",
    "realized_performance",
    "window_performance",
]

FIGURES = ("roc_auc", "precision", "recall")  # what the estimate and the realized figures report, in this order
MIN_REALIZED_ROWS = 50  # joined labels below which realized figures are not reported (too noisy to compare)


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


def _decisions(p: npt.NDArray[np.float64], threshold: float, predicted: npt.ArrayLike | None) -> npt.NDArray[np.bool_]:
    """The rows predicted positive: ``predicted`` (the model's own decisions, one per score) when given, else
    ``score >= threshold``."""
    if predicted is None:
        return np.asarray(p >= threshold)
    decided = np.asarray(predicted).ravel().astype(bool)
    if decided.size != p.size:
        raise ValueError(f"{p.size} scores but {decided.size} predictions")
    return decided


def estimate_binary(
    scores: npt.ArrayLike, threshold: float = 0.5, predicted: npt.ArrayLike | None = None
) -> PerformanceEstimate:
    """The expected confusion matrix, precision, recall and ROC AUC of a window from its positive-class scores;
    the predicted positives are ``predicted`` when given (the model's decisions), else ``score >= threshold``."""
    p = as_scores(scores)
    order = np.argsort(-p, kind="stable")
    ranked = p[order]
    # ties share a cut: the curve moves diagonally across a block of equal scores, as the realized curve does
    cuts = np.flatnonzero(np.diff(ranked) != 0)
    edges = np.concatenate([cuts, [ranked.size - 1]]) if ranked.size else np.array([], dtype=np.int64)
    tpr = np.concatenate([[0.0], np.cumsum(ranked)[edges]]) / max(float(p.sum()), 1e-300)
    fpr = np.concatenate([[0.0], np.cumsum(1.0 - ranked)[edges]]) / max(float((1.0 - p).sum()), 1e-300)
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0)) if ranked.size else float("nan")
    return _figures(_decisions(p, threshold, predicted), p, auc)


def realized_binary(
    scores: npt.ArrayLike, labels: npt.ArrayLike, threshold: float = 0.5, predicted: npt.ArrayLike | None = None
) -> PerformanceEstimate:
    """The same figures from the labels, once they join: what an estimate is compared against."""
    p = as_scores(scores)
    y = np.asarray(labels).ravel().astype(bool)
    if y.size != p.size:
        raise ValueError(f"{p.size} scores but {y.size} labels")
    auc = float("nan")
    if 0 < y.sum() < y.size:
        # Mann-Whitney: the chance that a positive outscores a negative, ties counting half
        ranks = _average_ranks(p)
        n_pos = float(y.sum())
        auc = float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (y.size - n_pos)))
    return _figures(_decisions(p, threshold, predicted), y.astype(np.float64), auc)


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


def _macro(per_class: list[PerformanceEstimate]) -> dict[str, float]:
    """The figures of one class (binary) or their macro average over the classes where each is defined."""
    out = {}
    for name in FIGURES:
        values = np.array([getattr(e, name) for e in per_class], dtype=np.float64)
        out[name] = float(np.mean(values[~np.isnan(values)])) if (~np.isnan(values)).any() else float("nan")
    return out


def _classes(probabilities: npt.ArrayLike, predicted: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], np.ndarray]:
    p = as_probabilities(probabilities)
    decided = np.asarray(predicted).ravel().astype(np.int64)
    if decided.size != p.shape[0]:
        raise ValueError(f"{p.shape[0]} rows of probabilities but {decided.size} predicted classes")
    return p, decided


def estimated_performance(probabilities: npt.ArrayLike, predicted: npt.ArrayLike) -> dict[str, float]:
    """CBPE's ROC AUC, precision and recall of a window from its probabilities [n, classes] and the predicted
    class of each row: of class index 1 for two classes, one-vs-rest macro averages for more. NaN where a figure
    is undefined (no predicted positives: no precision)."""
    p, decided = _classes(probabilities, predicted)
    columns = [1] if p.shape[1] == 2 else range(p.shape[1])
    return _macro([estimate_binary(np.clip(p[:, k], 0.0, 1.0), predicted=decided == k) for k in columns])


def realized_performance(
    probabilities: npt.ArrayLike, predicted: npt.ArrayLike, labels: npt.ArrayLike
) -> dict[str, float]:
    """The same figures from the labels (class indices, one per row): what :func:`estimated_performance` is
    compared against."""
    p, decided = _classes(probabilities, predicted)
    y = np.asarray(labels).ravel().astype(np.int64)
    columns = [1] if p.shape[1] == 2 else range(p.shape[1])
    return _macro([realized_binary(np.clip(p[:, k], 0.0, 1.0), y == k, predicted=decided == k) for k in columns])


def realized_enough(labels: npt.ArrayLike, classes: int) -> bool:
    """Whether joined labels can give realized figures worth comparing: at least :data:`MIN_REALIZED_ROWS` rows, and
    both classes present for a binary task (at least two classes for more)."""
    y = np.asarray(labels).ravel().astype(np.int64)
    present = np.unique(y).size
    return y.size >= MIN_REALIZED_ROWS and (present == 2 if classes == 2 else present >= 2)


def window_performance(
    probabilities: npt.ArrayLike, predicted: npt.ArrayLike, labels: npt.ArrayLike | None = None
) -> dict[str, Any]:
    """A window's estimate and, when ``labels`` (one class index per row) are given and :func:`realized_enough`, its
    realized figures: ``{"rows": n, "estimated": {"roc_auc", "precision", "recall"} or None (no rows),
    "realized": {...} or None, "realized_rows": m}``."""
    p, decided = _classes(probabilities, predicted)
    realized = None
    realized_rows = 0
    if labels is not None:
        y = np.asarray(labels).ravel().astype(np.int64)
        realized_rows = int(y.size)
        if realized_enough(y, p.shape[1]):
            realized = realized_performance(p, decided, y)
    return {
        "rows": int(p.shape[0]),
        "estimated": estimated_performance(p, decided) if p.shape[0] else None,
        "realized": realized,
        "realized_rows": realized_rows,
    }
