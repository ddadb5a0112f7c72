"""``MonitorTap``: sends what a client sent and what the server answered to the monitor, off the request path.

Give it to the serving client (``InferlineClient(..., tap=MonitorTap(url, key=monitor_key(workdir)))``, the
monitor's ingest key from ``serving.secrets``): every ``predict`` hands its wire
arrays and predictions to ``record``, which only enqueues; a background thread posts them to the monitor's
``/v1/samples``. A monitor that is down never slows or fails serving: samples are dropped (and counted) when the
queue is full or a post fails.

What travels (``sample_payload``): the tabular request columns (one value per row), the status and release of each
row, and the task's outputs: ``probabilities`` and ``predicted_class`` for a classifier, ``prediction`` for a
regression. Tensor columns (images, token ids: several values per row) are never sent: the monitor measures drift
on the tabular features and on the outputs only.

The served path samples every caller by itself (``serving.edge_tap.EdgeSampler``, what ``inferline serve up
--monitor-url`` runs); this tap is for a client that wants its own view (client-side latency). Libraries: the
``core.http.post_json`` posts; numpy holds the arrays.
"""

from __future__ import annotations

import logging
import queue
import threading
import urllib.error
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from inferline.core.http import post_json
from inferline.features.spec import PipelineSpec
from inferline.features.wire import to_json_columns

__all__ = ["MonitorTap", "sample_payload", "tabular_arrays"]

log = logging.getLogger("inferline.serving.tap")


def _one_value_per_row(values: np.ndarray) -> bool:
    """A tabular wire array ([n] or [n, 1] of scalars), not a tensor column ([n, *shape], or arrays per row)."""
    arr = np.asarray(values)
    if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] != 1):
        return False
    if arr.dtype == np.object_ and arr.size and isinstance(arr.reshape(-1)[0], np.ndarray | list | tuple):
        return False  # a ragged tensor column: one array per row
    return True


def tabular_arrays(arrays: Mapping[str, np.ndarray], skip: Collection[str] = ()) -> dict[str, np.ndarray]:
    """The wire arrays the monitor reads: every column with one value per row, less the columns in ``skip`` (a
    spec's tensor columns). A tensor column's values never travel to the monitor."""
    return {name: values for name, values in arrays.items() if name not in skip and _one_value_per_row(values)}


def sample_payload(
    arrays: Mapping[str, np.ndarray],
    probabilities: np.ndarray | None,
    predicted_class: np.ndarray | None,
    status: list[str],
    release: str,
    model: str,
    latency_s: list[float] | None = None,
    source: str = "serving",
    *,
    prediction: np.ndarray | None = None,
    skip_columns: Collection[str] = (),
    latency_side: str = "client",
) -> dict[str, Any]:
    """The body of the monitor's ``POST /v1/samples`` (``monitor.service`` describes it). A classifier's rows carry
    ``probabilities`` [n, classes] and ``predicted_class`` [n]; a regression's carry ``prediction`` [n] (pass None
    for the other two). Columns with more than one value per row (tensor columns), and ``skip_columns``, are
    left out. ``latency_side``: where ``latency_s`` was measured, ``client`` (a client's tap) or ``edge`` (the
    edge's sampler); the monitor's latency histogram carries it as its ``side`` label."""
    if (prediction is None) == (probabilities is None or predicted_class is None):
        raise ValueError(
            "sample_payload needs either probabilities and predicted_class (a classifier) or prediction= "
            "(a regression), not both and not neither"
        )
    payload: dict[str, Any] = {
        "model": model,
        "release": release,
        "source": source,
        "columns": to_json_columns(tabular_arrays(arrays, skip_columns)),
        "status": list(status),
        "latency_s": list(latency_s or []),
        "latency_side": latency_side,
    }
    if prediction is not None:
        payload["prediction"] = [None if np.isnan(v) else float(v) for v in np.asarray(prediction, np.float64).ravel()]
    else:
        payload["probabilities"] = np.asarray(probabilities).tolist()
        payload["predicted_class"] = np.asarray(predicted_class).reshape(-1).tolist()
    return payload


class MonitorTap:
    """Posts what a serving client sent and was answered to the monitor at ``url``. ``spec`` (optional) names the
    tensor columns to leave out; columns with more than one value per row are left out in any case.

    ``record`` reads ``predictions.probabilities`` and ``predictions.predicted_class`` of a classifier, or
    ``predictions.prediction`` (one value per row) of a regression."""

    def __init__(
        self,
        url: str,
        max_queue: int = 1_000,
        timeout_s: float = 5.0,
        spec: PipelineSpec | None = None,
        *,
        key: str | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/v1/samples"
        self.key = key  # the monitor's ingest key (serving.secrets.monitor_key); without it the monitor answers 401
        self.timeout_s = timeout_s
        self.skip_columns = frozenset(c.name for c in spec.tensor_columns) if spec is not None else frozenset()
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=max_queue)
        self.sent = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="monitor-tap", daemon=True)
        self._thread.start()

    def record(
        self, arrays: Mapping[str, np.ndarray], predictions: Any, model: str, release: str | None = None
    ) -> None:
        releases = set(predictions.release)
        values = getattr(predictions, "prediction", None)  # a regression's answers
        tabular = tabular_arrays(arrays, self.skip_columns)
        for rel in sorted(releases) if release is None else [release]:  # one payload per release that answered
            rows = np.array([r == rel for r in predictions.release], dtype=bool)
            payload = sample_payload(
                {name: column.reshape(-1)[rows] for name, column in tabular.items()},
                None if values is not None else predictions.probabilities[rows],
                None if values is not None else predictions.predicted_class[rows],
                [s for s, keep in zip(predictions.status, rows, strict=True) if keep],
                rel,
                model,
                list(predictions.latencies_s) if rel == min(releases) else [],
                prediction=None if values is None else np.asarray(values).reshape(-1)[rows],
            )
            try:
                self.queue.put_nowait(payload)
            except queue.Full:
                self.dropped += int(rows.sum())

    def _run(self) -> None:
        while True:
            payload = self.queue.get()
            try:
                if payload is None:
                    return
                post_json(self.url, payload, self.timeout_s, self.key)
                self.sent += len(payload["status"])
            except (urllib.error.URLError, OSError, ValueError) as exc:
                self.dropped += len(payload["status"]) if payload else 0
                log.warning("monitor at %s did not take %s samples: %s", self.url, len(payload or {}), exc)
            finally:
                self.queue.task_done()

    def flush(self) -> None:
        """Wait until every enqueued sample was posted (or dropped)."""
        self.queue.join()

    def close(self) -> None:
        self.flush()
        self.queue.put(None)
        self._thread.join(timeout=self.timeout_s)
