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

Latency is kept in mergeable log-bucket histograms (``core.sketch.LogHistogram``, ``monitor.windows``): per time
slice, merged over the window for percentiles, and cumulatively for the exported Prometheus histogram. Drift is
computed over the most recent ``drift_window_rows`` accepted rows of the current release against the reference
profile published with that release (``monitor.drift``): every tabular feature, and every output of the task (each
class's probability and the predicted class, or the regression's prediction). ``/metrics`` serves everything in
Prometheus' text format.

The jobs are modules of their own: ``monitor.ingest`` parses samples bodies, Triton's metrics and its trace files;
``monitor.windows`` keeps the windows; ``monitor.evaluate`` loads a release from the registry and computes drift and
performance over its window; ``monitor.metrics`` exports ``/metrics``; ``monitor.app`` (``MonitorServer``) serves
HTTP on aiohttp. This module holds ``Monitor``, which owns the state, the lock and the period (``tick``). Ingestion
(``POST /v1/samples`` and ``/v1/labels``) needs ``Authorization: Bearer <ingest key>``
(``serving.secrets.monitor_key``, a file with mode 0600 in the serving work directory): callers of the edge cannot
feed the monitor.

Samples body (``POST /v1/samples``, what ``serving.tap.sample_payload`` builds)::

    {"release": "<pipeline>:<version>", "model": "...", "source": "serving" | "batch",
     "columns": {"<tabular input column>": [value per row], ...},
     "status": ["ok" | reason, ...], "latency_s": [seconds per request, ...], "latency_side": "client" | "edge",
     "probabilities": [[p per class], ...], "predicted_class": [class index, ...]     (classification)
     "prediction": [value, ...]                                                       (regression)}
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.core import Metric

from inferline.features.spec import PipelineSpec, load_pipeline, read_spec
from inferline.monitor.config import MonitorConfig
from inferline.monitor.drift import FeatureDrift
from inferline.monitor.evaluate import ReleaseReferences, load_release, performance_figures, window_drift
from inferline.monitor.ingest import advance_triton_window, new_traces, parse_samples, scrape_triton
from inferline.monitor.labels import PredictionLog
from inferline.monitor.metrics import monitor_metrics
from inferline.monitor.rollback import RollbackController
from inferline.monitor.rollout import RolloutController
from inferline.monitor.rules import Evaluation, RuleEngine
from inferline.monitor.utilization import Utilization, UtilizationSampler
from inferline.monitor.windows import ReleaseWindow, SlicedHistograms, latency_summary
from inferline.release.registry import Registry, RegistryError

__all__ = ["Monitor"]

log = logging.getLogger("inferline.monitor.service")


