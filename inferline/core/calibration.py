"""Calibration of predicted probabilities: shared by the training run (which refuses a poorly calibrated model,
``training.calibration``) and the monitor (whose label-free estimates assume calibration, ``monitor.performance``).

* :func:`calibration_error`: expected calibration error over equal-mass bins;
* :func:`classwise_calibration_error`: the same for a probability matrix (one-vs-rest beyond two classes);
* :func:`calibration_noise`: the error perfectly calibrated scores of the same size show by chance.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["as_probabilities", "as_scores", "calibration_error", "calibration_noise", "classwise_calibration_error"]


def as_scores(scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
    p = np.asarray(scores, dtype=np.float64).ravel()
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError("scores must be probabilities in [0, 1] (the positive class's), without NaN")
    return p


def _equal_mass_bins(p: npt.NDArray[np.float64], bins: int) -> npt.NDArray[np.int64]:
    """The bin of each row: ``bins`` bins of (nearly) equal size over the rows sorted by score."""
    order = np.argsort(p, kind="stable")
    which = np.empty(p.size, dtype=np.int64)
    for b, part in enumerate(np.array_split(order, min(bins, p.size))):
        which[part] = b
    return which


def _ece(p: npt.NDArray[np.float64], y: npt.NDArray[np.float64], which: npt.NDArray[np.int64]) -> float:
    # per bin, |sum of scores - sum of positives| is its row count times |mean score - positive share|
    k = int(which.max()) + 1
    gap = np.bincount(which, weights=p, minlength=k) - np.bincount(which, weights=y, minlength=k)
    return float(np.abs(gap).sum() / p.size)


def calibration_error(scores: npt.ArrayLike, labels: npt.ArrayLike, bins: int = 15) -> float:
    """Expected calibration error: over ``bins`` equal-mass bins of the scores, the row-weighted mean of
    ``|mean score - positive share|``. Near 0 for calibrated scores; the estimates above assume it is small."""
    p = as_scores(scores)
    y = np.asarray(labels).ravel().astype(np.float64)
    if y.size != p.size or p.size == 0:
        raise ValueError(f"need as many labels as scores, got {p.size} scores and {y.size} labels")
    return _ece(p, y, _equal_mass_bins(p, bins))


def as_probabilities(probabilities: npt.ArrayLike) -> npt.NDArray[np.float64]:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be [rows, classes] with at least two classes, got shape {p.shape}")
    return p


def classwise_calibration_error(probabilities: npt.ArrayLike, labels: npt.ArrayLike, bins: int = 15) -> float:
    """:func:`calibration_error` of a probability matrix [n, classes] against class indices: the positive class's
    for two classes (class index 1), the mean over the classes one-vs-rest for more."""
    p = as_probabilities(probabilities)
    y = np.asarray(labels).ravel().astype(np.int64)
    if p.shape[1] == 2:
        return calibration_error(p[:, 1], y == 1, bins)
    return float(np.mean([calibration_error(p[:, k], y == k, bins) for k in range(p.shape[1])]))


def calibration_noise(
    probabilities: npt.ArrayLike, bins: int = 15, draws: int = 200, quantile: float = 0.99, seed: int = 0
) -> float:
    """The ``quantile`` of :func:`classwise_calibration_error` that perfectly calibrated scores show by chance: labels
    drawn from ``probabilities`` themselves ``draws`` times, the error of each draw. A measured error above it is
    miscalibration, not the noise of a small sample."""
    p = as_probabilities(probabilities)
    rng = np.random.default_rng(seed)
    columns = [1] if p.shape[1] == 2 else list(range(p.shape[1]))
    which = {k: _equal_mass_bins(as_scores(p[:, k]), bins) for k in columns}
    cumulative = np.cumsum(p, axis=1)
    errors = []
    for _ in range(draws):
        u = rng.random(p.shape[0]) * cumulative[:, -1]
        y = (u[:, None] >= cumulative).sum(axis=1)  # a class index drawn from each row's probabilities
        errors.append(np.mean([_ece(p[:, k], (y == k).astype(np.float64), which[k]) for k in columns]))
    return float(np.quantile(errors, quantile))
