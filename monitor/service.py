"""The monitor: what the served model is doing now, compared with what it did at training time.

``Monitor`` holds sliding windows and is fed from four sides:

- **samples** (``POST /v1/samples``): raw request rows with the predictions that answered them, sent by
  ``serving.tap.MonitorTap`` from the serving client (or by anything that scores: the batch job's outputs). The
  monitor computes the features itself with the release's own feature state and the shared kernels, so what it
  compares with the reference profile is exactly what the model saw.
- **labels** (``POST /v1/labels``): delayed ground truth ``transaction_id, label``, joined to logged predictions.
- **Triton**: its metrics endpoint (request successes and failures per model and version) and its trace files
  (per-request server timings, written by tritonserver when started with ``trace_dir``; Triton 2.51 exports
  latency only as counters and summaries, which cannot be merged across servers or windows).
- **utilization**: NVML and psutil (``monitor.utilization``).

Latency is kept in mergeable log-bucket histograms (``monitor.sketch.LogHistogram``): per time slice, merged over
the window for percentiles, and cumulatively for the exported Prometheus histogram. Drift is computed over the
most recent ``drift_window_rows`` accepted rows of the current release against the reference profile published
with that release (``monitor.drift``). ``/metrics`` serves everything in Prometheus' text format.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from inferline.export.registry import Registry, RegistryError
from inferline.features.contract import Contract, compile_contract
from inferline.features.spec import PipelineSpec, load_pipeline, read_spec
from inferline.features.state import FeatureState
from inferline.features.wire import from_json_columns
from inferline.monitor.drift import CategoricalReference, FeatureDrift, NumericReference, bin_counts, drift_report
from inferline.monitor.rollback import RollbackController
from inferline.monitor.rules import Evaluation, RuleEngine
from inferline.monitor.sketch import LogHistogram
from inferline.monitor.utilization import Utilization, UtilizationSampler

__all__ = ["LATENCY_BUCKETS", "Monitor", "MonitorConfig", "MonitorServer", "read_traces"]

log = logging.getLogger("inferline.monitor")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUANTILES = (0.5, 0.95, 0.99)


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


@dataclass(frozen=True)
class _References:
    """A release's reference profile, parsed: what every drift evaluation of its window compares against."""

    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    prediction: NumericReference


