"""``EdgeSampler``: the served path hands the monitor a sample of what every caller sent and was answered.

The HTTP and gRPC edges (``serving.gateway``, ``serving.grpc_edge``) call ``offer_http`` / ``offer_grpc`` on their
event loop for each inference they answered successfully, with the raw KServe v2 bodies: the request as the caller
sent it and the response as Triton returned it. Whatever the client (curl, tritonclient, Java, Go, inferline's
own), the monitor sees it: ``MonitorTap`` in the Python client is no longer the only way in.

The request path pays for one random draw, a length check and a ``deque.append`` of references to bytes that
already exist (no copy, no parse, no lock, no system call): ``offer_*`` is O(1) and never blocks or raises. A
sample that finds the queue full is dropped and counted. A background thread wakes every ``flush_s``, drains the
queue, decodes the sampled requests (inputs into wire arrays per column, as ``features.wire`` defines them; the
outputs ``probabilities``, ``predicted_class`` or ``prediction``, ``status`` and ``release``), groups the rows by
(model, release), builds the body ``serving.tap.sample_payload`` builds (tensor columns left out, as it does) and
posts it to the monitor's ``POST /v1/samples`` with the ingest key (``serving.secrets.monitor_key``). A monitor that
is down or slow only costs samples: while a post fails, the thread backs off (1 s doubling to 30 s) and drops what
arrives meanwhile without decoding it; nothing waits on the monitor but this thread.

Counters, in the registry the supervisor exports (``inferline_edge_samples_total{outcome}``), in requests:
``offered`` (answered inferences handed over), ``sampled`` (chosen by the rate), ``sent`` (taken by the monitor),
and the drops ``dropped_queue_full``, ``dropped_monitor_down`` (unreachable, timed out or answered 5xx),
``dropped_monitor_refused`` (a 4xx: a wrong key, a body it would not take), ``dropped_undecodable`` (a body this
sampler could not read, or a response without ``status``/``release`` because the caller asked for other outputs
only). ``inferline_edge_sample_rows_sent_total`` counts the rows the monitor took.

Libraries: the bodies are read back by ``serving.edge_decode`` (the standard library's json, numpy, tritonclient's
protobuf classes); posts with urllib on the thread (``core.http.post_json``); counters with prometheus-client (a
collector reading plain integers, so the event loop takes no lock).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric

from inferline.core.http import Backoff, post_json
from inferline.features.contract import model_outputs
from inferline.features.spec import PipelineSpec, read_spec
from inferline.serving.edge_decode import Undecodable, grpc_pair, http_index, tensor_values
from inferline.serving.tap import sample_payload

__all__ = ["OUTCOMES", "EdgeSampler"]

log = logging.getLogger("inferline.serving.edge_tap")

OUTCOMES = (
    "offered",
    "sampled",
    "sent",
    "dropped_queue_full",
    "dropped_monitor_down",
    "dropped_monitor_refused",
    "dropped_undecodable",
)
_WIRE = {"BYTES": object, "FP64": np.float64, "INT64": np.int64}  # features.wire's column dtypes


def _texts(values: list[Any] | np.ndarray) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


@dataclass(frozen=True)
class _Release:
    """What the sampler needs of a release: its tabular input columns (and their wire dtypes), the outputs of its
    task and its tensor columns (never sent)."""

    spec: PipelineSpec
    columns: dict[str, Any]  # tabular input column -> numpy dtype of its wire array
    wanted: tuple[str, ...]  # the task's outputs
    tensor_columns: frozenset[str]
    regression: bool


@dataclass
class _Rows:
    """Decoded rows of one (model, release) over one drain: flat values per column and per output."""

    columns: dict[str, list[Any]]
    outputs: dict[str, list[Any]]
    status: list[str]
    latency_s: list[float]
    pairs: list[int]  # per row: the id it shares with the other release's answer to it (shadow), else -1
    requests: int = 0


class _Counters:
    """``inferline_edge_samples_total{outcome}`` and the rows sent, from plain integers (the event loop adds to
    ``offered``/``sampled``/``dropped_queue_full`` without a lock; only the sampler's thread adds to the others)."""

    def __init__(self, sampler: EdgeSampler) -> None:
        self.sampler = sampler

    def collect(self) -> Iterator[Metric]:
        s = self.sampler
        samples = CounterMetricFamily(
            "inferline_edge_samples",
            "Inferences answered at the edge and handed to the monitor sampler, by outcome (offered, sampled by "
            "the rate, sent to the monitor, or dropped and why)",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            samples.add_metric([outcome], float(s.counts[outcome]))
        yield samples
        rows = CounterMetricFamily("inferline_edge_sample_rows_sent", "Rows of sampled inferences the monitor took")
        rows.add_metric([], float(s.rows_sent))
        yield rows


class EdgeSampler:
    """Samples the edge's answered inferences at ``rate`` (0..1) and posts them to the monitor at ``url`` with the
    ingest ``key``. ``repository``: the served model repository (each release's spec snapshot says which inputs
    are tabular columns and what the task answers). ``registry``: where the counters are exported."""

    def __init__(
        self,
        url: str | None,
        key: str | None,
        rate: float,
        repository: Path,
        registry: CollectorRegistry | None = None,
        *,
        max_queue: int = 20_000,
        max_queue_bytes: int = 64 * 1024 * 1024,
        flush_s: float = 0.25,
        max_rows_per_post: int = 20_000,
        timeout_s: float = 5.0,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        seed: int | None = None,
        slice_items: int = 64,
        pause_s: float = 0.0002,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sample rate {rate} is not within 0..1")
        self.url = None if url is None else url.rstrip("/") + "/v1/samples"
        self.key = key
        self.rate = rate if url is not None else 0.0
        self.repository = Path(repository)
        self.max_queue, self.max_queue_bytes = max_queue, max_queue_bytes
        # bytes queued = in - out; each written by one thread only (the event loop, the sampler's thread)
        self._bytes_in = self._bytes_out = 0
        self.flush_s = flush_s
        self.slice_items, self.pause_s = slice_items, pause_s
        self.max_rows_per_post = max_rows_per_post
        self.timeout_s = timeout_s
        self.backoff = Backoff(backoff_s, backoff_max_s)  # a monitor that refused samples: dropped for this long
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.rows_sent = 0
        self.queue: deque[tuple[Any, ...]] = deque()
        self._random = random.Random(seed).random
        self._releases: dict[str, _Release | None] = {}
        self._down_until = 0.0
        self._quiet_until: dict[tuple[str, int], float] = {}
        self._failures = 0
        self._pairs = 0  # the next pair id (rows of a shadowed request, the same in both releases' samples)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if registry is not None:
            registry.register(_Counters(self))

    # ---- the request path (the edges' event loop): O(1), never blocks, never raises ----
    def _take(self, size: int, rate: float | None = None) -> bool:
        counts = self.counts
        counts["offered"] += 1
        if self.url is None:
            return False
        rate = self.rate if rate is None else max(rate, self.rate)  # a rollout's arms may be sampled more
        if rate <= 0.0 or (rate < 1.0 and self._random() >= rate):
            return False
        counts["sampled"] += 1
        if len(self.queue) >= self.max_queue or self._bytes_in - self._bytes_out + size > self.max_queue_bytes:
            counts["dropped_queue_full"] += 1
            return False
        self._bytes_in += size
        return True

    def offer_http(
        self,
        model: str,
        request_body: bytes,
        request_header_length: int | None,
        response_body: bytes,
        response_header_length: int | None,
        latency_s: float,
        rate: float | None = None,
    ) -> None:
        """An HTTP inference answered 200: its request and response bodies (with the JSON header lengths of
        Triton's binary extension, or None) and the edge's latency. ``rate``: this answer's sampling rate when a
        rollout sets one (at least the sampler's own)."""
        size = len(request_body) + len(response_body)
        if self._take(size, rate):
            self.queue.append(("http", size, model, request_body, request_header_length,
                               ((response_body, response_header_length, latency_s),)))  # fmt: skip

    def offer_grpc(
        self, model: str, request: bytes, response: bytes, latency_s: float, rate: float | None = None
    ) -> None:
        """A gRPC ModelInfer answered OK: the serialized request and response and the edge's latency."""
        size = len(request) + len(response)
        if self._take(size, rate):
            self.queue.append(("grpc", size, model, request, None, ((response, None, latency_s),)))

    def offer_pair(
        self,
        protocol: str,
        model: str,
        request: bytes,
        request_header_length: int | None,
        answers: tuple[tuple[bytes, int | None, float], tuple[bytes, int | None, float]],
    ) -> None:
        """A shadowed request (``protocol`` "http" or "grpc") and both releases' answers to it (each: the body, its
        JSON header length or None, the latency): always taken while the queue has room, so the monitor can
        compare the two releases on the same rows."""
        size = len(request) + sum(len(a[0]) for a in answers)
        if self._take(size, 1.0):
            self.queue.append((protocol, size, model, request, request_header_length, answers))

    # ---- the sampler's thread ----
    def start(self) -> EdgeSampler:
        if self.url is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edge-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (one last drain, unless the monitor is down) and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        items = []
        queue = self.queue
        while queue:
            item = queue.popleft()
            items.append(item)
            self._bytes_out += item[1]
        if not items:
            return
        if time.monotonic() < self._down_until:
            self.counts["dropped_monitor_down"] += len(items)
            return
        groups: dict[tuple[str, str], _Rows] = {}
        for i, item in enumerate(items):
            if i and i % self.slice_items == 0:
                # a pause between slices of decoding: the edge's event loop shares this process's GIL, and waits
                # at most one slice (~2 ms) for it, not a whole drain
                time.sleep(self.pause_s)
            try:
                self._decode(item, groups)
            except Exception as exc:  # noqa: BLE001 - any body a caller could send must cost a sample, never the thread
                self.counts["dropped_undecodable"] += 1
                log.debug("sample not decoded: %s", exc)
        for (model, release), rows in groups.items():
            self._post(model, release, rows)

    def _release(self, model: str, release: str) -> _Release | None:
        """The release's spec snapshot (read once per release); None when it is not one of ``model``'s."""
        if release not in self._releases:
            from inferline.release.registry import Registry, RegistryError

            pipeline, _, version = release.partition(":")
            info = None
            if pipeline == model and version.isdigit():
                try:
                    files = Registry(self.repository, pipeline).release_files(int(version))
                    spec = read_spec(files["spec"])
                    dtypes = {c.name: _WIRE.get(c.triton_dtype) for c in spec.input_columns if c.kind != "tensor"}
                    regression = spec.task == "regression"
                    wanted = ("prediction",) if regression else tuple(t.name for t in model_outputs(spec))
                    tensors = frozenset(c.name for c in spec.tensor_columns)
                    info = _Release(spec, dtypes, wanted, tensors, regression)
                except (RegistryError, KeyError, OSError, ValueError) as exc:
                    log.warning("release %s: no spec snapshot to read samples with (%s)", release, exc)
            self._releases[release] = info
        return self._releases[release]

    def _decode(self, item: tuple[Any, ...], groups: dict[tuple[str, str], _Rows]) -> None:
        protocol, _, model, req, req_len, answers = item
        pair = -1
        if len(answers) > 1:
            pair = self._pairs
        for res, res_len, latency in answers:
            if protocol == "http":
                inputs, outputs = http_index(req, req_len, res, res_len)
            else:
                inputs, outputs = grpc_pair(req, res)
            n = self._decode_answer(model, inputs, outputs, latency, pair, groups)
        if pair >= 0:
            self._pairs += n

    def _decode_answer(
        self,
        model: str,
        inputs: dict[str, Any],
        outputs: dict[str, Any],
        latency: float,
        pair: int,
        groups: dict[tuple[str, str], _Rows],
    ) -> int:
        if "release" not in outputs or "status" not in outputs:
            raise Undecodable("the response has no status or release (the caller asked for other outputs)")
        status = _texts(tensor_values(outputs["status"]))
        releases = set(_texts(tensor_values(outputs["release"])))
        n = len(status)
        if len(releases) != 1:
            raise Undecodable(f"rows answered by {len(releases)} releases in one request")
        release = releases.pop()
        info = self._release(model, release)
        if info is None:
            raise Undecodable(f"release {release!r} of model {model!r} has no readable spec")
        decoded: dict[str, list[Any] | np.ndarray] = {}
        for name in info.wanted:
            if name not in outputs:
                raise Undecodable(f"the response has no {name!r} (the caller asked for other outputs)")
            decoded[name] = values = tensor_values(outputs[name])
            if n == 0 or len(values) % n:
                raise Undecodable(f"output {name!r} has {len(values)} values for {n} rows")
        columns: dict[str, list[Any] | np.ndarray] = {}
        for c in info.columns:
            if c not in inputs:
                raise Undecodable(f"the request has no column {c!r}")
            columns[c] = values = tensor_values(inputs[c])
            if len(values) != n:
                raise Undecodable(f"column {c!r} has {len(values)} values for {n} rows")
        rows = groups.get((model, release))
        if rows is None:  # appended only once every column and output was checked: a group never holds ragged rows
            rows = groups[(model, release)] = _Rows(
                {c: [] for c in info.columns}, {w: [] for w in info.wanted}, [], [], []
            )
        for c, values in columns.items():
            rows.columns[c].extend(values.tolist() if isinstance(values, np.ndarray) else values)
        for w, values in decoded.items():
            rows.outputs[w].extend(values.tolist() if isinstance(values, np.ndarray) else values)
        rows.status.extend(status)
        rows.pairs.extend(range(pair, pair + n) if pair >= 0 else [-1] * n)
        rows.latency_s.append(float(latency))
        rows.requests += 1
        return n

    def _post(self, model: str, release: str, rows: _Rows) -> None:
        info = self._releases[release]
        assert info is not None
        total = len(rows.status)
        columns = {}
        for c, flat in rows.columns.items():
            dtype = info.columns[c]
            if dtype is object:
                columns[c] = np.empty(total, dtype=object)
                columns[c][:] = flat
            else:
                columns[c] = np.asarray(flat, dtype=dtype)
        outputs = {w: np.asarray(flat).reshape(total, -1) for w, flat in rows.outputs.items()}
        for start in range(0, total, self.max_rows_per_post):
            cut = slice(start, start + self.max_rows_per_post)
            payload = sample_payload(
                {c: v[cut] for c, v in columns.items()},
                None if info.regression else outputs["probabilities"][cut],
                None if info.regression else outputs["predicted_class"][cut],
                rows.status[cut],
                release,
                model,
                rows.latency_s if start == 0 else [],
                source="serving",
                prediction=outputs["prediction"][cut].reshape(-1) if info.regression else None,
                skip_columns=info.tensor_columns,
                latency_side="edge",  # measured at the edge: from the request's arrival to Triton's answer
            )
            pairs = rows.pairs[cut]
            if any(p >= 0 for p in pairs):
                payload["pairs"] = pairs
            share = rows.requests if start == 0 else 0  # requests are counted with the post that carries them
            if time.monotonic() < self._down_until:
                self.counts["dropped_monitor_down"] += share
                continue
            try:
                post_json(self.url or "", payload, self.timeout_s, self.key)
            except urllib.error.HTTPError as exc:
                outcome = "dropped_monitor_refused" if exc.code < 500 else "dropped_monitor_down"
                self.counts[outcome] += share
                if exc.code >= 500 or exc.code in (401, 403):  # down, or a key that will not change by itself
                    self._back_off(exc)
                elif time.monotonic() >= self._quiet_until.get((model, exc.code), 0.0):
                    # e.g. 400: the monitor watches another pipeline; said once a minute, not every flush
                    self._quiet_until[(model, exc.code)] = time.monotonic() + 60.0
                    log.warning("monitor at %s refused samples of %s: %s %s", self.url, model, exc.code, _said(exc))
                continue
            except (OSError, ValueError) as exc:  # refused, timed out, reset, an answer that is not JSON
                self.counts["dropped_monitor_down"] += share
                self._back_off(exc)
                continue
            self._failures = 0
            self.counts["sent"] += share
            self.rows_sent += len(rows.status[cut])

    def _back_off(self, exc: Exception) -> None:
        self._failures += 1
        wait = self.backoff.delay(self._failures - 1)
        self._down_until = time.monotonic() + wait
        reason = f"{exc.code} {_said(exc)}" if isinstance(exc, urllib.error.HTTPError) else str(exc)
        log.warning("monitor at %s did not take samples (%s); dropping samples for %.0fs", self.url, reason, wait)


def _said(exc: urllib.error.HTTPError) -> str:
    """The monitor's one-line reason (its JSON ``error``), else the HTTP reason phrase."""
    try:
        return str(json.loads(exc.read()).get("error", exc.reason))[:300]
    except (ValueError, OSError, AttributeError):
        return str(exc.reason)
