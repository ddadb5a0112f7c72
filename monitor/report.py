"""``inferline monitor report``: an HTML page with PNG plots and a JSON summary, from a monitor's snapshots; and the
Grafana dashboard for the metrics the monitor exports."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from inferline.features.artifacts import atomic_write_bytes, atomic_write_json

__all__ = ["grafana_dashboard", "summarize", "write_report"]

MAX_OUTPUT_PLOTS = 8  # output histograms drawn (a classifier of many classes has one per class)


def summarize(history: list[dict[str, Any]]) -> dict[str, Any]:
    """What a reader wants first: the last snapshot's drift verdicts, latency, class errors and utilization."""
    if not history:
        raise ValueError("the monitor has no snapshots yet: let it run one interval (or send traffic) first")
    last = history[-1]
    features = last["drift"]["features"]
    return {
        "snapshots": len(history),
        "from": history[0]["at"],
        "to": last["at"],
        "release": last["drift"]["release"],
        "drifted": [f["feature"] for f in features if f["state"] == "drift"],
        "not_enough_data": [f["feature"] for f in features if f["state"] == "not_enough_data"],
        "drift": features,
        "latency": last["latency"],
        "classes": last["classes"],
        "regression": last.get("regression", {}),
        "labels": last["labels"],
        "rows": last["rows"],
        "triton": last["triton"],
        "utilization": last["utilization"],
    }


