"""What a release answers, as the monitor reads it: the served outputs of each task and the drift tests over them.

The outputs per task are ``features.contract.model_outputs(spec)``:

- classification (binary, multiclass): ``probabilities`` [n, classes] and ``predicted_class`` [n];
- regression: ``prediction`` [n].

Drift tests over them (each of kind ``"prediction"`` in the drift report):

- ``probability_<class>`` for every class (KS on that class's probability; for a binary task the two tests are
  mirror images of each other, since the probabilities add up to 1), and ``predicted_class`` (chi-square on the
  distribution of answered classes, by class name);
- ``prediction`` for regression (KS on the predicted values).

A release published before profiles kept every output (profile ``version`` 2 or older) is tested on its single
``prediction`` reference: the last class's probability of a classifier, the values of a regression.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferline.core.reference import CategoricalReference, NumericReference
from inferline.features.spec import PipelineSpec

__all__ = [
    "PREDICTED_CLASS",
    "PREDICTION",
    "OutputReferences",
    "SamplesError",
    "ServedOutputs",
    "class_names",
    "output_references",
    "parse_outputs",
    "probability_test",
]

PREDICTION = "prediction"
PREDICTED_CLASS = "predicted_class"


class SamplesError(ValueError):
    """A ``POST /v1/samples`` body that does not hold what the release answers (answered 400)."""


def probability_test(class_name: str) -> str:
    """The name of the drift test over one class's probability."""
    return f"probability_{class_name}"


@dataclass(frozen=True)
class ServedOutputs:
    """One payload's outputs, checked: ``values`` float64 [n, k] (the class probabilities, or the regression's
    prediction as k = 1) and ``predicted_class`` int64 [n] (classification; None for regression)."""

    values: np.ndarray
    predicted_class: np.ndarray | None

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class OutputReferences:
    """The reference of every output test of a release: ``numeric`` maps a test name to the column of
    ``ServedOutputs.values`` it reads and its reference; ``predicted_class`` is the reference of the answered
    classes, by class name (None for regression and for profiles older than version 3)."""

    numeric: dict[str, tuple[int, NumericReference]]
    predicted_class: CategoricalReference | None


def output_references(profile: Mapping[str, Any], spec: PipelineSpec) -> OutputReferences:
    """The output tests of a release from its reference profile and spec (see the module docstring)."""
    classes = spec.classes
    if spec.task != "regression" and "probabilities" in profile:
        listed = profile["probabilities"]
        if len(listed) != len(classes):
            raise ValueError(
                f"the reference profile holds {len(listed)} class probabilities, but the release's spec has classes "
                f"{list(classes)}; the release is inconsistent: republish it"
            )
        numeric = {probability_test(name): (k, NumericReference.from_dict(listed[k])) for k, name in enumerate(classes)}
        predicted = None
        if "predicted_class" in profile:
            by_index = CategoricalReference.from_dict(profile["predicted_class"])
            counts = {_class_label(classes, label): count for label, count in by_index.counts.items()}
            predicted = CategoricalReference(counts=dict(sorted(counts.items())), rows=by_index.rows)
        return OutputReferences(numeric=numeric, predicted_class=predicted)
    column = 0 if spec.task == "regression" else len(classes) - 1  # version 2: the last class's probability
    return OutputReferences(
        numeric={PREDICTION: (column, NumericReference.from_dict(profile[PREDICTION]))}, predicted_class=None
    )


def _class_label(classes: tuple[str, ...], index: str) -> str:
    """A class index (as text) -> the class name; an index outside the classes keeps its text."""
    return classes[int(index)] if index.isdigit() and int(index) < len(classes) else index


def class_names(classes: tuple[str, ...], predicted: np.ndarray) -> np.ndarray:
    """Class indices -> class names (object array), as the predicted-class test counts them."""
    names = np.array(classes, dtype=object)
    return names[np.asarray(predicted, dtype=np.int64)]


def _array(payload: Mapping[str, Any], key: str, dtype: type, what: str) -> np.ndarray:
    try:
        return np.asarray(payload[key], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise SamplesError(f"samples' {key!r} must be {what}: {exc}") from exc


def parse_outputs(payload: Mapping[str, Any], spec: PipelineSpec, ok: np.ndarray) -> ServedOutputs:
    """The outputs of a ``POST /v1/samples`` body for the task of ``spec``, checked against the number of rows
    (``len(ok)``, one status per row); rows whose status is not ``ok`` may carry anything (NaN, class -1)."""
    n = len(ok)
    if spec.task == "regression":
        if PREDICTION not in payload:
            extra = " (not probabilities/predicted_class: it is not a classifier)" if "probabilities" in payload else ""
            raise SamplesError(
                f"pipeline {spec.name!r} is a regression: samples carry 'prediction', one value per row{extra}"
            )
        values = _array(payload, PREDICTION, np.float64, "numbers (null for a row without a value)")
        if values.size != n:
            raise SamplesError(f"samples hold {n} rows but {values.size} 'prediction' values; send one per row")
        return ServedOutputs(values=values.reshape(n, 1), predicted_class=None)
    missing = [key for key in ("probabilities", PREDICTED_CLASS) if key not in payload]
    if missing:
        extra = " (not 'prediction': it is not a regression)" if PREDICTION in payload else ""
        raise SamplesError(
            f"pipeline {spec.name!r} is a {spec.task} classifier: samples lack {missing}; send 'probabilities' "
            f"[n, {len(spec.classes)}] and 'predicted_class' [n]{extra}"
        )
    probabilities = _array(payload, "probabilities", np.float64, "numbers, [n, classes]")
    if probabilities.size != n * len(spec.classes):
        raise SamplesError(
            f"samples hold {n} rows, and pipeline {spec.name!r} has {len(spec.classes)} classes "
            f"{list(spec.classes)}, but 'probabilities' has shape {list(probabilities.shape)}; send [n, classes]"
        )
    predicted = _array(payload, PREDICTED_CLASS, np.int64, "class indices (integers)").reshape(-1)
    if predicted.size != n:
        raise SamplesError(f"samples hold {n} rows but {predicted.size} 'predicted_class' values; send one per row")
    bad = ok & ((predicted < 0) | (predicted >= len(spec.classes)))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise SamplesError(
            f"row {row} is 'ok' but its predicted_class {int(predicted[row])} is not a class index of "
            f"{list(spec.classes)} (0..{len(spec.classes) - 1})"
        )
    return ServedOutputs(values=probabilities.reshape(n, len(spec.classes)), predicted_class=predicted)
