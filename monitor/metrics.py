"""The monitor's Prometheus exposition: a collector that reads a ``Monitor`` at every scrape and builds the metric
families (``inferline_*``) from its windows, drift verdicts, label joins, performance figures, utilization, rules,
the rollout it decides (``inferline_rollout_*``, only while the pipeline has one) and Triton counters. The names
and labels are what the alert rules' PromQL (``monitor.rules``) and the Grafana dashboard (``monitor.dashboard``)
read: renaming one breaks both.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from inferline.monitor.performance import FIGURES
from inferline.monitor.rules import RULE_STATES
from inferline.monitor.windows import LATENCY_BUCKETS

if TYPE_CHECKING:
    from inferline.monitor.rollout import RolloutController
    from inferline.monitor.service import Monitor

__all__ = ["MonitorCollector", "monitor_metrics", "regression_metrics", "rollout_metrics"]


class MonitorCollector:
    """A prometheus-client collector over one ``Monitor``: registered once, it collects afresh at every scrape."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        return self.monitor.collect()


def monitor_metrics(monitor: Monitor) -> Iterator[Metric]:
    """Every metric the monitor exports, read from ``monitor`` at the time of the scrape."""
    with monitor.lock:
        totals = {k: h for k, h in monitor.latency.total.items()}
        drift = list(monitor._drift)
        rows = dict(monitor.rows_total)
        window_rows = {r: w.rows for r, w in monitor.windows.items()}
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
    yield from _label_metrics(monitor)
    yield from _performance_metrics(monitor)
    yield from _utilization_metrics(monitor)
    if monitor.rules is not None and monitor.last_evaluation is not None:
        rule_state = GaugeMetricFamily(
            "inferline_alert_rule_state", "Alert rule state (1 for the current one)", labels=["rule", "state"]
        )
        for name, current in monitor.last_evaluation.states.items():
            for st in RULE_STATES:
                rule_state.add_metric([name, st], 1.0 if current == st else 0.0)
        yield rule_state
        incidents = GaugeMetricFamily("inferline_incidents_open", "Open incidents (critical rules firing)")
        incidents.add_metric([], float(monitor.rules.open_incident is not None))
        yield incidents
    if monitor.rollout is not None:
        yield from rollout_metrics(monitor.rollout)
    if monitor.controller is not None:
        rollbacks = CounterMetricFamily("inferline_rollbacks", "Automatic rollbacks completed")
        rollbacks.add_metric([], float(monitor.controller.rollbacks))
        yield rollbacks
    if monitor.config.triton_metrics_url:  # absent, not 0, when this monitor scrapes no Triton (as the rules read)
        up = GaugeMetricFamily("inferline_triton_up", "1 if the last scrape of Triton's metrics succeeded")
        up.add_metric([], float(monitor.triton_up))
        yield up
    fail = GaugeMetricFamily(
        "inferline_triton_failure_ratio",
        f"Failed / all inference requests over the last {monitor.config.latency_window_s:g} s (Triton counters)",
        labels=["model", "version"],
    )
    with monitor.lock:
        for (model, version), counts in sorted(monitor.triton_window.items()):
            ok, bad = sum(x[1] for x in counts), sum(x[2] for x in counts)
            if ok + bad:
                fail.add_metric([model, version], bad / (ok + bad))
    yield fail


def _label_metrics(monitor: Monitor) -> Iterator[Metric]:
    """The watched pipeline, and its errors from delayed labels: per class, or the regression's."""
    info = GaugeMetricFamily(
        "inferline_monitor_info", "The pipeline this monitor watches (always 1)", labels=["pipeline", "task"]
    )
    info.add_metric([monitor.spec.name, monitor.spec.task], 1.0)
    yield info
    with monitor.lock:
        joined, unmatched = len(monitor.labels.joined), monitor.labels.unmatched
    joined_metric = GaugeMetricFamily("inferline_labels_joined_rows", "Labels joined to answers, in the window")
    joined_metric.add_metric([], float(joined))
    unmatched_metric = CounterMetricFamily(
        "inferline_labels_unmatched", "Labels whose id matched no logged answer (too old, unknown or not ok)"
    )
    unmatched_metric.add_metric([], float(unmatched))
    yield from (joined_metric, unmatched_metric)
    if monitor.spec.task == "regression":
        yield from regression_metrics(monitor)
        return
    classes = monitor.class_errors()
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


