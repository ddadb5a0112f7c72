"""A typed client for a pipeline's Triton ensemble over HTTP or gRPC.

``predict(rows)`` takes raw rows (a DataFrame or a list of dicts with the pipeline's raw columns), encodes one
tensor per column as the contract fixes (strings and timestamps as BYTES, ISO-8601 with offset; money FP64;
integers INT64; an empty string is a null), splits them into requests of at most ``max_batch_size`` rows, retries
transient failures with exponential backoff within a deadline, and returns every row's probabilities, predicted
class, status (``ok`` or a validation reason) and the release that answered.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.spec import Column, PipelineSpec, load_pipeline
from serving.secrets import ADMIN_HEADER

__all__ = ["InferlineClient", "InferlineError", "PredictionTap", "Predictions", "Protocol", "encode_rows"]

Protocol = Literal["http", "grpc"]
RETRYABLE = (
    "UNAVAILABLE",
    "Connection refused",
    "connection reset",
    "Broken pipe",
    "Exceeds maximum queue size",
    "Request timeout expired",
    "RESOURCE_EXHAUSTED",
    "Failed to connect",
    "Socket closed",
)


class InferlineError(RuntimeError):
    """A request the server refused or could not answer; ``retryable`` tells whether trying again may help."""

    def __init__(self, message: str, status: str | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass
class Predictions:
    probabilities: np.ndarray  # float32 [n, n_classes]
    predicted_class: np.ndarray  # int64 [n]
    status: list[str]
    release: list[str]
    latencies_s: list[float] = field(default_factory=list)  # one per request sent

    @property
    def ok(self) -> np.ndarray:
        return np.array([s == "ok" for s in self.status], dtype=bool)

    def __len__(self) -> int:
        return len(self.status)


def _encode_column(col: Column, values: pd.Series) -> np.ndarray:
    if col.triton_dtype == "BYTES":
        if col.kind == "timestamp":
            if pd.api.types.is_datetime64_any_dtype(values):
                text = [("" if pd.isna(v) else v.isoformat()) for v in values]
            else:
                text = ["" if pd.isna(v) else str(v) for v in values]
        else:
            text = ["" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]
        return np.array([t.encode("utf-8") for t in text], dtype=np.object_).reshape(-1, 1)
    if col.triton_dtype == "FP64":
        return values.to_numpy(dtype=np.float64, na_value=np.nan).reshape(-1, 1)
    return values.to_numpy(dtype=np.int64).reshape(-1, 1)


def encode_rows(rows: pd.DataFrame | Sequence[Mapping[str, Any]], spec: PipelineSpec) -> dict[str, np.ndarray]:
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c.name for c in spec.input_columns if c.name not in frame.columns]
    if missing:
        raise ValueError(
            f"rows lack column(s) {missing}; pipeline {spec.name!r} expects {[c.name for c in spec.input_columns]}"
        )
    return {c.name: _encode_column(c, frame[c.name]) for c in spec.input_columns}


class PredictionTap(typing.Protocol):
    """Receives every predict call's wire arrays and answers (``serving.tap.MonitorTap`` is one); must not block."""

    def record(self, arrays: Mapping[str, np.ndarray], predictions: Predictions, model: str) -> None: ...


class InferlineClient:
    def __init__(
        self,
        url: str,
        protocol: Protocol = "http",
        pipeline: str = "fraud",
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        max_batch_size: int | None = None,
        admin_key: str | None = None,
        tap: PredictionTap | None = None,
    ) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self.tap = tap
        self.spec = load_pipeline(pipeline)
        self.model = pipeline
        self.max_batch_size = max_batch_size or self.spec.model.max_batch_size
        # gRPC carries restricted-protocol keys with Triton's prefix
        header = ADMIN_HEADER if protocol == "http" else f"triton-grpc-protocol-{ADMIN_HEADER}"
        self.admin_headers = {header: admin_key} if admin_key else {}
        if protocol == "http":
            import tritonclient.http as client_module

            self._m: Any = client_module
            self._client: Any = client_module.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            import tritonclient.grpc as client_module

            self._m = client_module
            self._client = client_module.InferenceServerClient(url)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> InferlineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except Exception:  # noqa: BLE001 - any failure to answer is "not ready"
            return False

    def repository_index(self) -> list[dict[str, Any]]:
        """Models and versions the server knows (an admin API: needs the admin key)."""
        if self.protocol == "http":
            return list(self._client.get_model_repository_index(headers=self.admin_headers))
        index = self._client.get_model_repository_index(headers=self.admin_headers, as_json=True)
        return list(index.get("models", []))

    def _inputs(self, arrays: Mapping[str, np.ndarray]) -> list[Any]:
        inputs = []
        for c in self.spec.input_columns:
            data = arrays[c.name]
            inp = self._m.InferInput(c.name, list(data.shape), c.triton_dtype)
            if self.protocol == "http":
                inp.set_data_from_numpy(data, binary_data=True)
            else:
                inp.set_data_from_numpy(data)
            inputs.append(inp)
        return inputs

    def _infer_once(self, arrays: Mapping[str, np.ndarray]) -> Any:
        outputs = [self._m.InferRequestedOutput(n) for n in ("probabilities", "predicted_class", "status", "release")]
        if self.protocol == "http":
            return self._client.infer(
                self.model, self._inputs(arrays), outputs=outputs, timeout=int(self.timeout_s * 1e6)
            )
        return self._client.infer(self.model, self._inputs(arrays), outputs=outputs, client_timeout=self.timeout_s)

    def _infer(self, arrays: Mapping[str, np.ndarray]) -> Any:
        from tritonclient.utils import InferenceServerException

        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            try:
                return self._infer_once(arrays)
            except (InferenceServerException, ConnectionError, OSError) as exc:
                text = str(exc)
                retryable = any(marker.lower() in text.lower() for marker in RETRYABLE)
                attempt += 1
                delay = self.backoff_s * (2 ** (attempt - 1))
                if not retryable or attempt > self.retries or time.monotonic() + delay > deadline:
                    status = exc.status() if isinstance(exc, InferenceServerException) else type(exc).__name__
                    raise InferlineError(
                        f"{self.protocol} request to model {self.model!r} at {self.url} failed after {attempt} "
                        f"attempt(s): {text}",
                        status=status,
                        retryable=retryable,
                    ) from exc
                time.sleep(delay)  # backoff between retries

    def predict(self, rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> Predictions:
        arrays = encode_rows(rows, self.spec)
        n = len(next(iter(arrays.values())))
        probs, classes, status, release, latencies = [], [], [], [], []
        for start in range(0, n, self.max_batch_size):
            chunk = {k: v[start : start + self.max_batch_size] for k, v in arrays.items()}
            t0 = time.perf_counter()
            result = self._infer(chunk)
            latencies.append(time.perf_counter() - t0)
            probs.append(result.as_numpy("probabilities"))
            classes.append(result.as_numpy("predicted_class").reshape(-1))
            status += [s.decode() for s in result.as_numpy("status").reshape(-1)]
            release += [s.decode() for s in result.as_numpy("release").reshape(-1)]
        n_classes = len(self.spec.classes)
        predictions = Predictions(
            probabilities=np.concatenate(probs) if probs else np.zeros((0, n_classes), np.float32),
            predicted_class=np.concatenate(classes) if classes else np.zeros(0, np.int64),
            status=status,
            release=release,
            latencies_s=latencies,
        )
        if self.tap is not None and n:
            self.tap.record(arrays, predictions, self.model)
        return predictions