class Monitor:
    def __init__(
        self,
        config: MonitorConfig,
        rules: RuleEngine | None = None,
        controller: RollbackController | None = None,
        rollout: RolloutController | None = None,
    ) -> None:
        self.config = config
        self.rules = rules
        self.controller = controller
        self.rollout = rollout  # decides the pipeline's shadow and canary rollouts (monitor.rollout)
        self.last_evaluation: Evaluation | None = None
        self.registry = Registry(Path(config.repository), config.pipeline)
        self.spec: PipelineSpec = self._watched_spec()
        self.lock = threading.Lock()
        self.latency = SlicedHistograms(config.latency_window_s, config.latency_window_s / 12)
        self.windows: dict[str, ReleaseWindow] = {}
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
        self._releases: dict[str, ReleaseReferences] = {}
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
    def _release(self, release: str) -> ReleaseReferences:
        """The release ``release`` (``fraud:2``): its spec snapshot, feature state, tabular contract and reference
        profile, loaded and compiled once (``monitor.evaluate.load_release``)."""
        if release not in self._releases:
            self._releases[release] = load_release(self.registry, self.spec, release)
        return self._releases[release]

    # --- ingestion ---------------------------------------------------------------------------------------
    def ingest_samples(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Rows a release answered (the body is described in the module docstring; ``monitor.ingest.parse_samples``
        reads and featurizes it), kept in the release's window, the row counts, the label log and the latency
        histograms."""
        samples = parse_samples(payload, self._release, self.spec.name)
        n, release, spec, ok = len(samples), samples.release, samples.spec, samples.ok
        now = time.time()
        with self.lock:
            self._generation += 1
            window = self.windows.setdefault(release, ReleaseWindow())
            window.add(samples.chunk, self.config.drift_window_rows, now)
            window.add_received(n, samples.nulls, self.config.drift_window_rows)
            self.sources[samples.source] = self.sources.get(samples.source, 0) + n
            for s, count in zip(*np.unique(samples.status.astype(str), return_counts=True), strict=True):
                key = (release, str(s))
                self.rows_total[key] = self.rows_total.get(key, 0) + int(count)
            if spec.id_column is not None:
                self.labels.log(samples.arrays[spec.id_column.name][ok], samples.answers, release, samples.scores)
            if samples.latency_s:
                self.latency.add((samples.side, samples.model, release.partition(":")[2]), samples.latency_s, now)
        rollout = self.rollout
        if rollout is not None and release in (rollout.releases() or ()):
            chunk = samples.chunk
            predicted = None if spec.task == "regression" else chunk.predicted
            pairs = samples.pairs[ok] if samples.pairs is not None else None
            rollout.evidence.add(release, samples.latency_s, chunk.values, predicted, pairs)
        return {"accepted": n, "scored_ok": int(ok.sum()), "release": release}

    def ingest_labels(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Delayed ground truth (``monitor.labels``): ``labels`` = [{``<id column>``: ..., ``label``: class index or
        name, or a number for regression}, ...]; refused when the pipeline has no id column."""
        with self.lock:
            self._generation += 1
            return self.labels.join(payload)

    # --- periodic work -----------------------------------------------------------------------------------
    def _scrape_triton(self, now: float) -> None:
        """Triton's request counters (``monitor.ingest.scrape_triton``), their increase since the last scrape kept
        over the latency window; ``triton_up`` says whether the scrape succeeded."""
        url = self.config.triton_metrics_url
        if not url:
            return
        current = scrape_triton(url)
        if current is None:
            self.triton_up = 0
            return
        self.triton_up = 1
        advance_triton_window(self.triton_window, self.triton, current, now, self.config.latency_window_s)
        self.triton = current

    def _read_traces(self, now: float) -> None:
        """The server latencies of Triton's trace files written since the last read."""
        for by_key in new_traces(self.config.trace_dir, self.traces_read):
            for key, values in by_key.items():
                self.latency.add(key, values, now)

    def _current_release(self) -> str | None:
        """The registry's current release when it has rows (a rollout feeds two releases at once), else the release
        seen last."""
        current = self.registry.current
        name = f"{self.config.pipeline}:{current}" if current is not None else None
        if name is not None and name in self.windows and self.windows[name].rows:
            return name
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
        report, histograms = window_drift(refs, w, nulls, received, self.config.alpha, self.config.min_samples)
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
        result = performance_figures(release, window, labeled, len(self.spec.classes), calibration)
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
        if self.rollout is not None:
            try:
                self.rollout.tick(self.triton, now)
            except Exception:  # a rollout's failure must not stop the monitor: logged, retried next tick
                log.exception("rollout tick failed")
        release, drift, histogram = self.evaluate_drift()
        with self.lock:
            self._drift, self._drift_release, self._prediction_histograms = drift, release, histogram
        snapshot = self.status(now)
        if self.rules is not None:
            evaluation = self.rules.evaluate(snapshot, now)
            if evaluation.new_incident is not None and self.controller is not None:
                self._end_rollout_for(evaluation.new_incident.id)
                self.controller.handle(evaluation.new_incident, now)
            self.last_evaluation = evaluation
            snapshot["rules"] = self._rules_status()
        self.history.append(snapshot)
        return snapshot

    def _end_rollout_for(self, incident: int) -> None:
        """A rollback of the current release comes first: a rollout in progress is aborted (everything routed to
        the current release, the candidate unloaded) before the switch, which expects one release served."""
        if self.rollout is None:
            return
        from inferline.release.rollout import read_rollout

        r = read_rollout(self.rollout.repository, self.rollout.pipeline)
        if r is not None and r.routed:
            self.rollout.abort(r, reason=f"incident {incident}: the current release is being rolled back")

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
            "latency": {"|".join(key): latency_summary(h) for key, h in window.items() if h.count},
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
            "rollout": self.rollout.last if self.rollout is not None else {},
        }

    # --- Prometheus ----------------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        """Every metric this monitor exports (``monitor.metrics``), for the collector ``MonitorServer`` registers."""
        return monitor_metrics(self)
