"""A typed client for a pipeline's served Triton model (fused locally, an ensemble on gpu) over HTTP or gRPC.

``predict(rows)`` takes raw rows (a DataFrame or a list of dicts with the pipeline's raw columns), encodes one
tensor per column as the contract fixes (strings and timestamps as BYTES, ISO-8601 with offset; money FP64;
integers INT64; an empty string is a null), splits them into requests of at most ``max_batch_size`` rows, and
returns every row's probabilities, predicted class, status (``ok`` or a validation reason) and the release that
answered.

Failures are typed. An overloaded or restarting server (503, ``UNAVAILABLE``, a refused or reset connection) is
retried with capped exponential backoff and full jitter until the request's deadline (``timeout_s``); a request the
server refuses (400) is not retried (``RequestRefused``). A passed deadline raises ``DeadlineExceeded`` and a set
``cancel`` event raises ``Cancelled``; neither is retried, so no request is sent twice after its caller gave up.
With ``errors="record"`` a request that still fails marks its rows ``failed:<kind>`` instead of raising, so every
row ends with exactly one prediction or one recorded failure.

Several endpoints (``InferlineClient([url1, url2], ...)``: replicas of one release behind their own edges) are
used in turn. An endpoint whose attempt fails in a way worth retrying (refused, reset, unavailable) is set aside
for ``endpoint_cooldown_s`` and the request goes at once to the next one; with every endpoint set aside it waits
the backoff as with one. Each request is answered by one endpoint or recorded as failed: a row never gets two
answers. ``Predictions.served_by`` names the endpoint of each row.
"""

from __future__ import annotations

import queue
import random
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from threading import Event
from typing import Any, Literal

import numpy as np
import pandas as pd

from inferline.core.errors import UserError
from inferline.core.http import Backoff
from inferline.core.secrets import ADMIN_HEADER
from inferline.features.spec import PipelineSpec, load_pipeline
from inferline.features.wire import encode_rows, shape_groups
from inferline.serving.triton_index import repository_index

__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "InferlineClient",
    "InferlineError",
    "PredictionTap",
    "Predictions",
    "Protocol",
    "RequestRefused",
    "TlsFiles",
    "Unavailable",
    "encode_rows",
    "ready_models",
]

Protocol = Literal["http", "grpc"]
# what an overloaded, restarting or unreachable server answers: worth another attempt after a backoff
RETRYABLE = (
    "UNAVAILABLE",
    "RESOURCE_EXHAUSTED",
    "overloaded",
    "restarting",
    "shutting down",
    "Connection refused",
    "connection reset",
    "Broken pipe",
    "Exceeds maximum queue size",
    "Failed to connect",
    "Socket closed",
    "Remote end closed",
    "connection closed",
)
DEADLINE = ("DEADLINE_EXCEEDED", "Deadline Exceeded", "timed out", "Request timeout expired")