def _plots(history: list[dict[str, Any]], out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t0 = history[0]["at"]
    plots: list[tuple[str, str]] = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        plots.append((name, title))

    fig, ax = plt.subplots(figsize=(9, 4))
    keys = sorted({k for s in history for k in s["latency"]})
    for key in keys:
        points = [(s["at"] - t0, s["latency"][key]) for s in history if key in s["latency"]]
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ax.plot([p[0] for p in points], [p[1][q] * 1e3 for p in points], style, label=f"{key} {q}")
    ax.set_xlabel("seconds since the first snapshot")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if keys:
        ax.legend(fontsize=7, ncol=2)
    ax.set_title("Latency percentiles over the sliding window (server: Triton traces; client: the tap)")
    save(fig, "latency.png", "Latency percentiles over time")

    features = history[-1]["drift"]["features"]
    if features:
        fig, ax = plt.subplots(figsize=(9, 0.35 * len(features) + 1.5))
        names = [f["feature"] for f in features]
        p = [max(f["p_value"], 1e-300) if f["p_value"] is not None else 1.0 for f in features]
        colors = ["tab:red" if f["state"] == "drift" else "tab:gray" for f in features]
        ax.barh(names, [-np.log10(v) for v in p], color=colors)
        alpha = features[0]["alpha"]
        ax.axvline(-np.log10(alpha), color="black", linestyle="--", label=f"flag: p < {alpha:.2g} (Bonferroni)")
        ax.set_xlabel("-log10 p-value (KS for numeric features and outputs, chi-square for categorical ones)")
        ax.legend(fontsize=8)
        ax.set_title(f"Drift per feature, release {history[-1]['drift']['release']} (red: drifted)")
        save(fig, "drift.png", "Drift per feature")

    drift = history[-1]["drift"]
    histograms = drift.get("prediction_histograms") or (
        {"prediction": drift["prediction_histogram"]} if drift.get("prediction_histogram") else {}
    )
    shown = list(histograms.items())[:MAX_OUTPUT_PLOTS]
    if shown:
        fig, axes = plt.subplots(len(shown), 1, figsize=(9, 2.6 * len(shown) + 0.8), squeeze=False)
        for ax, (name, hist) in zip(axes[:, 0], shown, strict=True):
            ref = np.asarray(hist["reference_counts"], dtype=float)
            cur = np.asarray(hist["current_counts"], dtype=float)
            x = np.arange(len(ref))
            ax.bar(x - 0.2, ref / max(ref.sum(), 1), width=0.4, label="reference (training, out of sample)")
            ax.bar(x + 0.2, cur / max(cur.sum(), 1), width=0.4, label="current window")
            ax.set_xlabel(f"{name} bin (reference quantiles)")
            ax.set_ylabel("share of rows")
            ax.legend(fontsize=8)
        more = f" (first {MAX_OUTPUT_PLOTS} of {len(histograms)})" if len(histograms) > len(shown) else ""
        axes[0, 0].set_title(f"Model outputs vs reference{more}")
        save(fig, "prediction.png", "Model outputs vs reference")

    fig, ax = plt.subplots(figsize=(9, 3.5))
    t = [s["at"] - t0 for s in history]
    ax.plot(t, [s["utilization"]["host_cpu_ratio"] for s in history], label="host CPU (all cores)")
    server = [s["utilization"]["server_cpu_ratio"] for s in history]
    if any(v is not None for v in server):
        ax.plot(t, [v if v is not None else float("nan") for v in server], label="Triton server CPU (cores)")
    for g in range(max(len(s["utilization"]["gpus"]) for s in history)):
        ax.plot(t, [s["utilization"]["gpus"][g]["utilization_ratio"] for s in history], label=f"GPU {g}")
    ax.set_xlabel("seconds since the first snapshot")
    ax.set_ylabel("utilization")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Utilization (NVML: {history[-1]['utilization']['nvml_state']})")
    save(fig, "utilization.png", "Utilization")
    return plots


def write_report(history: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(history)
    plots = _plots(history, out)

    def p_text(p: float | None) -> str:
        return "" if p is None else f"{p:.3g}"

    rows = "".join(
        f"<tr><td>{html.escape(f['feature'])}</td><td>{f['kind']}</td><td><b>{f['state']}</b></td>"
        f"<td>{f['test']}</td><td>{p_text(f['p_value'])}</td>"
        f"<td>{f['alpha']:.3g}</td><td>{f['n_current']}</td>"
        f"<td>{html.escape(', '.join(f'{k} {v:.3g}' for k, v in f['statistics'].items()))}</td></tr>"
        for f in summary["drift"]
    )
    verdict = (
        f"Drifted: <b>{html.escape(', '.join(summary['drifted']))}</b>" if summary["drifted"] else "No drift flagged."
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>inferline monitor report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 8px;text-align:left}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>inferline monitor report</h1>
<p>Release {html.escape(str(summary["release"]))}; {summary["snapshots"]} snapshots. {verdict}</p>
<h2>Drift (last window)</h2>
<table><tr><th>feature</th><th>kind</th><th>state</th><th>test</th><th>p-value</th><th>alpha</th><th>rows</th>
<th>statistics</th></tr>{rows}</table>
{"".join(f'<h2>{html.escape(title)}</h2><img src="{name}" alt="{html.escape(title)}">' for name, title in plots)}
<h2>Summary (JSON)</h2><pre>{html.escape(json.dumps(summary, indent=2, default=float))}</pre>
</body></html>
"""
    atomic_write_bytes(out / "report.html", page.encode())
    atomic_write_json(out / "summary.json", summary)
    return summary


def grafana_dashboard() -> dict[str, Any]:
    """A Grafana dashboard (schema 39) over the monitor's metrics; import it and pick the Prometheus data source."""

    def panel(i: int, title: str, exprs: list[tuple[str, str]], unit: str, kind: str = "timeseries") -> dict[str, Any]:
        return {
            "id": i,
            "type": kind,
            "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * ((i - 1) % 2), "y": 8 * ((i - 1) // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [
                {"refId": chr(65 + j), "expr": e, "legendFormat": legend} for j, (e, legend) in enumerate(exprs)
            ],
        }

    rate = "rate(inferline_request_latency_seconds_bucket[5m])"
    q = "histogram_quantile({q}, sum by (le, side, model, version) (" + rate + "))"
    panels = [
        panel(
            1,
            "Latency p50 / p95 / p99 (fleet-wide, from mergeable histograms)",
            [
                (q.format(q=x), f"p{round(x * 100)} {{{{side}}}} {{{{model}}}}:{{{{version}}}}")
                for x in (0.5, 0.95, 0.99)
            ],
            "s",
        ),
        panel(
            2,
            "Drifted features and model outputs",
            [("inferline_drift_detected == 1", "{{feature}}"), ("inferline_drift_p_value", "p {{feature}}")],
            "short",
        ),
        panel(
            3,
            "Per-class error rate (delayed labels)",
            [("inferline_class_error_rate", "{{cls}}"), ("inferline_class_recall", "recall {{cls}}")],
            "percentunit",
        ),
        panel(
            4,
            "Utilization",
            [
                ("inferline_host_cpu_utilization_ratio", "host CPU"),
                ("inferline_server_cpu_utilization_cores", "Triton CPU (cores)"),
                ("inferline_gpu_utilization_ratio", "GPU {{gpu}}"),
            ],
            "percentunit",
        ),
        panel(
            5,
            "Triton failure ratio and monitored rows by status",
            [
                ("inferline_triton_failure_ratio", "failures {{model}}:{{version}}"),
                ("sum by (status) (rate(inferline_monitored_rows_total[5m]))", "rows/s {{status}}"),
            ],
            "short",
        ),
        panel(6, "Drift statistics (PSI)", [('inferline_drift_statistic{statistic="psi"}', "{{feature}}")], "short"),
        panel(
            7,
            "Regression errors (delayed labels; the label's unit)",
            [
                ("inferline_regression_mean_absolute_error", "MAE {{release}}"),
                ("inferline_regression_root_mean_squared_error", "RMSE {{release}}"),
                ("inferline_regression_reference_mean_absolute_error", "holdout MAE {{release}}"),
            ],
            "short",
        ),
    ]
    return {
        "title": "inferline",
        "uid": "inferline-monitor",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }
