"""Delayed ground truth joined to what was answered: per-class errors for a classifier, MAE/RMSE for a regression.

The monitor logs the answer of every accepted row under its id (``PredictionLog.log``: the predicted class index,
or the predicted value, with a classifier's class probabilities) and joins labels to it when they arrive
(``POST /v1/labels``); the joined probabilities give the realized figures the label-free estimates are compared
against (``PredictionLog.scored``, ``monitor.performance``). A pipeline without an id
column cannot be joined: its labels are refused with :class:`LabelsError`.

Label payload: ``{"labels": [{"<id column>": id, "label": value}, ...]}`` where ``value`` is a class index (or a
class name) of the pipeline's classes, or a finite number for regression. The whole payload is checked before
any label is joined, so a bad item changes nothing.

Not thread-safe: the monitor calls it under its lock.
"""

from __future__ import annotations

import math
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferline.core.errors import UserError
from inferline.features.spec import PipelineSpec

__all__ = ["Joined", "LabelsError", "PredictionLog", "RegressionErrors"]


class LabelsError(UserError, ValueError):
    """Labels that cannot be joined: the pipeline has no id column, or an item is malformed (answered 400)."""

    docs = "tutorials/monitoring.md"


@dataclass(frozen=True)
class Joined:
    """One label joined to the answer it judges: a class index each for a classifier, values for regression; a
    classifier's class probabilities when they were logged (else empty)."""

    label: float
    predicted: float
    release: str
    probabilities: tuple[float, ...] = ()


@dataclass(frozen=True)
class RegressionErrors:
    """Errors of the joined rows of one release: ``mean_absolute_error``, ``root_mean_squared_error`` and
    ``mean_error`` (prediction minus label: the bias), in the label's unit; NaN with no rows."""

    release: str | None
    rows: int
    mean_absolute_error: float
    root_mean_squared_error: float
    mean_error: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "rows": self.rows,
            "mae": self.mean_absolute_error,
            "rmse": self.root_mean_squared_error,
            "mean_error": self.mean_error,
        }


