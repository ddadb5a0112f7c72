"""Calibration at training time (issue 18): the monitor's label-free estimates (``monitor.performance``, CBPE) read
a classifier's probabilities as the chance that each answer is right, so a release must ship calibrated ones.

The protocol, for every classifier a training run fits (``train(..., calibration="auto")``, the default):

1. Measure the holdout's calibration error ``raw_error``
   (:func:`~inferline.monitor.performance.classwise_calibration_error`:
   expected calibration error over 15 equal-mass bins of the positive class's score; the mean over the classes
   one-vs-rest for more than two).
2. The tolerance: ``max(ERROR_FLOOR, noise)``, where ``noise`` is the 99th percentile of the error that perfectly
   calibrated scores of the same holdout show by chance (labels drawn from the scores themselves, 200 draws:
   :func:`~inferline.monitor.performance.calibration_noise`). A small holdout is not refused for its noise, and
   no error below ``ERROR_FLOOR`` (0.01) counts as poor.
3. Within the tolerance: the model ships as trained. Above it: fit :class:`~inferline.training.model.Calibration`
   (vector scaling: one temperature and one offset per class, Platt scaling for two classes; Guo et al. 2017) on
   the validation split by unweighted log loss. The class weights of training skew the scores towards the rare
   classes, and this undoes exactly that kind of skew without changing any class's ranking.
4. Measure the recalibrated holdout ``error`` against a tolerance that allows for both samples: ``max(ERROR_FLOOR,
   noise on the holdout + noise on the validation split)``, each computed as in step 2 from the recalibrated
   scores (the calibration is fitted on a sample, then measured on another). Still above it: the run is refused
   with :class:`PoorlyCalibrated`, saying what was measured and how to fix it.

``calibration="off"`` measures and records, never recalibrates and never refuses. What was measured is recorded
either way (:func:`calibrate`'s record): in ``metrics.json`` (``calibration``, and ``holdout.calibration_error``)
and in the release's ``reference_profile.json`` (``calibration``), where the monitor reads it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from inferline.core.calibration import calibration_noise, classwise_calibration_error
from inferline.core.errors import UserError
from inferline.training.model import Calibration

__all__ = ["BINS", "ERROR_FLOOR", "MODES", "PoorlyCalibrated", "calibrate", "fit_vector_scaling", "logits_of"]

MODES = ("auto", "off")
BINS = 15
ERROR_FLOOR = 0.01  # calibration errors below this are never poor, whatever the holdout's size


class PoorlyCalibrated(UserError, ValueError):
    """A classifier whose probabilities stay miscalibrated on the holdout after recalibration. ``reason``: what a
    refused training run's alert says (``features.dataset.refusal_reason``)."""

    docs = "reference/cli.md#inferline-train"  # the --calibration option: what it is for, auto and off

    reason = "poorly_calibrated"


@torch.no_grad()
def logits_of(net: nn.Module, inputs: list[torch.Tensor], batch_size: int = 4096) -> np.ndarray:
    """The network's raw logits [n, classes] over every row, in batches, as float64."""
    n = int(inputs[0].shape[0]) if inputs else 0
    chunks = [net(*(t[s : s + batch_size] for t in inputs)).to(torch.float64) for s in range(0, n, batch_size)]
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, 0))


def _softmax(logits: np.ndarray, calibration: Calibration | None = None) -> np.ndarray:
    z = logits if calibration is None else logits * calibration.scale + np.asarray(calibration.bias)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def fit_vector_scaling(logits: np.ndarray, labels: np.ndarray, steps: int = 100) -> Calibration:
    """The :class:`Calibration` that minimizes the log loss of ``softmax(scale * logits + bias)`` against ``labels``
    (class indices): ``scale = exp(s)`` (positive), ``bias[0] = 0``, fitted with L-BFGS in float64."""
    z = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    offsets = torch.zeros(z.shape[1] - 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_scale, offsets], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        bias = torch.cat([torch.zeros(1, dtype=torch.float64), offsets])
        loss = nn.functional.cross_entropy(z * log_scale.exp() + bias, y)
        loss.backward()
        return loss

    optimizer.step(closure)
    scale = float(log_scale.detach().exp())
    return Calibration(scale=scale, bias=(0.0, *(float(b) for b in offsets.detach())))


def _noise(probabilities: np.ndarray) -> float:
    return calibration_noise(probabilities, bins=BINS)


def calibrate(
    net: nn.Module,
    validation: tuple[list[torch.Tensor], np.ndarray],
    holdout: tuple[list[torch.Tensor], np.ndarray],
    pipeline: str,
    mode: str = "auto",
) -> tuple[Calibration | None, dict[str, Any]]:
    """Steps 1-4 of the module docstring for a trained classifier ``net`` (in eval mode): ``validation`` and
    ``holdout`` are (model inputs, class indices). Returns the calibration to ship (None: none needed, or mode
    ``off``) and the record of what was measured."""
    if mode not in MODES:
        raise UserError(f"calibration mode {mode!r}; expected one of {MODES}")
    hold_logits = logits_of(net, holdout[0])
    raw = _softmax(hold_logits)
    raw_error = classwise_calibration_error(raw, holdout[1], BINS)
    raw_tolerance = max(ERROR_FLOOR, _noise(raw))
    record: dict[str, Any] = {
        "metric": f"expected calibration error, {BINS} equal-mass bins"
        + (" (positive class)" if raw.shape[1] == 2 else " (mean over classes, one-vs-rest)"),
        "mode": mode,
        "raw_error": raw_error,
        "raw_tolerance": raw_tolerance,
        "error": raw_error,
        "tolerance": raw_tolerance,
        "recalibrated": False,
        "method": None,
        "calibration": None,
        "holdout_rows": len(holdout[1]),
    }
    if mode == "off" or raw_error <= raw_tolerance:
        return None, record
    val_logits = logits_of(net, validation[0])
    calibration = fit_vector_scaling(val_logits, validation[1])
    fixed = _softmax(hold_logits, calibration)
    error = classwise_calibration_error(fixed, holdout[1], BINS)
    tolerance = max(ERROR_FLOOR, _noise(fixed) + _noise(_softmax(val_logits, calibration)))
    record.update(
        error=error,
        tolerance=tolerance,
        recalibrated=True,
        method="vector scaling (temperature and per-class offset) fitted on the validation split",
        calibration=calibration.as_dict(),
        validation_rows=len(validation[1]),
    )
    if error > tolerance:
        raise PoorlyCalibrated(
            f"the probabilities of {pipeline!r} are miscalibrated on its holdout ({len(holdout[1])} rows): "
            f"calibration error {raw_error:.4f} as trained, {error:.4f} after vector scaling fitted on "
            f"{len(validation[1])} validation rows, above the tolerance {tolerance:.4f} (the larger of "
            f"{ERROR_FLOOR} and what calibrated scores of these sizes show by chance). The monitor's label-free "
            "estimates would be wrong by about that much. Fix: more training data (a larger validation split to "
            "fit the calibration on), a validation period like the holdout's (--split), fewer epochs if the model "
            "overfits; or train with --calibration off to ship it as it is (the estimates are then unreliable)"
        )
    return calibration, record
