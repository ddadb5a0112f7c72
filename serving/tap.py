"""``MonitorTap``: sends what a client sent and what the server answered to the monitor, off the request path.

Give it to the serving client (``InferlineClient(..., tap=MonitorTap(url))``): every ``predict`` hands its wire
arrays and predictions to ``record``, which only enqueues; a background thread posts them to the monitor's
``/v1/samples``. A monitor that is down never slows or fails serving: samples are dropped (and counted) when the
queue is full or a post fails.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np

from inferline.features.wire import to_json_columns

__all__ = ["MonitorTap", "post_json", "sample_payload"]

log = logging.getLogger("inferline.serving.tap")


def post_json(url: str, payload: Any, timeout_s: float = 10.0) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def sample_payload(
    arrays: Mapping[str, np.ndarray],
    probabilities: np.ndarray,
    predicted_class: np.ndarray,
    status: list[str],
    release: str,
    model: str,
    latency_s: list[float] | None = None,
    source: str = "serving",
) -> dict[str, Any]:
    """The body of the monitor's ``POST /v1/samples``."""
    return {
        "model": model,
        "release": release,
        "source": source,
        "columns": to_json_columns(arrays),
        "probabilities": np.asarray(probabilities).tolist(),
        "predicted_class": np.asarray(predicted_class).reshape(-1).tolist(),
        "status": list(status),
        "latency_s": list(latency_s or []),
    }


class MonitorTap:
    def __init__(self, url: str, max_queue: int = 1_000, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/") + "/v1/samples"
        self.timeout_s = timeout_s
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=max_queue)
        self.sent = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="monitor-tap", daemon=True)
        self._thread.start()

    def record(
        self, arrays: Mapping[str, np.ndarray], predictions: Any, model: str, release: str | None = None
    ) -> None:
        releases = set(predictions.release)
        for rel in sorted(releases) if release is None else [release]:  # one payload per release that answered
            rows = np.array([r == rel for r in predictions.release], dtype=bool)
            payload = sample_payload(
                {name: values.reshape(-1)[rows] for name, values in arrays.items()},
                predictions.probabilities[rows],
                predictions.predicted_class[rows],
                [s for s, keep in zip(predictions.status, rows, strict=True) if keep],
                rel,
                model,
                list(predictions.latencies_s) if rel == min(releases) else [],
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
                post_json(self.url, payload, self.timeout_s)
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
