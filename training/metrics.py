"""Binary classification metrics in numpy (no extra dependency): ROC AUC, PR AUC, precision/recall at a threshold."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = ["choose_threshold", "classification_metrics", "pr_auc", "roc_auc"]


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg), ties counted half."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pr_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision: sum over positives of precision at that positive's rank (step interpolation)."""
    y = np.asarray(y).astype(bool)
    if not y.any():
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    hits = y[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def _precision_recall(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    tp = int((pred & y).sum())
    precision = tp / int(pred.sum()) if pred.any() else 0.0
    recall = tp / int(y.sum()) if y.any() else 0.0
    return precision, recall


def choose_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold with the best F1 on (validation) data; candidates are the observed scores."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-score, kind="mergesort")
    s, hits = score[order], y[order]
    tp = np.cumsum(hits)
    k = np.arange(1, len(s) + 1)
    f1 = 2 * tp / (k + y.sum())
    # only cut between distinct scores
    valid = np.append(s[1:] != s[:-1], True)
    best = int(np.argmax(np.where(valid, f1, -1)))
    return float(s[best])


def classification_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    y = np.asarray(y).astype(bool)
    precision, recall = _precision_recall(y, score >= threshold)
    return {
        "roc_auc": roc_auc(y, score),
        "pr_auc": pr_auc(y, score),
        "precision": precision,
        "recall": recall,
        "threshold": float(threshold),
        "positive_rate": float(y.mean()),
        "rows": len(y),
    }