class InferlineError(UserError, RuntimeError):
    """A request the server refused or could not answer; ``retryable`` tells whether trying again later may help,
    ``attempts`` how many times it was sent."""

    docs = "explanation/security.md"

    kind = "error"

    def __init__(self, message: str, status: str | None = None, retryable: bool = False, attempts: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.attempts = attempts


class Unavailable(InferlineError):
    """Overloaded, restarting or unreachable through every attempt within the deadline."""

    kind = "unavailable"


class RequestRefused(InferlineError):
    """The server refused the request itself (a 4xx or ``INVALID_ARGUMENT``): sending it again would not help."""

    kind = "refused"


class DeadlineExceeded(InferlineError):
    """The request's deadline (``timeout_s``) passed; it is not retried."""

    kind = "deadline_exceeded"


class Cancelled(InferlineError):
    """The caller set the ``cancel`` event; requests not yet answered are not sent (or, over gRPC, are cancelled)."""

    kind = "cancelled"
    done_rows = 0  # rows answered before the cancel (predict sets it)


def classify(exc: BaseException, protocol: str, url: str, model: str, attempts: int) -> InferlineError:
    """The typed error for one failed attempt."""
    from tritonclient.utils import InferenceServerException

    text = str(exc)
    status = exc.status() if isinstance(exc, InferenceServerException) else type(exc).__name__
    message = f"{protocol} request to model {model!r} at {url} failed after {attempts} attempt(s): {text}"
    lowered = f"{status} {text}".lower()
    if isinstance(exc, TimeoutError) or any(m.lower() in lowered for m in DEADLINE):
        return DeadlineExceeded(message, status, retryable=False, attempts=attempts)
    if str(status) in ("503", "429", "502", "504") or any(m.lower() in lowered for m in RETRYABLE):
        return Unavailable(message, status, retryable=True, attempts=attempts)
    if isinstance(exc, ConnectionError | OSError):
        return Unavailable(message, status, retryable=True, attempts=attempts)
    return RequestRefused(message, status, retryable=False, attempts=attempts)


@dataclass
class Predictions:
    probabilities: np.ndarray  # float32 [n, n_classes] ([n, 0] for regression)
    predicted_class: np.ndarray  # int64 [n] (-1 for regression)
    status: list[str]
    release: list[str]
    latencies_s: list[float] = field(default_factory=list)  # one per request sent
    errors: list[InferlineError] = field(default_factory=list)  # requests recorded as failed (errors="record")
    prediction: np.ndarray | None = None  # float32 [n]: a regression pipeline's values (None for a classifier)
    served_by: list[str] = field(default_factory=list)  # the endpoint that answered each row ("" where it failed)

    @property
    def ok(self) -> np.ndarray:
        return np.array([s == "ok" for s in self.status], dtype=bool)

    @property
    def failed(self) -> np.ndarray:
        """Rows whose request failed (``failed:<kind>``): no prediction, NaN probabilities, class -1."""
        return np.array([s.startswith("failed:") for s in self.status], dtype=bool)

    def __len__(self) -> int:
        return len(self.status)


class PredictionTap(typing.Protocol):
    """Receives every predict call's wire arrays and answers (``serving.tap.MonitorTap`` is one); must not block."""

    def record(self, arrays: Mapping[str, np.ndarray], predictions: Predictions, model: str) -> None: ...


@dataclass(frozen=True)
class TlsFiles:
    """HTTPS (or gRPC over TLS) to an edge started with ``--tls-cert``: the CA that signed its certificate, and for
    mutual TLS the caller's own certificate and key (PEM files)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def http_options(self) -> dict[str, Any]:
        import gevent.ssl  # type: ignore[import-untyped]

        options: dict[str, Any] = {"ca_certs": str(self.ca)}
        if self.cert is not None and self.key is not None:
            options |= {"certfile": str(self.cert), "keyfile": str(self.key)}
        return {"ssl": True, "ssl_options": options, "ssl_context_factory": gevent.ssl.create_default_context}

    def grpc_options(self) -> dict[str, Any]:
        """The same files for the gRPC edge (TLS over HTTP/2)."""
        options: dict[str, Any] = {"ssl": True, "root_certificates": str(self.ca)}
        if self.cert is not None and self.key is not None:
            options |= {"private_key": str(self.key), "certificate_chain": str(self.cert)}
        return options


class InferlineClient:
    def __init__(
        self,
        url: str | Sequence[str],
        protocol: Protocol = "http",
        *,
        pipeline: str,
        timeout_s: float = 10.0,
        retries: int = 8,
        backoff_s: float = 0.05,
        backoff_max_s: float = 2.0,
        max_batch_size: int | None = None,
        admin_key: str | None = None,
        api_key: str | None = None,
        tls: TlsFiles | None = None,
        tap: PredictionTap | None = None,
        spec: PipelineSpec | None = None,
        endpoint_cooldown_s: float = 5.0,
    ) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("no endpoint: give the URL of an edge (or of Triton), or a list of them")
        self.url, self.protocol, self.timeout_s = self.urls[0], protocol, timeout_s
        self.endpoint_cooldown_s = endpoint_cooldown_s
        self._set_aside = [0.0] * len(self.urls)  # monotonic time until which each endpoint is skipped
        self._next = 0  # the endpoint the next request goes to (round robin over those not set aside)
        # full jitter: a burst of rejected clients does not come back in lockstep
        self.backoff = Backoff(backoff_s, backoff_max_s, attempts=retries + 1, jitter=True)
        self._random = random.Random()
        self.tap = tap
        # the columns to send: ``spec`` (e.g. a release's snapshot, features.spec.read_spec) or the pipeline module
        self.spec = spec if spec is not None else load_pipeline(pipeline)
        self.model = pipeline
        self.max_batch_size = max_batch_size or self.spec.model.max_batch_size
        from inferline.features.contract import model_outputs

        self._outputs = [t.name for t in model_outputs(self.spec)] + ["status", "release"]
        # gRPC carries restricted-protocol keys with Triton's prefix
        header = ADMIN_HEADER if protocol == "http" else f"triton-grpc-protocol-{ADMIN_HEADER}"
        self.admin_headers = {header: admin_key} if admin_key else {}
        # an edge started with --api-keys wants the caller's key (``serving.apikeys``); gRPC metadata is lower-case
        self.headers = (
            {("Authorization" if protocol == "http" else "authorization"): f"Bearer {api_key}"} if api_key else {}
        )
        if protocol == "http":
            import tritonclient.http as client_module

            self._m: Any = client_module
            self._clients: list[Any] = [
                client_module.InferenceServerClient(
                    u, connection_timeout=timeout_s, network_timeout=timeout_s, **(tls.http_options() if tls else {})
                )
                for u in self.urls
            ]
        else:
            import tritonclient.grpc as client_module

            self._m = client_module
            self._clients = [
                client_module.InferenceServerClient(u, **(tls.grpc_options() if tls else {})) for u in self.urls
            ]
        self._client: Any = self._clients[0]  # the admin calls (repository_index) go to the first endpoint

    def close(self) -> None:
        for c in self._clients:
            c.close()

    def __enter__(self) -> InferlineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_ready(self) -> bool:
        """Some endpoint is ready and has the pipeline's model ready."""
        for c in self._clients:
            try:
                if c.is_server_ready() and c.is_model_ready(self.model, headers=self.headers):
                    return True
            except Exception:  # noqa: BLE001 - any failure to answer is "not ready"
                continue
        return False

    def _endpoint(self) -> int:
        """The next endpoint in turn that is not set aside; with all set aside, the one back soonest."""
        now, n = time.monotonic(), len(self.urls)
        for k in range(n):
            i = (self._next + k) % n
            if self._set_aside[i] <= now:
                self._next = (i + 1) % n
                return i
        return min(range(n), key=self._set_aside.__getitem__)

    def repository_index(self) -> list[dict[str, Any]]:
        """Models and versions the server knows (an admin API: needs the admin key); ``ready_models`` needs no
        pipeline."""
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

    def _infer_once(
        self, client: Any, arrays: Mapping[str, np.ndarray], remaining_s: float, cancel: Event | None
    ) -> Any:
        outputs = [self._m.InferRequestedOutput(n) for n in self._outputs]
        if self.protocol == "http":  # the deadline is the connection's network timeout (timeout_s)
            return client.infer(self.model, self._inputs(arrays), outputs=outputs, headers=self.headers or None)
        answers: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
        call = client.async_infer(
            self.model,
            self._inputs(arrays),
            callback=lambda result, error: answers.put((result, error)),
            outputs=outputs,
            client_timeout=max(remaining_s, 1e-3),
            headers=self.headers or None,
        )
        while True:  # wait for the answer, cancelling the call in flight if the caller gives up
            try:
                result, error = answers.get(timeout=0.05)
                break
            except queue.Empty:
                if cancel is not None and cancel.is_set():
                    call.cancel()
                    raise Cancelled(f"grpc request to model {self.model!r} cancelled by the caller") from None
        if error is not None:
            raise error
        return result

    def _infer(self, arrays: Mapping[str, np.ndarray], cancel: Event | None = None) -> tuple[Any, str]:
        """One request's answer and the endpoint that gave it."""
        from tritonclient.utils import InferenceServerException

        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"request to model {self.model!r} cancelled by the caller", attempts=attempt)
            attempt += 1
            i = self._endpoint()
            try:
                return self._infer_once(self._clients[i], arrays, deadline - time.monotonic(), cancel), self.urls[i]
            except Cancelled as exc:
                exc.attempts = attempt
                raise
            except (InferenceServerException, OSError) as exc:
                error = classify(exc, self.protocol, self.urls[i], self.model, attempt)
            if not error.retryable or attempt >= self.backoff.attempts:
                raise error
            self._set_aside[i] = time.monotonic() + self.endpoint_cooldown_s
            if any(t <= time.monotonic() for t in self._set_aside):
                continue  # another endpoint is in service: send it there at once
            delay = self.backoff.delay(attempt, self._random)
            if time.monotonic() + delay > deadline:
                raise DeadlineExceeded(
                    f"{error} (no time left for another attempt within the {self.timeout_s}s deadline)",
                    error.status,
                    attempts=attempt,
                )
            if cancel is not None:
                cancel.wait(delay)  # backoff, ended early by a cancel
            else:
                time.sleep(delay)  # backoff between retries

    def predict(
        self,
        rows: pd.DataFrame | Sequence[Mapping[str, Any]],
        errors: Literal["raise", "record"] = "raise",
        cancel: Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Predictions:
        """Score ``rows``. ``errors="record"`` marks the rows of a request that failed for good ``failed:<kind>``
        (``Predictions.failed``, ``Predictions.errors``) instead of raising; ``cancel`` stops at once with
        ``Cancelled`` (its ``done_rows`` were answered); ``progress`` is called with the rows answered so far.
        Rows whose tensor values differ in shape (token ids of different lengths) are sent in requests of one shape
        each, as Triton needs (``features.wire.shape_groups``), and answered in their order."""
        if errors not in ("raise", "record"):
            raise ValueError(f"errors must be 'raise' or 'record', got {errors!r}")
        if any(-1 in c.shape for c in self.spec.tensor_columns):
            frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
            groups = shape_groups(frame, self.spec)
            if len(groups) > 1:
                return self._predict_groups(frame, groups, errors, cancel, progress)
        return self._predict(rows, errors, cancel, progress)

    def _predict_groups(
        self,
        frame: pd.DataFrame,
        groups: list[np.ndarray],
        errors: Literal["raise", "record"],
        cancel: Event | None,
        progress: Callable[[int], None] | None,
    ) -> Predictions:
        """``predict`` over each group of rows of one shape, the answers put back in the rows' order
        (``done_rows`` of a ``Cancelled`` and ``progress`` count the rows of the groups answered before)."""
        parts: list[Predictions] = []
        done = 0
        for group in groups:
            step = None if progress is None else (lambda k, base=done: progress(base + k))
            try:
                parts.append(self._predict(frame.iloc[group], errors, cancel, step))
            except Cancelled as exc:
                exc.done_rows += done
                raise
            done += len(group)
        order = np.argsort(np.concatenate(groups), kind="stable")  # answer k of the concatenation -> its row

        def back(values: list[Any]) -> list[Any]:
            return [values[k] for k in order]

        values = [p.prediction for p in parts if p.prediction is not None]
        return Predictions(
            probabilities=np.concatenate([p.probabilities for p in parts])[order],
            predicted_class=np.concatenate([p.predicted_class for p in parts])[order],
            status=back([s for p in parts for s in p.status]),
            release=back([r for p in parts for r in p.release]),
            latencies_s=[t for p in parts for t in p.latencies_s],
            errors=[e for p in parts for e in p.errors],
            prediction=np.concatenate(values)[order] if values else None,
            served_by=back([e for p in parts for e in p.served_by]),
        )

    def _predict(
        self,
        rows: pd.DataFrame | Sequence[Mapping[str, Any]],
        errors: Literal["raise", "record"],
        cancel: Event | None,
        progress: Callable[[int], None] | None,
    ) -> Predictions:
        """``predict`` of rows that share their tensor shapes."""
        refused: dict[int, str] = {}  # rows the wire cannot carry as they are (an integer column's null)
        arrays = encode_rows(rows, self.spec, refused)
        n = len(next(iter(arrays.values())))
        n_classes = len(self.spec.classes)
        regression = self.spec.task == "regression"
        probs, classes, status, release, latencies, served_by = [], [], [], [], [], []
        values: list[np.ndarray] = []
        failures: list[InferlineError] = []
        for start in range(0, n, self.max_batch_size):
            chunk = {k: v[start : start + self.max_batch_size] for k, v in arrays.items()}
            size = len(next(iter(chunk.values())))
            t0 = time.perf_counter()
            try:
                result, endpoint = self._infer(chunk, cancel)
            except Cancelled as exc:
                exc.done_rows = start
                raise
            except InferlineError as exc:
                if errors == "raise":
                    raise
                failures.append(exc)
                probs.append(np.full((size, n_classes), np.nan, np.float32))
                classes.append(np.full(size, -1, np.int64))
                values.append(np.full(size, np.nan, np.float32))
                status += [f"failed:{exc.kind}"] * size
                release += [""] * size
                served_by += [""] * size
            else:
                latencies.append(time.perf_counter() - t0)
                if regression:
                    values.append(result.as_numpy("prediction").reshape(-1))
                    probs.append(np.zeros((size, 0), np.float32))
                    classes.append(np.full(size, -1, np.int64))
                else:
                    probs.append(result.as_numpy("probabilities"))
                    classes.append(result.as_numpy("predicted_class").reshape(-1))
                status += [s.decode() for s in result.as_numpy("status").reshape(-1)]
                release += [s.decode() for s in result.as_numpy("release").reshape(-1)]
                served_by += [endpoint] * size
            if progress is not None:
                progress(start + size)
        for row, reason in refused.items():  # sent with a stand-in value: the row's status is its reason
            if status[row] == "ok":
                status[row] = reason
        predictions = Predictions(
            probabilities=np.concatenate(probs) if probs else np.zeros((0, n_classes), np.float32),
            predicted_class=np.concatenate(classes) if classes else np.zeros(0, np.int64),
            status=status,
            release=release,
            latencies_s=latencies,
            errors=failures,
            prediction=(np.concatenate(values) if values else np.zeros(0, np.float32)) if regression else None,
            served_by=served_by,
        )
        if self.tap is not None and n:
            self.tap.record(arrays, predictions, self.model)
        return predictions


def ready_models(url: str, admin_key: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The models and versions the server at ``url`` (HTTP) has READY, from its repository index (an admin API:
    needs the admin key; read by ``triton_index.repository_index``, the one reader of it). Names no pipeline: what a
    status check of a whole server needs."""
    return [
        {"name": m.name, "version": m.version, "state": m.state}
        for m in repository_index(url, admin_key, timeout_s)
        if m.state == "READY"
    ]