def regression_metrics(monitor: Monitor) -> Iterator[Metric]:
    """A regression's errors over the joined labels of the release now served, and its holdout MAE: every family
    is yielded (empty without data), so a classifier's monitor can still name them (the dashboard test does)."""
    errors = monitor.regression_errors()
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


def rollout_metrics(controller: RolloutController) -> Iterator[Metric]:
    """The pipeline's rollout as the controller last read it (``monitor.rollout``): which releases, the phase, the
    step and the candidate's share, the verdicts this monitor reached, the last decision's checks, and the rows and
    latencies each release has sent during the running step. Nothing when the pipeline never had a rollout."""
    r = controller.rollout
    if r is None:
        return
    with controller.evidence.lock:  # the ingest path adds rows to the step's arms under it
        status = controller.status(r)
    info = GaugeMetricFamily(
        "inferline_rollout_info",
        "The pipeline's rollout (always 1): its id, mode (canary or shadow), phase, current and candidate releases",
        labels=["rollout", "mode", "phase", "current", "candidate"],
    )
    info.add_metric([r.id, r.mode, r.phase, f"{r.pipeline}:{r.current}", f"{r.pipeline}:{r.candidate}"], 1.0)
    step = GaugeMetricFamily("inferline_rollout_step", "The rollout's step (0-based)")
    step.add_metric([], float(r.step))
    share = GaugeMetricFamily(
        "inferline_rollout_share",
        "The candidate's share of the requests now: answered (canary) or copied (shadow); 0 outside a running step",
    )
    share.add_metric([], float(r.share))
    decisions = CounterMetricFamily(
        "inferline_rollout_decisions", "Step decisions this monitor reached, by verdict", labels=["verdict"]
    )
    for verdict, n in sorted(controller.decisions.items()):
        decisions.add_metric([verdict], float(n))
    yield from (info, step, share, decisions)
    p_value = GaugeMetricFamily(
        "inferline_rollout_check_p_value", "p-value of each check of the last step decision", labels=["check"]
    )
    effect = GaugeMetricFamily(
        "inferline_rollout_check_effect",
        "Effect (candidate vs current) of each check of the last step decision, in the check's unit",
        labels=["check"],
    )
    for check in r.decisions[-1].get("checks", []) if r.decisions else []:
        if check.get("p_value") is not None:
            p_value.add_metric([check["name"]], float(check["p_value"]))
        if check.get("effect") is not None:
            effect.add_metric([check["name"]], float(check["effect"]))
    yield from (p_value, effect)
    rows = GaugeMetricFamily(
        "inferline_rollout_step_rows", "Accepted rows of each release during the running step", labels=["release"]
    )
    requests = GaugeMetricFamily(
        "inferline_rollout_step_requests",
        "Request latencies of each release received during the running step",
        labels=["release"],
    )
    for release, counts in sorted(status["counts"].items()):
        rows.add_metric([release], float(counts["rows"]))
        requests.add_metric([release], float(counts["requests"]))
    yield from (rows, requests)


def _performance_metrics(monitor: Monitor) -> Iterator[Metric]:
    """A classifier's estimated performance (label-free, CBPE) over the drift window of the release now served,
    its realized performance once enough labels joined, and the rows behind the estimate. None for regression."""
    if monitor.spec.task == "regression":
        return
    performance = monitor.performance_estimate()
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


def _utilization_metrics(monitor: Monitor) -> Iterator[Metric]:
    u = monitor.utilization
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