class PredictionLog:
    """The answers of the last ``window_rows`` accepted rows by id, and the last ``window_rows`` joined labels."""

    def __init__(self, spec: PipelineSpec, window_rows: int) -> None:
        self.spec = spec
        self.window_rows = window_rows
        # id -> (answer, release, class probabilities or ())
        self.answers: OrderedDict[str, tuple[float, str, tuple[float, ...]]] = OrderedDict()
        self.joined: deque[Joined] = deque(maxlen=window_rows)
        self.unmatched = 0
        id_column = spec.id_column
        # ids compare as validation canonicalizes them: an NFD id in a sample and its NFC form in a label are one
        self._nfc = id_column is not None and id_column.normalization == "nfc"

    def _key(self, text: str) -> str:
        return unicodedata.normalize("NFC", text) if self._nfc and not text.isascii() else text

    @property
    def joinable(self) -> bool:
        """Whether labels can be joined at all: the pipeline has an id column."""
        return self.spec.id_column is not None

    def log(self, ids: np.ndarray, answers: np.ndarray, release: str, probabilities: np.ndarray | None = None) -> None:
        """Remember the answers of accepted rows (``ids`` as the wire's BYTES, ``answers`` class indices or
        values, ``probabilities`` a classifier's [n, classes] when given), dropping the oldest beyond the window."""
        scores = probabilities.tolist() if probabilities is not None else [()] * len(answers)
        for raw, answer, p in zip(ids, answers.tolist(), scores, strict=True):
            if not math.isfinite(answer):  # a row answered without a value has nothing to be judged against
                continue
            key = self._key(raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw))
            self.answers[key] = (float(answer), release, tuple(p))
            self.answers.move_to_end(key)
        while len(self.answers) > self.window_rows:
            self.answers.popitem(last=False)

    def _label(self, item: Mapping[str, Any], i: int) -> float:
        value = item.get("label")
        if self.spec.task == "regression":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise LabelsError(
                    f"labels[{i}]: label {value!r} is not a finite number; pipeline {self.spec.name!r} is a "
                    "regression, its labels are the observed values"
                )
            return float(value)
        classes = self.spec.classes
        if isinstance(value, str) and value in classes:
            return float(classes.index(value))
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(classes):
            return float(value)
        raise LabelsError(
            f"labels[{i}]: label {value!r} is not a class of pipeline {self.spec.name!r}; send a class index "
            f"0..{len(classes) - 1} or a name of {list(classes)}"
        )

    def join(self, payload: Mapping[str, Any]) -> dict[str, int]:
        """Join ``payload["labels"]`` (see the module docstring); returns how many joined and how many named an id
        without a logged answer (too old, never seen, or not scored ``ok``)."""
        id_column = self.spec.id_column
        if id_column is None:
            raise LabelsError(
                f"pipeline {self.spec.name!r} has no id column, so labels cannot be joined to the answers they "
                "judge; declare an id column (kind 'id') in the spec to monitor errors from delayed labels"
            )
        items = payload.get("labels") if isinstance(payload, Mapping) else None
        if not isinstance(items, list):
            raise LabelsError(f"expected {{'labels': [{{'{id_column.name}': ..., 'label': ...}}, ...]}}")
        checked: list[tuple[str, float]] = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or id_column.name not in item:
                raise LabelsError(f"labels[{i}] lacks the id column {id_column.name!r}: {str(item)[:80]}")
            checked.append((self._key(str(item[id_column.name])), self._label(item, i)))
        joined = 0
        for key, label in checked:
            hit = self.answers.get(key)
            if hit is not None:
                self.joined.append(Joined(label, hit[0], hit[1], hit[2]))
                joined += 1
        unmatched = len(checked) - joined
        self.unmatched += unmatched
        return {"joined": joined, "unmatched": unmatched}

    def class_errors(self) -> dict[str, dict[str, float]]:
        """Per class over the joined window: rows predicted as the class and actually of it, the error rate among
        rows predicted as the class, precision and recall (NaN where undefined). Empty for regression."""
        if self.spec.task == "regression":
            return {}
        pairs = np.array([(j.label, j.predicted) for j in self.joined], dtype=np.int64).reshape(-1, 2)
        out = {}
        for k, name in enumerate(self.spec.classes):
            predicted = pairs[:, 1] == k
            actual = pairs[:, 0] == k
            tp = int((predicted & actual).sum())
            out[name] = {
                "predicted": int(predicted.sum()),
                "actual": int(actual.sum()),
                "error_rate": float(1 - tp / predicted.sum()) if predicted.any() else float("nan"),
                "precision": float(tp / predicted.sum()) if predicted.any() else float("nan"),
                "recall": float(tp / actual.sum()) if actual.any() else float("nan"),
            }
        return out

    def scored(self, release: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The joined rows of ``release`` that carry probabilities: probabilities [m, classes], predicted class
        indices [m] and labels [m] (empty arrays when there are none)."""
        rows = [j for j in self.joined if j.release == release and len(j.probabilities) == len(self.spec.classes)]
        return (
            np.array([j.probabilities for j in rows], dtype=np.float64).reshape(len(rows), len(self.spec.classes)),
            np.array([j.predicted for j in rows], dtype=np.int64),
            np.array([j.label for j in rows], dtype=np.int64),
        )

    def regression_errors(self, release: str | None) -> RegressionErrors:
        """MAE, RMSE and mean error of the joined rows answered by ``release``."""
        rows = [(j.label, j.predicted) for j in self.joined if j.release == release]
        if not rows:
            return RegressionErrors(release, 0, math.nan, math.nan, math.nan)
        pairs = np.array(rows, dtype=np.float64)
        error = pairs[:, 1] - pairs[:, 0]
        return RegressionErrors(
            release=release,
            rows=len(rows),
            mean_absolute_error=float(np.abs(error).mean()),
            root_mean_squared_error=float(np.sqrt((error**2).mean())),
            mean_error=float(error.mean()),
        )
