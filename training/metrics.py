"""Training metrics in numpy (no extra dependency), per task: binary (ROC AUC, PR AUC, precision/recall at the
threshold), multi-class (accuracy, per-class precision and recall, macro F1, the confusion matrix) and regression
(MAE, RMSE, R²)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "choose_threshold",
    "classification_metrics",
    "multiclass_metrics",
    "pr_auc",
    "regression_metrics",
    "roc_auc",
    "task_metrics",
]


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


def multiclass_metrics(y: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy, per-class precision and recall, macro F1 and the confusion matrix (rows: true class, columns:
    predicted class) of ``predicted`` class indices against ``y``."""
    y, predicted = np.asarray(y, dtype=np.int64), np.asarray(predicted, dtype=np.int64).reshape(-1)
    k = len(classes)
    confusion = np.bincount(y * k + predicted, minlength=k * k).reshape(k, k)
    tp = np.diag(confusion).astype(float)
    predicted_n, true_n = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted_n, out=np.zeros(k), where=predicted_n > 0)
    recall = np.divide(tp, true_n, out=np.zeros(k), where=true_n > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    return {
        "accuracy": float(tp.sum() / max(len(y), 1)),
        "macro_f1": float(f1.mean()),
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "rows": int(true_n[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion.tolist(),
        "rows": len(y),
    }


def regression_metrics(y: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE and R² (1 - residual / total sum of squares; NaN when the target is constant)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(prediction, dtype=np.float64).reshape(-1)
    err = p - y
    total = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    return {
        "mae": float(np.abs(err).mean()) if len(y) else float("nan"),
        "rmse": float(np.sqrt((err**2).mean())) if len(y) else float("nan"),
        "r2": 1.0 - float((err**2).sum()) / total if total > 0 else float("nan"),
        "target_mean": float(y.mean()) if len(y) else float("nan"),
        "rows": len(y),
    }


def task_metrics(
    task: str, y: np.ndarray, outputs: tuple[np.ndarray, ...], classes: tuple[str, ...], threshold: float
) -> dict[str, Any]:
    """The metrics of ``task`` over the scoring model's ``outputs`` ((probabilities, predicted) or (prediction,))."""
    if task == "regression":
        return regression_metrics(y, outputs[0])
    if task == "binary":
        return classification_metrics(np.asarray(y) == 1, outputs[0][:, 1].astype("float64"), threshold)
    return multiclass_metrics(y, outputs[1], classes)