@dataclass
class _ReleaseWindow:
    """The most recent accepted rows of one release: standardized numeric features, category labels, scores."""

    numeric: deque[np.ndarray] = field(default_factory=deque)
    categorical: deque[np.ndarray] = field(default_factory=deque)
    scores: deque[np.ndarray] = field(default_factory=deque)
    rows: int = 0
    last_seen: float = 0.0

    def add(self, numeric: np.ndarray, categorical: np.ndarray, scores: np.ndarray, limit: int, now: float) -> None:
        self.numeric.append(numeric)
        self.categorical.append(categorical)
        self.scores.append(scores)
        self.rows += len(scores)
        self.last_seen = now
        while self.rows - len(self.scores[0]) >= limit:
            self.rows -= len(self.scores.popleft())
            self.numeric.popleft()
            self.categorical.popleft()
        if self.rows > limit:  # trim the oldest chunk to the limit exactly
            cut = self.rows - limit
            self.numeric[0], self.categorical[0] = self.numeric[0][cut:], self.categorical[0][cut:]
            self.scores[0] = self.scores[0][cut:]
            self.rows = limit


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
        self.predictions: OrderedDict[str, tuple[int, str]] = OrderedDict()  # id -> (predicted class, release)
        self.joined: deque[tuple[int, int, str]] = deque(maxlen=config.label_window_rows)  # (label, predicted, rel)
        self.labels_unmatched = 0
        self.triton: dict[tuple[str, str], dict[str, float]] = {}  # (model, version) -> counters at last scrape
        self.triton_window: dict[tuple[str, str], deque[tuple[float, float, float]]] = {}
        self.triton_up = 0
        self.traces_read: set[str] = set()
        self.sampler = UtilizationSampler(config.server_pid, nvml=config.nvml)
        self.utilization: Utilization = self.sampler.sample()
        self.history: deque[dict[str, Any]] = deque(maxlen=config.history)
        self._releases: dict[str, tuple[Contract, _References]] = {}
        self._drift: list[FeatureDrift] = []
        self._drift_release: str | None = None
        self._prediction_histogram: dict[str, Any] | None = None

    def _watched_spec(self) -> PipelineSpec:
        """The current release's spec snapshot; the live pipeline module only while nothing is published."""
        try:
            files = self.registry.release_files()
        except RegistryError:
            return load_pipeline(self.config.pipeline)
        return read_spec(files["spec"]) if "spec" in files else load_pipeline(self.config.pipeline)

    # --- release artifacts -------------------------------------------------------------------------------
    def _release(self, release: str) -> tuple[Contract, _References]:
        """The compiled contract (the release's own spec snapshot and feature state) and the reference profile
        published with ``release`` (``fraud:2``), loaded and compiled once."""
        if release not in self._releases:
            pipeline, _, version = release.partition(":")
            if pipeline != self.spec.name or not version.isdigit():
                raise ValueError(
                    f"samples name release {release!r}, but this monitor watches pipeline {self.spec.name!r}; "
                    f"expected '{self.spec.name}:<version>'"
                )
            files = self.registry.release_files(int(version))
            spec = read_spec(files["spec"]) if "spec" in files else self.spec
            state = FeatureState.load(files["feature_state"])
            contract = compile_contract(spec, state)  # this monitor's own: it remembers categorical verdicts
            profile = self.registry.reference_profile(int(version))
            references = _References(
                numeric={name: NumericReference.from_dict(profile["numeric"][name]) for name in state.numeric},
                categorical={
                    name: CategoricalReference.from_dict(profile["categorical"][name]) for name in state.categorical
                },
                prediction=NumericReference.from_dict(profile["prediction"]),
            )
            self._releases[release] = (contract, references)
        return self._releases[release]

    # --- ingestion ---------------------------------------------------------------------------------------
    def ingest_samples(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Rows a release answered. ``columns`` holds the raw request columns as sent on the wire (strings as
        text, nulls as empty strings), ``probabilities`` [n, classes], ``predicted_class`` [n], ``status`` [n],
        ``release`` (one for all rows), optional ``latency_s`` (client-side, one per request), ``model`` and
        ``source`` (``serving`` or ``batch``)."""
        release = str(payload["release"])
        contract, _ = self._release(release)
        state = contract.state
        assert state is not None
        arrays = from_json_columns(payload["columns"], contract.spec)
        n = len(next(iter(arrays.values())))
        probabilities = np.asarray(payload["probabilities"], dtype=np.float32).reshape(n, -1)
        predicted = np.asarray(payload["predicted_class"], dtype=np.int64).reshape(n)
        status = np.asarray(payload.get("status", ["ok"] * n), dtype=object)
        features, _ = contract.featurize(arrays)
        ok = status == "ok"
        categorical = np.stack(
            [state.category_labels(name, features.categorical[:, j]) for j, name in enumerate(state.categorical)],
            axis=1,
        )
        now = time.time()
        model = str(payload.get("model", self.spec.name))
        with self.lock:
            window = self.windows.setdefault(release, _ReleaseWindow())
            window.add(features.numeric[ok], categorical[ok], probabilities[ok, -1], self.config.drift_window_rows, now)
            source = str(payload.get("source", "serving"))
            self.sources[source] = self.sources.get(source, 0) + n
            for s, count in zip(*np.unique(status, return_counts=True), strict=True):
                key = (release, str(s))
                self.rows_total[key] = self.rows_total.get(key, 0) + int(count)
            if self.spec.id_column is not None:
                ids = arrays[self.spec.id_column.name]
                for i in np.flatnonzero(ok):
                    self.predictions[ids[i].decode("utf-8", "surrogateescape")] = (int(predicted[i]), release)
                while len(self.predictions) > self.config.label_window_rows:
                    self.predictions.popitem(last=False)
            if payload.get("latency_s"):
                self.latency.add(("client", model, release.partition(":")[2]), payload["latency_s"], now)
        return {"accepted": n, "scored_ok": int(ok.sum()), "release": release}

    def ingest_labels(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Delayed ground truth: ``labels`` = [{``<id column>``: ..., ``label``: class index}, ...]."""
        if self.spec.id_column is None:
            raise ValueError(f"pipeline {self.spec.name!r} has no id column; labels cannot be joined")
        id_name = self.spec.id_column.name
        joined = unmatched = 0
        with self.lock:
            for item in payload["labels"]:
                key = str(item[id_name])
                hit = self.predictions.get(key)
                if hit is None:
                    unmatched += 1
                    continue
                self.joined.append((int(item["label"]), hit[0], hit[1]))
                joined += 1
            self.labels_unmatched += unmatched
        return {"joined": joined, "unmatched": unmatched}

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

    def evaluate_drift(self) -> tuple[str | None, list[FeatureDrift], dict[str, Any] | None]:
        """Drift of the most recently served release's window against its reference profile."""
        with self.lock:
            release = self._current_release()
            if release is None:
                return None, [], None
            w = self.windows[release]
            numeric = np.concatenate(list(w.numeric))
            categorical = np.concatenate(list(w.categorical))
            scores = np.concatenate(list(w.scores))
        contract, refs = self._release(release)
        state = contract.state
        assert state is not None
        prediction_ref = refs.prediction
        histogram = {
            "edges": prediction_ref.edges,
            "reference_counts": list(prediction_ref.counts),
            "current_counts": [int(c) for c in bin_counts(scores, prediction_ref.edges)],
        }
        report = drift_report(
            numeric={name: (refs.numeric[name], numeric[:, i]) for i, name in enumerate(state.numeric)},
            categorical={name: (refs.categorical[name], categorical[:, j]) for j, name in enumerate(state.categorical)},
            prediction=(prediction_ref, scores),
            alpha=self.config.alpha,
            min_samples=self.config.min_samples,
        )
        return release, report, histogram

    def class_errors(self) -> dict[str, dict[str, float]]:
        """Per class over the joined window: error rate among rows predicted as the class, precision, recall."""
        with self.lock:
            pairs = np.array([(t, p) for t, p, _ in self.joined], dtype=np.int64).reshape(-1, 2)
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

    def tick(self) -> dict[str, Any]:
        """One period: scrape Triton, read new traces, sample utilization, evaluate drift, keep a snapshot."""
        now = time.time()
        self._scrape_triton(now)
        self._read_traces(now)
        self.utilization = self.sampler.sample()
        release, drift, histogram = self.evaluate_drift()
        with self.lock:
            self._drift, self._drift_release, self._prediction_histogram = drift, release, histogram
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
            drift, release, histogram = list(self._drift), self._drift_release, self._prediction_histogram
            window_rows = {r: w.rows for r, w in self.windows.items()}
        return {
            "at": now,
            "latency": {
                "|".join(key): {"count": h.count, **{f"p{round(q * 100)}": h.quantile(q) for q in QUANTILES}}
                for key, h in window.items()
                if h.count
            },
            "triton": {"up": self.triton_up, "scraped": bool(self.config.triton_metrics_url), "window": triton},
            "rows": rows,
            "sources": sources,
            "drift": {
                "release": release,
                "window_rows": window_rows,
                "features": [d.as_dict() for d in drift],
                "prediction_histogram": histogram,
            },
            "classes": self.class_errors(),
            "labels": {"joined": len(self.joined), "unmatched": self.labels_unmatched},
            "utilization": self.utilization.as_dict(),
            "rules": self._rules_status(),
        }

    # --- Prometheus ----------------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        now = time.time()
        with self.lock:
            totals = {k: h for k, h in self.latency.total.items()}
            window = self.latency.window(now)
            drift = list(self._drift)
            rows = dict(self.rows_total)
            window_rows = {r: w.rows for r, w in self.windows.items()}
        hist = HistogramMetricFamily(
            "inferline_request_latency_seconds",
            "Request latency since the monitor started (server side from Triton traces, client side from the tap)",
            labels=["side", "model", "version"],
        )
        for (side, model, version), h in sorted(totals.items()):
            cumulative = h.cumulative_counts(LATENCY_BUCKETS)
            buckets = [(str(b), float(c)) for b, c in zip(LATENCY_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", float(h.count)))
            hist.add_metric([side, model, version], buckets, h.sum)
        yield hist
        quant = GaugeMetricFamily(
            "inferline_request_latency_window_seconds",
            f"Latency percentiles over the last {self.config.latency_window_s:g} s (log-bucket histogram estimate)",
            labels=["side", "model", "version", "quantile"],
        )
        for (side, model, version), h in sorted(window.items()):
            if h.count:
                for q in QUANTILES:
                    quant.add_metric([side, model, version, str(q)], h.quantile(q))
        yield quant
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
        classes = self.class_errors()
        per_class = {
            key: GaugeMetricFamily(
                f"inferline_class_{key}", f"Per predicted class: {key} over joined labels", labels=["cls"]
            )
            for key in ("error_rate", "precision", "recall")
        }
        for name, values in classes.items():
            for key, metric in per_class.items():
                if not np.isnan(values[key]):
                    metric.add_metric([name], values[key])
        yield from per_class.values()
        yield from self._utilization_metrics()
        if self.rules is not None and self.last_evaluation is not None:
            rule_state = GaugeMetricFamily(
                "inferline_alert_rule_state", "Alert rule state (1 for the current one)", labels=["rule", "state"]
            )
            for name, current in self.last_evaluation.states.items():
                for st in ("ok", "pending", "firing", "no_data"):
                    rule_state.add_metric([name, st], 1.0 if current == st else 0.0)
            yield rule_state
            incidents = GaugeMetricFamily("inferline_incidents_open", "Open incidents (critical rules firing)")
            incidents.add_metric([], float(self.rules.open_incident is not None))
            yield incidents
        if self.controller is not None:
            rollbacks = CounterMetricFamily("inferline_rollbacks", "Automatic rollbacks completed")
            rollbacks.add_metric([], float(self.controller.rollbacks))
            yield rollbacks
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


class MonitorServer:
    """``Monitor`` behind HTTP on 127.0.0.1, with a background thread calling ``tick`` every interval."""

    def __init__(self, monitor: Monitor, registry: CollectorRegistry | None = None) -> None:
        self.monitor = monitor
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(_Collector(monitor))
        self._stop = threading.Event()
        handler = self._handler()
        self.httpd = ThreadingHTTPServer((monitor.config.host, monitor.config.port), handler)
        self.httpd.daemon_threads = True
        self.threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.address_string(), *args)

            def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, obj: Any) -> None:
                self._send(code, (json.dumps(obj, default=float) + "\n").encode())

            def do_GET(self) -> None:
                m = outer.monitor
                if self.path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    self._json(200, {"status": "ok"})
                elif self.path == "/v1/status":
                    self._json(200, m.status())
                elif self.path == "/v1/history":
                    with m.lock:
                        history = list(m.history)
                    self._json(200, history)
                else:
                    self._json(404, {"error": f"no route {self.path}; try /metrics, /v1/status, /v1/history"})

            def do_POST(self) -> None:
                routes = {"/v1/samples": outer.monitor.ingest_samples, "/v1/labels": outer.monitor.ingest_labels}
                if self.path not in routes:
                    self._json(404, {"error": f"no route {self.path}; POST /v1/samples or /v1/labels"})
                    return
                try:
                    length = int(self.headers.get("Content-Length", "0"))
                    payload = json.loads(self.rfile.read(length))
                    result = routes[self.path](payload)
                except (ValueError, KeyError, TypeError) as exc:
                    self._json(400, {"error": f"{type(exc).__name__}: {exc}"})
                    return
                self._json(200, result)

        return Handler

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.monitor.tick()
            except Exception:
                log.exception("monitor tick failed")
            self._stop.wait(self.monitor.config.interval_s)

    def start(self, ticking: bool = True) -> MonitorServer:
        """Serve HTTP; with ``ticking`` also call ``tick`` every interval (without: the caller ticks)."""
        self.threads = [threading.Thread(target=self.httpd.serve_forever, name="monitor-http", daemon=True)]
        if ticking:
            self.threads.append(threading.Thread(target=self._loop, name="monitor-tick", daemon=True))
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self.threads:
            t.join(timeout=10)
