"""The monitor: what the served model is doing now, compared with what it did at training time.

``Monitor`` holds sliding windows and is fed from four sides:

- **samples** (``POST /v1/samples``): raw request rows with the outputs that answered them, sent by the served
  path itself (``serving.edge_tap.EdgeSampler``: the HTTP and gRPC edges hand it a sample of what every caller sent
  and was answered), by ``serving.tap.MonitorTap`` from the serving client, or by the batch job. The
  monitor computes the tabular features itself with the release's own feature state and the shared kernels, so
  what it compares with the reference profile is exactly what the model saw. Tensor columns (images, token ids)
  are not sent and not featurized: feature drift covers the tabular features only, and the model's outputs
  (``monitor.outputs``) stand in for what the tensors did.
- **labels** (``POST /v1/labels``): delayed ground truth ``<id column>, label`` (a class, or a number for
  regression), joined to the logged answers (``monitor.labels``); a pipeline without an id column cannot join.
- **Triton**: its metrics endpoint (request successes and failures per model and version) and its trace files
  (per-request server timings, written by tritonserver when started with ``trace_dir``; Triton 2.51 exports
  latency only as counters and summaries, which cannot be merged across servers or windows).
- **utilization**: NVML and psutil (``monitor.utilization``).

Latency is kept in mergeable log-bucket histograms (``monitor.sketch.LogHistogram``): per time slice, merged over
the window for percentiles, and cumulatively for the exported Prometheus histogram. Drift is computed over the
most recent ``drift_window_rows`` accepted rows of the current release against the reference profile published
with that release (``monitor.drift``): every tabular feature, and every output of the task (each class's
probability and the predicted class, or the regression's prediction). ``/metrics`` serves everything in
Prometheus' text format.

Libraries: aiohttp serves HTTP (``MonitorServer``: its own thread and event loop, body size limit, read and header
timeouts, JSON errors); prometheus-client builds the exposition; numpy and the shared feature contract
(``features``) featurize samples; the drift tests are ``monitor.drift``'s (scipy). Ingestion (``POST /v1/samples``
and ``/v1/labels``) needs ``Authorization: Bearer <ingest key>`` (``serving.secrets.monitor_key``, a file with mode
0600 in the serving work directory): callers of the edge cannot feed the monitor.

Samples body (``POST /v1/samples``, what ``serving.tap.sample_payload`` builds)::

    {"release": "<pipeline>:<version>", "model": "...", "source": "serving" | "batch",
     "columns": {"<tabular input column>": [value per row], ...},
     "status": ["ok" | reason, ...], "latency_s": [seconds per request, ...], "latency_side": "client" | "edge",
     "probabilities": [[p per class], ...], "predicted_class": [class index, ...]     (classification)
     "prediction": [value, ...]                                                       (regression)}
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inferline.core.reference import CategoricalReference, MissingReference, NumericReference, bin_counts
from inferline.core.sketch import LogHistogram, histogram_quantile
from inferline.features.contract import Contract, compile_contract
from inferline.features.spec import Column, PipelineSpec, load_pipeline, read_spec
from inferline.features.state import FeatureState
from inferline.features.wire import from_json_columns
from inferline.monitor.drift import FeatureDrift, drift_report
from inferline.monitor.labels import PredictionLog
from inferline.monitor.outputs import (
    PREDICTED_CLASS,
    OutputReferences,
    SamplesError,
    class_names,
    output_references,
    parse_outputs,
)
from inferline.monitor.performance import FIGURES, estimated_performance, realized_enough, realized_performance
from inferline.monitor.rollback import RollbackController
from inferline.monitor.rules import RULE_STATES, Evaluation, RuleEngine
from inferline.monitor.utilization import Utilization, UtilizationSampler
from inferline.release.registry import Registry, RegistryError
from inferline.serving.gateway import HeaderDeadline
from inferline.training.profile import missing_columns

__all__ = [
    "INGEST_ROUTES",
    "LATENCY_BUCKETS",
    "LATENCY_BUCKET_ERROR",
    "Monitor",
    "MonitorConfig",
    "MonitorServer",
    "ServerLimits",
    "read_traces",
]

log = logging.getLogger("inferline.monitor")
QUANTILES = (0.5, 0.95, 0.99)
# where a latency was measured: Triton's traces (server), the edge's sampler (edge), a client's tap (client)
LATENCY_SIDES = ("client", "edge")
# The exported histogram's ``le`` bounds: every 4th boundary of the latency sketch between 100 us and 2 min, so the
# cumulative counts at them are exact (``LogHistogram.cumulative_counts``) and consecutive bounds differ by a factor
# of gamma**4 = 1.0833. PromQL's ``histogram_quantile`` over them, for one monitor or summed over many, is within
# LATENCY_BUCKET_ERROR (8.3 %) relative error of the exact quantile of the requests.
LATENCY_BUCKETS: tuple[float, ...] = tuple(float(b) for b in LogHistogram().boundaries[::4] if 1e-4 <= b <= 120.0)
LATENCY_BUCKET_ERROR = LATENCY_BUCKETS[1] / LATENCY_BUCKETS[0] - 1.0


@dataclass
class MonitorConfig:
    repository: Path
    pipeline: str  # the pipeline whose current release is watched (its spec, reference profile, models)
    triton_metrics_url: str | None = None  # http://127.0.0.1:8002/metrics
    trace_dir: Path | None = None
    server_pid: int | None = None
    host: str = "127.0.0.1"
    port: int = 9400
    interval_s: float = 5.0  # scrape, sample and snapshot period
    latency_window_s: float = 60.0
    drift_window_rows: int = 5_000
    label_window_rows: int = 50_000
    alpha: float = 0.01  # family-wise false-alarm rate of one drift evaluation (Bonferroni over features)
    min_samples: int = 500
    nvml: bool = True
    history: int = 720


def read_traces(path: Path) -> list[tuple[str, str, float]]:
    """One Triton trace file (a JSON list at level TIMESTAMPS) -> ``(model, version, seconds)`` per traced request,
    from its REQUEST_START to its REQUEST_END."""
    entries = json.loads(path.read_text())
    models: dict[int, tuple[str, str]] = {}
    stamps: dict[int, dict[str, int]] = {}
    for e in entries:
        if "model_name" in e:
            models[e["id"]] = (str(e["model_name"]), str(e.get("model_version", "")))
        for t in e.get("timestamps", []):
            stamps.setdefault(e["id"], {})[t["name"]] = int(t["ns"])
    out = []
    for trace_id, (model, version) in models.items():
        ts = stamps.get(trace_id, {})
        if "REQUEST_START" in ts and "REQUEST_END" in ts:
            out.append((model, version, (ts["REQUEST_END"] - ts["REQUEST_START"]) / 1e9))
    return out


class _SlicedHistograms:
    """Latency histograms per key, one per time slice inside the window, plus a cumulative one per key."""

    def __init__(self, window_s: float, slice_s: float) -> None:
        self.window_s, self.slice_s = window_s, slice_s
        self.slices: dict[tuple[str, ...], deque[tuple[float, LogHistogram]]] = {}
        self.total: dict[tuple[str, ...], LogHistogram] = {}

    def add(self, key: tuple[str, ...], seconds: Iterable[float], now: float) -> None:
        values = np.asarray(list(seconds), dtype=np.float64)
        if values.size == 0:
            return
        q = self.slices.setdefault(key, deque())
        start = now - now % self.slice_s
        if not q or q[-1][0] != start:
            q.append((start, LogHistogram()))
        q[-1][1].add_many(values)
        self.total.setdefault(key, LogHistogram()).add_many(values)

    def window(self, now: float) -> dict[tuple[str, ...], LogHistogram]:
        out = {}
        for key, q in self.slices.items():
            while q and q[0][0] + self.slice_s <= now - self.window_s:  # slices wholly before the window
                q.popleft()
            if q:
                merged = LogHistogram()
                for _, h in q:
                    merged += h
                out[key] = merged
        return out


def _latency_summary(h: LogHistogram) -> dict[str, Any]:
    """A window's count and percentiles twice: ``p50``.. from the sketch (within its 1 %), and under
    ``histogram`` the figures PromQL's ``histogram_quantile`` gives from the exported buckets (within
    LATENCY_BUCKET_ERROR), which the alert rules read so that they agree with their Prometheus twins."""
    cumulative = [*h.cumulative_counts(LATENCY_BUCKETS), h.count]
    return {
        "count": h.count,
        **{f"p{round(q * 100)}": h.quantile(q) for q in QUANTILES},
        "histogram": {f"p{round(q * 100)}": histogram_quantile(q, LATENCY_BUCKETS, cumulative) for q in QUANTILES},
    }


def _null_mask(values: np.ndarray) -> np.ndarray:
    """Nulls of one wire column (``features.wire``): an empty BYTES element, a NaN float; INT64 has none."""
    if values.dtype == object:
        return np.fromiter((len(v) == 0 for v in values), bool, len(values))
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.zeros(len(values), bool)


def tabular_columns(spec: PipelineSpec) -> tuple[Column, ...]:
    """The input columns samples carry: every input column but the tensor ones."""
    return tuple(c for c in spec.input_columns if c.kind != "tensor")


def _rows_of(payload: dict[str, Any], arrays: dict[str, np.ndarray]) -> int:
    """The rows of a samples body that sends no status: its outputs', else its columns'."""
    for key in ("prediction", PREDICTED_CLASS, "probabilities"):
        if isinstance(payload.get(key), list):
            return len(payload[key])
    return len(next(iter(arrays.values()))) if arrays else 0


def _tabular_contract(spec: PipelineSpec, state: FeatureState) -> Contract | None:
    """The release's contract over its tabular columns only (None when it has no tabular features): the monitor
    featurizes what samples carry, and they carry no tensor columns. The state is checked against the release's
    full spec first; the tabular view is the same columns, rules and features, less the tensor columns."""
    state.check(spec)
    if not spec.features:
        return None
    if not spec.tensor_columns:
        return compile_contract(spec, state)
    view = replace(spec, columns=tuple(c for c in spec.columns if c.kind != "tensor"))
    return compile_contract(view, replace(state, feature_hash=view.feature_hash()))


@dataclass(frozen=True)
class _References:
    """A release, loaded once: its spec snapshot, fitted state and tabular contract, and the reference profile
    every drift evaluation of its window compares against."""

    spec: PipelineSpec
    state: FeatureState
    contract: Contract | None
    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    outputs: OutputReferences
    reference_mae: float | None  # the release's holdout MAE (regression), the baseline of its label errors
    missing: dict[str, MissingReference] = field(default_factory=dict)  # raw column -> training nulls
    calibration_error: float | None = None  # a classifier's holdout calibration error, measured at training time


@dataclass(frozen=True)
class _Chunk:
    """Accepted rows of one payload: standardized numeric features [n, k], category labels [n, j], output values
    [n, m] (class probabilities, or the regression's prediction) and the predicted class [n] (-1 for regression)."""

    numeric: np.ndarray
    categorical: np.ndarray
    values: np.ndarray
    predicted: np.ndarray

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def tail(self, rows: int) -> _Chunk:
        cut = len(self) - rows
        return _Chunk(self.numeric[cut:], self.categorical[cut:], self.values[cut:], self.predicted[cut:])


@dataclass
class _ReleaseWindow:
    """The most recent accepted rows of one release, at most ``limit``."""

    chunks: deque[_Chunk] = field(default_factory=deque)
    rows: int = 0
    last_seen: float = 0.0
    # every row received (accepted or refused): (rows, nulls per missing column), the most recent ~limit rows
    received: deque[tuple[int, np.ndarray]] = field(default_factory=deque)
    received_rows: int = 0
    _joined: _Chunk | None = None  # the chunks concatenated, kept until the next add (drift and the estimate share it)

    def add_received(self, rows: int, nulls: np.ndarray, limit: int) -> None:
        self.received.append((rows, nulls))
        self.received_rows += rows
        while self.received and self.received_rows - self.received[0][0] >= limit:
            self.received_rows -= self.received.popleft()[0]

    def nulls(self) -> tuple[np.ndarray | None, int]:
        """Nulls per missing column over the received rows, and those rows."""
        if not self.received:
            return None, 0
        return np.sum([n for _, n in self.received], axis=0), self.received_rows

    def add(self, chunk: _Chunk, limit: int, now: float) -> None:
        self._joined = None
        self.chunks.append(chunk)
        self.rows += len(chunk)
        self.last_seen = now
        while self.rows - len(self.chunks[0]) >= limit:
            self.rows -= len(self.chunks.popleft())
        if self.rows > limit:  # trim the oldest chunk to the limit exactly
            self.chunks[0] = self.chunks[0].tail(len(self.chunks[0]) - (self.rows - limit))
            self.rows = limit

    def concatenated(self) -> _Chunk:
        """The window's rows as one chunk, built once per change of the window; its arrays are read-only (every
        caller shares them)."""
        if self._joined is None:
            parts = list(self.chunks)
            arrays = [
                np.concatenate([getattr(c, name) for c in parts])
                for name in ("numeric", "categorical", "values", "predicted")
            ]
            for a in arrays:
                a.setflags(write=False)
            self._joined = _Chunk(*arrays)
        return self._joined


class Monitor:
    def __init__(
        self, config: MonitorConfig, rules: RuleEngine | None = None, controller: RollbackController | None = None
    ) -> None:
        self.config = config
        self.rules = rules
        self.controller = controller
        self.last_evaluation: Evaluation | None = None
        self.registry = Registry(Path(config.repository), config.pipeline)
        self.spec: PipelineSpec = self._watched_spec()
        self.lock = threading.Lock()
        self.latency = _SlicedHistograms(config.latency_window_s, config.latency_window_s / 12)
        self.windows: dict[str, _ReleaseWindow] = {}
        self.rows_total: dict[tuple[str, str], int] = {}  # (release, status) -> rows
        self.sources: dict[str, int] = {}  # "serving" | "batch" -> rows received
        self.labels = PredictionLog(self.spec, config.label_window_rows)
        self.triton: dict[tuple[str, str], dict[str, float]] = {}  # (model, version) -> counters at last scrape
        self.triton_window: dict[tuple[str, str], deque[tuple[float, float, float]]] = {}
        self.triton_up = 0
        self.traces_read: set[str] = set()
        self.sampler = UtilizationSampler(config.server_pid, nvml=config.nvml)
        self.utilization: Utilization = self.sampler.sample()
        self.history: deque[dict[str, Any]] = deque(maxlen=config.history)
        self._releases: dict[str, _References] = {}
        self._drift: list[FeatureDrift] = []
        self._drift_release: str | None = None
        self._prediction_histograms: dict[str, Any] = {}
        # rows and labels received so far: the performance estimate is recomputed only when they change, not on
        # every /metrics scrape and status read (it concatenates the window and rescans the joined labels)
        self._generation = 0
        self._performance: tuple[tuple[str | None, int], dict[str, Any]] | None = None

    def _watched_spec(self) -> PipelineSpec:
        """The current release's spec snapshot; the live pipeline module only while nothing is published."""
        try:
            files = self.registry.release_files()
        except RegistryError:
            return load_pipeline(self.config.pipeline)
        return read_spec(files["spec"]) if "spec" in files else load_pipeline(self.config.pipeline)

    # --- release artifacts -------------------------------------------------------------------------------
    def _release(self, release: str) -> _References:
        """The release ``release`` (``fraud:2``): its spec snapshot, feature state, tabular contract and reference
        profile, loaded and compiled once."""
        if release not in self._releases:
            pipeline, _, version = release.partition(":")
            if pipeline != self.spec.name or not version.isdigit():
                raise SamplesError(
                    f"samples name release {release!r}, but this monitor watches pipeline {self.spec.name!r}; "
                    f"expected '{self.spec.name}:<version>'"
                )
            files = self.registry.release_files(int(version))
            spec = read_spec(files["spec"]) if "spec" in files else self.spec
            state = FeatureState.load(files["feature_state"])
            contract = _tabular_contract(spec, state)  # this monitor's own: it remembers categorical verdicts
            profile = self.registry.reference_profile(int(version))
            metrics = self.registry.manifest(int(version)).metrics
            mae = metrics.get("mae") if spec.task == "regression" else None
            self._releases[release] = _References(
                spec=spec,
                state=state,
                contract=contract,
                numeric={name: NumericReference.from_dict(profile["numeric"][name]) for name in state.numeric},
                categorical={
                    name: CategoricalReference.from_dict(profile["categorical"][name]) for name in state.categorical
                },
                outputs=output_references(profile, spec),
                reference_mae=float(mae) if isinstance(mae, int | float) and mae > 0 else None,
                missing={c: MissingReference.from_dict(d) for c, d in (profile.get("missing") or {}).items()},
                calibration_error=(profile.get("calibration") or {}).get("error"),
            )
        return self._releases[release]

    # --- ingestion ---------------------------------------------------------------------------------------
    def ingest_samples(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Rows a release answered (the body is described in the module docstring). ``columns`` holds the raw
        tabular request columns as sent on the wire (strings as text, nulls as empty strings; tensor columns are
        neither needed nor read), the outputs are the task's (``monitor.outputs``), ``status`` one per row,
        ``release`` one for all rows, ``latency_s`` optional (one per request, measured where ``latency_side`` says:
        ``client``, the default, or ``edge``)."""
        if not isinstance(payload, dict) or "release" not in payload:
            raise SamplesError("samples need a JSON object with 'release', 'columns', 'status' and the outputs")
        release = str(payload["release"])
        side = payload.get("latency_side", "client")
        if side not in LATENCY_SIDES:
            raise SamplesError(f"'latency_side' is {side!r}; expected one of {', '.join(LATENCY_SIDES)}")
        refs = self._release(release)
        spec, state = refs.spec, refs.state
        columns = payload.get("columns", {})
        arrays = from_json_columns(columns, tabular_columns(spec))
        status = np.asarray(payload["status"], dtype=object) if "status" in payload else None
        n = len(status) if status is not None else _rows_of(payload, arrays)
        status = np.full(n, "ok", dtype=object) if status is None else status
        lengths = {name: len(values) for name, values in arrays.items() if len(values) != n}
        if lengths:
            raise SamplesError(
                f"samples hold {n} rows (one status each), but columns {lengths} differ; one value per row"
            )
        ok = status == "ok"
        outputs = parse_outputs(payload, spec, ok)
        if refs.contract is not None:
            features, _ = refs.contract.featurize(arrays)
            numeric = features.numeric
            categorical = np.empty((n, len(state.categorical)), dtype=object)
            for j, name in enumerate(state.categorical):
                categorical[:, j] = state.category_labels(name, features.categorical[:, j])
        else:  # no tabular features (a tensor pipeline): only the outputs are watched
            numeric = np.zeros((n, 0), np.float32)
            categorical = np.zeros((n, 0), object)
        predicted = outputs.predicted_class if outputs.predicted_class is not None else np.full(n, -1, np.int64)
        chunk = _Chunk(numeric[ok], categorical[ok], outputs.values[ok], predicted[ok])
        answers = outputs.values[ok, 0] if outputs.predicted_class is None else predicted[ok]
        nulls = np.array([int(_null_mask(arrays[c.name]).sum()) for c in missing_columns(spec)], np.int64)
        now = time.time()
        model = str(payload.get("model", self.spec.name))
        with self.lock:
            self._generation += 1
            window = self.windows.setdefault(release, _ReleaseWindow())
            window.add(chunk, self.config.drift_window_rows, now)
            window.add_received(n, nulls, self.config.drift_window_rows)
            source = str(payload.get("source", "serving"))
            self.sources[source] = self.sources.get(source, 0) + n
            for s, count in zip(*np.unique(status.astype(str), return_counts=True), strict=True):
                key = (release, str(s))
                self.rows_total[key] = self.rows_total.get(key, 0) + int(count)
            if spec.id_column is not None:
                scores = outputs.values[ok] if outputs.predicted_class is not None else None  # realized ROC AUC
                self.labels.log(arrays[spec.id_column.name][ok], answers, release, scores)
            if payload.get("latency_s"):
                self.latency.add((side, model, release.partition(":")[2]), payload["latency_s"], now)
        return {"accepted": n, "scored_ok": int(ok.sum()), "release": release}

    def ingest_labels(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Delayed ground truth (``monitor.labels``): ``labels`` = [{``<id column>``: ..., ``label``: class index or
        name, or a number for regression}, ...]; refused when the pipeline has no id column."""
        with self.lock:
            self._generation += 1
            return self.labels.join(payload)

    # --- periodic work -----------------------------------------------------------------------------------
    def _scrape_triton(self, now: float) -> None:
        url = self.config.triton_metrics_url
        if not url:
            return
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                text = r.read().decode()
        except (urllib.error.URLError, OSError) as exc:
            self.triton_up = 0
            log.warning("Triton metrics at %s unreachable: %s", url, exc)
            return
        self.triton_up = 1
        current: dict[tuple[str, str], dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            if family.name not in ("nv_inference_request_success", "nv_inference_request_failure"):
                continue
            outcome = "success" if family.name.endswith("success") else "failure"
            for sample in family.samples:
                key = (sample.labels.get("model", ""), sample.labels.get("version", ""))
                current.setdefault(key, {})[outcome] = sample.value
        for key, counts in current.items():
            before = self.triton.get(key, {})
            d_ok = counts.get("success", 0.0) - before.get("success", 0.0)
            d_fail = counts.get("failure", 0.0) - before.get("failure", 0.0)
            q = self.triton_window.setdefault(key, deque())
            q.append((now, max(d_ok, 0.0), max(d_fail, 0.0)))
            while q and q[0][0] < now - self.config.latency_window_s:
                q.popleft()
        self.triton = current

    def _read_traces(self, now: float) -> None:
        trace_dir = self.config.trace_dir
        if trace_dir is None or not Path(trace_dir).is_dir():
            return
        for path in sorted(Path(trace_dir).glob("trace.json.*")):
            if path.name in self.traces_read or not re.fullmatch(r"trace\.json\.\d+", path.name):
                continue
            try:
                traced = read_traces(path)
            except (ValueError, OSError):
                continue  # still being written: read it on the next tick
            self.traces_read.add(path.name)
            by_key: dict[tuple[str, ...], list[float]] = {}
            for model, version, seconds in traced:
                by_key.setdefault(("server", model, version), []).append(seconds)
            for key, values in by_key.items():
                self.latency.add(key, values, now)

    def _current_release(self) -> str | None:
        live = [(w.last_seen, r) for r, w in self.windows.items() if w.rows]
        return max(live)[1] if live else None

    def evaluate_drift(self) -> tuple[str | None, list[FeatureDrift], dict[str, Any]]:
        """Drift of the most recently served release's window against its reference profile: every tabular
        feature and every output test (``monitor.outputs``), with the binned histogram of each numeric output."""
        with self.lock:
            release = self._current_release()
            if release is None:
                return None, [], {}
            w = self.windows[release].concatenated()
            nulls, received = self.windows[release].nulls()
        refs = self._release(release)
        missing = {}
        if nulls is not None:
            for j, c in enumerate(missing_columns(refs.spec)):
                if c.name in refs.missing:
                    missing[c.name] = (refs.missing[c.name], int(nulls[j]), received)
        state = refs.state
        outputs: dict[str, tuple[NumericReference | CategoricalReference, Any]] = {
            name: (ref, w.values[:, column]) for name, (column, ref) in refs.outputs.numeric.items()
        }
        if refs.outputs.predicted_class is not None:
            outputs[PREDICTED_CLASS] = (refs.outputs.predicted_class, class_names(refs.spec.classes, w.predicted))
        histograms = {
            name: {
                "edges": ref.edges,
                "reference_counts": list(ref.counts),
                "current_counts": [int(c) for c in bin_counts(w.values[:, column], ref.edges)],
            }
            for name, (column, ref) in refs.outputs.numeric.items()
        }
        report = drift_report(
            numeric={name: (refs.numeric[name], w.numeric[:, i]) for i, name in enumerate(state.numeric)},
            categorical={
                name: (refs.categorical[name], w.categorical[:, j]) for j, name in enumerate(state.categorical)
            },
            outputs=outputs,
            alpha=self.config.alpha,
            min_samples=self.config.min_samples,
            missing=missing,
        )
        return release, report, histograms

    def class_errors(self) -> dict[str, dict[str, float]]:
        """Per class over the joined window: error rate among rows predicted as the class, precision, recall."""
        with self.lock:
            return self.labels.class_errors()

    def performance_estimate(self) -> dict[str, Any]:
        """A classifier's label-free performance estimate (``monitor.performance``, CBPE) over the drift window of
        the release now served, the realized figures over its joined labels when enough have joined (at least
        ``MIN_REALIZED_ROWS``, both classes of a binary task), and the calibration error the release measured on
        its holdout at training time: ``{"release", "rows", "estimated": {"roc_auc", "precision", "recall"} or
        None, "realized": {...} or None, "realized_rows", "calibration_error"}``; a regression's has no rows."""
        if self.spec.task == "regression":
            empty = {"rows": 0, "estimated": None, "realized": None, "realized_rows": 0, "calibration_error": None}
            return {"release": None, **empty}
        with self.lock:
            release = self._current_release()
            key = (release, self._generation)
            if self._performance is not None and self._performance[0] == key:
                return dict(self._performance[1])
            window = self.windows[release].concatenated() if release is not None else None
            labeled = self.labels.scored(release)
        calibration = self._release(release).calibration_error if release is not None else None
        realized = None
        if realized_enough(labeled[2], len(self.spec.classes)):
            realized = realized_performance(*labeled)
        estimated = None
        if window is not None and len(window):
            estimated = estimated_performance(window.values, window.predicted)
        result = {
            "release": release,
            "rows": len(window) if window is not None else 0,
            "estimated": estimated,
            "realized": realized,
            "realized_rows": len(labeled[2]),
            "calibration_error": float(calibration) if calibration is not None else None,
        }
        with self.lock:
            self._performance = (key, result)
        return dict(result)

    def regression_errors(self) -> dict[str, Any]:
        """MAE, RMSE and mean error over the joined rows of the release now served (empty for a classifier), with
        the release's holdout MAE (``reference_mae``) and their ratio when the release recorded one."""
        if self.spec.task != "regression":
            return {}
        with self.lock:
            release = self._current_release()
            errors = self.labels.regression_errors(release).as_dict()
        reference = self._release(release).reference_mae if release is not None else None
        errors["reference_mae"] = reference
        errors["mae_ratio"] = errors["mae"] / reference if reference else None
        return errors

    def pipeline_summary(self) -> dict[str, Any]:
        """What the rules need to know about the watched pipeline to tell 'no data yet' from 'does not apply'."""
        spec = self.spec
        return {
            "name": spec.name,
            "task": spec.task,
            "classes": list(spec.classes),
            "tabular_features": len(spec.features),
            "tensor_columns": [c.name for c in spec.tensor_columns],
            "labels": spec.id_column is not None,
        }

    def tick(self) -> dict[str, Any]:
        """One period: scrape Triton, read new traces, sample utilization, evaluate drift, keep a snapshot."""
        now = time.time()
        self._scrape_triton(now)
        self._read_traces(now)
        self.utilization = self.sampler.sample()
        release, drift, histogram = self.evaluate_drift()
        with self.lock:
            self._drift, self._drift_release, self._prediction_histograms = drift, release, histogram
        snapshot = self.status(now)
        if self.rules is not None:
            evaluation = self.rules.evaluate(snapshot, now)
            if evaluation.new_incident is not None and self.controller is not None:
                self.controller.handle(evaluation.new_incident, now)
            self.last_evaluation = evaluation
            snapshot["rules"] = self._rules_status()
        self.history.append(snapshot)
        return snapshot

    def _rules_status(self) -> dict[str, Any]:
        ev, engine = self.last_evaluation, self.rules
        if ev is None or engine is None:
            return {}
        return {
            "states": ev.states,
            "values": ev.values,
            "incidents": [asdict(i) for i in engine.incidents],
            "rollbacks": self.controller.rollbacks if self.controller else 0,
        }

    def status(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        with self.lock:
            window = self.latency.window(now)
            triton = {
                f"{m}:{v}": {"success": sum(x[1] for x in q), "failure": sum(x[2] for x in q)}
                for (m, v), q in self.triton_window.items()
            }
            rows = {f"{r}|{s}": n for (r, s), n in self.rows_total.items()}
            sources = dict(self.sources)
            drift, release, histograms = list(self._drift), self._drift_release, dict(self._prediction_histograms)
            labels = {"joined": len(self.labels.joined), "unmatched": self.labels.unmatched}
            window_rows = {r: w.rows for r, w in self.windows.items()}
        return {
            "at": now,
            "latency": {"|".join(key): _latency_summary(h) for key, h in window.items() if h.count},
            "triton": {"up": self.triton_up, "scraped": bool(self.config.triton_metrics_url), "window": triton},
            "rows": rows,
            "sources": sources,
            "drift": {
                "release": release,
                "window_rows": window_rows,
                "features": [d.as_dict() for d in drift],
                "prediction_histograms": histograms,
            },
            "pipeline": self.pipeline_summary(),
            "classes": self.class_errors(),
            "performance": self.performance_estimate(),
            "regression": self.regression_errors(),
            "labels": labels,
            "utilization": self.utilization.as_dict(),
            "rules": self._rules_status(),
        }

    # --- Prometheus ----------------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        with self.lock:
            totals = {k: h for k, h in self.latency.total.items()}
            drift = list(self._drift)
            rows = dict(self.rows_total)
            window_rows = {r: w.rows for r, w in self.windows.items()}
        hist = HistogramMetricFamily(
            "inferline_request_latency_seconds",
            "Request latency since the monitor started (side: server from Triton traces, edge from the edge's samples, "
            "client from a client's tap)",
            labels=["side", "model", "version"],
        )
        for (side, model, version), h in sorted(totals.items()):
            cumulative = h.cumulative_counts(LATENCY_BUCKETS)
            buckets = [(str(b), float(c)) for b, c in zip(LATENCY_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", float(h.count)))
            hist.add_metric([side, model, version], buckets, h.sum)
        yield hist
        rows_metric = CounterMetricFamily(
            "inferline_monitored_rows",
            "Rows received by the monitor, by release and status",
            labels=["release", "status"],
        )
        for (release, status), n in sorted(rows.items()):
            rows_metric.add_metric([release, status], n)
        yield rows_metric
        wr = GaugeMetricFamily("inferline_drift_window_rows", "Accepted rows in the drift window", labels=["release"])
        for release, n in sorted(window_rows.items()):
            wr.add_metric([release], n)
        yield wr
        detected = GaugeMetricFamily(
            "inferline_drift_detected", "1 if the feature drifted from its reference", labels=["feature", "kind"]
        )
        state = GaugeMetricFamily(
            "inferline_drift_state", "Drift evaluation state (1 for the current one)", labels=["feature", "state"]
        )
        stats = GaugeMetricFamily(
            "inferline_drift_statistic", "Drift statistics per feature", labels=["feature", "statistic"]
        )
        pvalue = GaugeMetricFamily("inferline_drift_p_value", "p-value of the drift test", labels=["feature", "test"])
        for d in drift:
            detected.add_metric([d.feature, d.kind], 1.0 if d.state == "drift" else 0.0)
            for s in ("ok", "drift", "not_enough_data"):
                state.add_metric([d.feature, s], 1.0 if d.state == s else 0.0)
            for name, value in d.statistics.items():
                stats.add_metric([d.feature, name], float(value))
            if d.p_value is not None:
                pvalue.add_metric([d.feature, d.test], d.p_value)
        yield from (detected, state, stats, pvalue)
        yield from self._label_metrics()
        yield from self._performance_metrics()
        yield from self._utilization_metrics()
        if self.rules is not None and self.last_evaluation is not None:
            rule_state = GaugeMetricFamily(
                "inferline_alert_rule_state", "Alert rule state (1 for the current one)", labels=["rule", "state"]
            )
            for name, current in self.last_evaluation.states.items():
                for st in RULE_STATES:
                    rule_state.add_metric([name, st], 1.0 if current == st else 0.0)
            yield rule_state
            incidents = GaugeMetricFamily("inferline_incidents_open", "Open incidents (critical rules firing)")
            incidents.add_metric([], float(self.rules.open_incident is not None))
            yield incidents
        if self.controller is not None:
            rollbacks = CounterMetricFamily("inferline_rollbacks", "Automatic rollbacks completed")
            rollbacks.add_metric([], float(self.controller.rollbacks))
            yield rollbacks
        if self.config.triton_metrics_url:  # absent, not 0, when this monitor scrapes no Triton (as the rules read)
            up = GaugeMetricFamily("inferline_triton_up", "1 if the last scrape of Triton's metrics succeeded")
            up.add_metric([], float(self.triton_up))
            yield up
        fail = GaugeMetricFamily(
            "inferline_triton_failure_ratio",
            f"Failed / all inference requests over the last {self.config.latency_window_s:g} s (Triton counters)",
            labels=["model", "version"],
        )
        with self.lock:
            for (model, version), counts in sorted(self.triton_window.items()):
                ok, bad = sum(x[1] for x in counts), sum(x[2] for x in counts)
                if ok + bad:
                    fail.add_metric([model, version], bad / (ok + bad))
        yield fail

    def _label_metrics(self) -> Iterator[Metric]:
        """The watched pipeline, and its errors from delayed labels: per class, or the regression's."""
        info = GaugeMetricFamily(
            "inferline_monitor_info", "The pipeline this monitor watches (always 1)", labels=["pipeline", "task"]
        )
        info.add_metric([self.spec.name, self.spec.task], 1.0)
        yield info
        with self.lock:
            joined, unmatched = len(self.labels.joined), self.labels.unmatched
        joined_metric = GaugeMetricFamily("inferline_labels_joined_rows", "Labels joined to answers, in the window")
        joined_metric.add_metric([], float(joined))
        unmatched_metric = CounterMetricFamily(
            "inferline_labels_unmatched", "Labels whose id matched no logged answer (too old, unknown or not ok)"
        )
        unmatched_metric.add_metric([], float(unmatched))
        yield from (joined_metric, unmatched_metric)
        if self.spec.task == "regression":
            yield from self._regression_metrics()
            return
        classes = self.class_errors()
        per_class = {
            key: GaugeMetricFamily(
                f"inferline_class_{key}", f"Per predicted class: {key} over joined labels", labels=["cls"]
            )
            for key in ("error_rate", "precision", "recall")
        }
        predicted = GaugeMetricFamily(
            "inferline_class_predicted_rows",
            "Joined rows predicted as the class (the support of its error rate)",
            labels=["cls"],
        )
        for name, values in classes.items():
            predicted.add_metric([name], float(values["predicted"]))
            for key, metric in per_class.items():
                if not np.isnan(values[key]):
                    metric.add_metric([name], values[key])
        yield from per_class.values()
        yield predicted

    def _regression_metrics(self) -> Iterator[Metric]:
        errors = self.regression_errors()
        release = errors.get("release")
        families = {
            "mae": ("inferline_regression_mean_absolute_error", "Mean absolute error over joined labels"),
            "rmse": ("inferline_regression_root_mean_squared_error", "Root mean squared error over joined labels"),
            "mean_error": ("inferline_regression_mean_error", "Mean of prediction minus label over joined labels"),
            "reference_mae": (
                "inferline_regression_reference_mean_absolute_error",
                "The release's mean absolute error on its holdout split (training time)",
            ),
        }
        rows = GaugeMetricFamily(
            "inferline_regression_joined_rows", "Joined labels of the release now served", labels=["release"]
        )
        if release is not None:
            rows.add_metric([release], float(errors["rows"]))
        yield rows
        for key, (name, documentation) in families.items():
            metric = GaugeMetricFamily(
                name, f"{documentation}, of the release now served, in the label's unit", labels=["release"]
            )
            value = errors.get(key)
            if release is not None and value is not None and not np.isnan(value):
                metric.add_metric([release], float(value))
            yield metric

    def _performance_metrics(self) -> Iterator[Metric]:
        """A classifier's estimated performance (label-free, CBPE) over the drift window of the release now served,
        its realized performance once enough labels joined, and the rows behind the estimate. None for regression."""
        if self.spec.task == "regression":
            return
        performance = self.performance_estimate()
        release = performance["release"]
        estimated = GaugeMetricFamily(
            "inferline_estimated_performance",
            "Label-free (CBPE) estimate from the calibrated scores of the drift window: ROC AUC, precision, recall "
            "(of class 1, or one-vs-rest macro averages for more classes)",
            labels=["release", "metric"],
        )
        realized = GaugeMetricFamily(
            "inferline_realized_performance",
            "The same figures from the joined labels (reported once enough joined, every class present)",
            labels=["release", "metric"],
        )
        rows = GaugeMetricFamily(
            "inferline_performance_estimate_rows", "Rows of the drift window behind the estimate", labels=["release"]
        )
        calibration = GaugeMetricFamily(
            "inferline_calibration_error",
            "Expected calibration error of the release's scores on its holdout, measured at training time",
            labels=["release"],
        )
        if release is not None:
            rows.add_metric([release], float(performance["rows"]))
            for family, values in ((estimated, performance["estimated"]), (realized, performance["realized"])):
                for name in FIGURES if values else ():
                    if not np.isnan(values[name]):
                        family.add_metric([release, name], values[name])
            if performance["calibration_error"] is not None:
                calibration.add_metric([release], performance["calibration_error"])
        yield from (estimated, realized, rows, calibration)

    def _utilization_metrics(self) -> Iterator[Metric]:
        u = self.utilization
        nvml = GaugeMetricFamily("inferline_gpu_nvml_state", "NVML state (1 for the current one)", labels=["state"])
        for s in ("disabled", "library_missing", "no_device", "ok"):
            nvml.add_metric([s], 1.0 if u.nvml_state == s else 0.0)
        yield nvml
        count = GaugeMetricFamily("inferline_gpu_count", "GPUs NVML reports (0 unless the state is ok)")
        count.add_metric([], float(len(u.gpus)))
        yield count
        gpu_util = GaugeMetricFamily("inferline_gpu_utilization_ratio", "GPU utilization 0..1", labels=["gpu"])
        gpu_mem = GaugeMetricFamily("inferline_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        gpu_pow = GaugeMetricFamily("inferline_gpu_power_watts", "GPU power draw", labels=["gpu"])
        for g in u.gpus:
            gpu_util.add_metric([str(g.index)], g.utilization_ratio)
            gpu_mem.add_metric([str(g.index)], float(g.memory_used_bytes))
            if g.power_watts is not None:
                gpu_pow.add_metric([str(g.index)], g.power_watts)
        yield from (gpu_util, gpu_mem, gpu_pow)
        host_cpu = GaugeMetricFamily("inferline_host_cpu_utilization_ratio", "Host CPU utilization 0..1, all cores")
        host_cpu.add_metric([], u.host_cpu_ratio)
        host_mem = GaugeMetricFamily("inferline_host_memory_used_bytes", "Host memory in use")
        host_mem.add_metric([], float(u.host_memory_used_bytes))
        yield from (host_cpu, host_mem)
        if u.server_cpu_ratio is not None and u.server_memory_rss_bytes is not None:
            cpu = GaugeMetricFamily(
                "inferline_server_cpu_utilization_cores", "Triton server CPU use, in cores (with its backend stubs)"
            )
            cpu.add_metric([], u.server_cpu_ratio)
            rss = GaugeMetricFamily("inferline_server_memory_rss_bytes", "Triton server resident memory")
            rss.add_metric([], float(u.server_memory_rss_bytes))
            yield from (cpu, rss)


class _Collector:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        return self.monitor.collect()


@dataclass(frozen=True)
class ServerLimits:
    """What one caller can cost the monitor's HTTP server."""

    max_body_bytes: int = 32 * 1024 * 1024  # a samples post of ~100k fraud rows; larger: 413
    body_timeout_s: float = 30.0  # a body not in by then: 408
    header_timeout_s: float = 10.0  # a connection whose request headers are not in by then is closed
    keepalive_s: float = 75.0  # an idle connection between requests is closed after this


INGEST_ROUTES = ("/v1/samples", "/v1/labels")


def _json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class MonitorServer:
    """``Monitor`` behind HTTP (an aiohttp server on a thread and event loop of its own), with a background thread
    calling ``tick`` every interval.

    ``POST /v1/samples`` and ``/v1/labels`` take ``Authorization: Bearer <ingest_key>`` only (401 otherwise): the
    key ``serving.secrets.monitor_key`` keeps in the serving work directory, which the edge's sampler and
    ``MonitorTap`` send. Without ``ingest_key`` the server makes one of its own (``ingest_key`` attribute): the
    POST routes are never open. Bodies over ``limits.max_body_bytes`` are answered 413 before they are read, a body
    that does not arrive in ``body_timeout_s`` 408, one that is not the JSON expected 400 naming what was received
    and what was expected. The GET routes (``/metrics``, ``/healthz``, ``/v1/status``, ``/v1/history``) are
    open, for Prometheus and the report."""

    def __init__(
        self,
        monitor: Monitor,
        registry: CollectorRegistry | None = None,
        *,
        ingest_key: str | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        self.monitor = monitor
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(_Collector(monitor))
        self.ingest_key = ingest_key or secrets.token_urlsafe(32)
        self._expected = f"Bearer {self.ingest_key}".encode()
        self.limits = limits or ServerLimits()
        self.refused = Counter(
            "inferline_monitor_requests_refused",
            "Requests the monitor refused, by reason (unauthorized, body_too_large, body_timeout, invalid)",
            ["reason"],
            registry=self.registry,
        )
        self._stop = threading.Event()
        # bound now: the port is known (``url``) and a port in use fails here, before anything starts
        self._socket = socket.create_server((monitor.config.host, monitor.config.port), backlog=128)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        self.threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host!s}:{port}"

    # --- routes --------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_body_bytes)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/v1/status", self._status)
        app.router.add_get("/v1/history", self._history)
        for route in INGEST_ROUTES:
            app.router.add_post(route, self._ingest)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _status(self, request: web.Request) -> web.Response:
        status = await asyncio.get_running_loop().run_in_executor(None, self.monitor.status)
        return web.json_response(status, dumps=_dumps)

    async def _history(self, request: web.Request) -> web.Response:
        with self.monitor.lock:
            history = list(self.monitor.history)
        return web.json_response(history, dumps=_dumps)

    async def _not_found(self, request: web.Request) -> web.Response:
        return _json_error(
            404,
            f"no route {request.method} {request.path[:100]}; GET /metrics, /healthz, /v1/status, /v1/history; "
            "POST /v1/samples, /v1/labels",
        )

    def _refuse(self, status: int, reason: str, message: str, **headers: str) -> web.Response:
        self.refused.labels(reason).inc()
        return _json_error(status, message, **headers)

    async def _ingest(self, request: web.Request) -> web.Response:
        offered = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(offered, self._expected):
            return self._refuse(
                401,
                "unauthorized",
                f"POST {request.path} needs 'Authorization: Bearer <ingest key>' "
                f"({'a wrong key was sent' if offered else 'none was sent'}): the key is in the serving work "
                "directory (serving.secrets.monitor_key); callers of the edge are not given it",
                **{"WWW-Authenticate": 'Bearer realm="inferline-monitor"'},
            )
        limit = self.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._refuse(
                413,
                "body_too_large",
                f"the body is {request.content_length} bytes; the monitor takes at most {limit} "
                "(ServerLimits.max_body_bytes): post fewer rows per request",
            )
        try:
            raw = await asyncio.wait_for(request.read(), self.limits.body_timeout_s)
        except TimeoutError:
            return self._refuse(
                408, "body_timeout", f"the body did not arrive within {self.limits.body_timeout_s:g}s; send it at once"
            )
        except web.HTTPRequestEntityTooLarge:  # a chunked body that grew past the limit
            return self._refuse(
                413, "body_too_large", f"the body exceeds {limit} bytes (ServerLimits.max_body_bytes): post fewer rows"
            )
        expected = (
            "the samples body serving.tap.sample_payload builds"
            if request.path == INGEST_ROUTES[0]
            else '{"labels": [{"<id column>": ..., "label": ...}, ...]}'
        )
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            return self._refuse(
                400,
                "invalid",
                f"the body is not JSON ({exc}; received {len(raw)} bytes starting {raw[:40]!r}); expected a JSON "
                f"object: {expected}",
            )
        if not isinstance(payload, dict):
            return self._refuse(400, "invalid", f"the body is a JSON {type(payload).__name__}; expected a JSON object")
        ingest = self.monitor.ingest_samples if request.path == INGEST_ROUTES[0] else self.monitor.ingest_labels
        try:
            result = await asyncio.get_running_loop().run_in_executor(None, ingest, payload)
        except (ValueError, KeyError, TypeError) as exc:
            return self._refuse(400, "invalid", f"{type(exc).__name__}: {exc}")
        return web.json_response(result, dumps=_dumps)

    # --- lifecycle -----------------------------------------------------------------------------------------
    def _loop_tick(self) -> None:
        while not self._stop.is_set():
            try:
                self.monitor.tick()
            except Exception:
                log.exception("monitor tick failed")
            self._stop.wait(self.monitor.config.interval_s)

    def _serve(self, ready: threading.Event, failed: list[OSError]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except OSError as exc:  # handed to start(), which raises it
            failed.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close())
            loop.close()

    async def _open(self) -> None:
        self._runner = web.AppRunner(
            self.app(), access_log=None, keepalive_timeout=self.limits.keepalive_s, handle_signals=False
        )
        await self._runner.setup()
        handler = self._runner.server
        assert handler is not None
        timeout = self.limits.header_timeout_s
        self._server = await asyncio.get_running_loop().create_server(
            lambda: HeaderDeadline(handler(), timeout), sock=self._socket
        )

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self, ticking: bool = True) -> MonitorServer:
        """Serve HTTP; with ``ticking`` also call ``tick`` every interval (without: the caller ticks)."""
        ready, failed = threading.Event(), list[OSError]()
        http = threading.Thread(target=self._serve, args=(ready, failed), name="monitor-http", daemon=True)
        http.start()
        ready.wait()
        if failed:
            raise failed[0]
        self.threads = [http]
        if ticking:
            self.threads.append(threading.Thread(target=self._loop_tick, name="monitor-tick", daemon=True))
            self.threads[-1].start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        for t in self.threads:
            t.join(timeout=10)
        self._socket.close()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=float)
