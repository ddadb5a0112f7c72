"""``inferline monitor report``: an HTML page with PNG plots and a JSON summary, from a monitor's snapshots. The
Grafana dashboard for the metrics the monitor exports is ``monitor.dashboard``.

The page has one ``<section id=...>`` per entry of :data:`SECTIONS`, always, in that order: a section with nothing
to show says why (no labels joined yet, no estimate, ...). One more, :data:`ROLLOUT_SECTION`, follows the summary
only when a snapshot carries a rollout (the last one that does: ``monitor.rollout``'s status, its step decisions and
their checks). Snapshots from older monitors lack some keys (``performance``, ``regression``, ``rollout``, a drift
entry's ``null_share``); they are read with ``.get`` and still render.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferline.core.files import atomic_write_bytes, atomic_write_json

__all__ = ["ROLLOUT_SECTION", "SECTIONS", "summarize", "write_report"]

MAX_OUTPUT_PLOTS = 8  # output histograms drawn (a classifier of many classes has one per class)
PERFORMANCE_METRICS = ("roc_auc", "precision", "recall")  # the figures of a snapshot's "performance" entry

# (id, heading) of every section of the page, in order
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("drift", "Drift (last window)"),
    ("outputs", "Model outputs vs reference"),
    ("latency", "Latency"),
    ("labels", "Delayed labels: errors per class or of the regression"),
    ("performance", "Estimated performance (label-free)"),
    ("utilization", "Utilization"),
    ("json", "Summary (JSON)"),
)
# (id, heading) of the section shown after the summary when a snapshot carries a rollout
ROLLOUT_SECTION = ("rollout", "Rollout (canary or shadow)")


def summarize(history: list[dict[str, Any]]) -> dict[str, Any]:
    """What a reader wants first: the last snapshot's drift verdicts, latency, class errors, performance estimate
    and utilization."""
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
        "performance": last.get("performance"),  # None: a monitor older than the estimate, or nothing to estimate
        "rows": last["rows"],
        "triton": last["triton"],
        "utilization": last["utilization"],
        # the last rollout a snapshot carries ({} when none did: no rollout, or a monitor older than rollouts)
        "rollout": next((s["rollout"] for s in reversed(history) if s.get("rollout")), {}),
    }


def _missing_share(statistics: Mapping[str, Any]) -> float | None:
    """The window's null share of a drift entry (``null_share``, as ``monitor.drift`` names it); None when the
    entry has none (no nulls on either side, or an older profile)."""
    value = statistics.get("null_share")
    return float(value) if isinstance(value, int | float) else None


def _estimates(snapshot: Mapping[str, Any], which: str) -> Mapping[str, Any] | None:
    performance = snapshot.get("performance")
    if not isinstance(performance, Mapping):
        return None
    figures = performance.get(which)
    return figures if isinstance(figures, Mapping) else None


def _plots(history: list[dict[str, Any]], out: Path) -> dict[str, tuple[str, str]]:
    """The PNG plots, by the id of the section that shows them: ``{section: (file name, title)}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t0 = history[0]["at"]
    plots: dict[str, tuple[str, str]] = {}

    def save(fig: Any, section: str, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        plots[section] = (name, title)

    fig, ax = plt.subplots(figsize=(9, 4))
    keys = sorted({k for s in history for k in s["latency"]})
    for key in keys:
        points = [(s["at"] - t0, s["latency"][key]) for s in history if key in s["latency"]]
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ax.plot([p[0] for p in points], [p[1][q] * 1e3 for p in points], style, label=f"{key} {q}")
    ax.set_xlabel("seconds since the first snapshot")
    ax.set_ylabel("latency (ms)")
    if keys:
        ax.set_yscale("log")
        ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    ax.set_title("Latency percentiles over the sliding window (server: Triton traces; client: the tap)")
    save(fig, "latency", "latency.png", "Latency percentiles over time")

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
        save(fig, "drift", "drift.png", "Drift per feature")

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
        save(fig, "outputs", "prediction.png", "Model outputs vs reference")

    estimated = [(s["at"] - t0, _estimates(s, "estimated")) for s in history]
    if any(e is not None for _, e in estimated):
        fig, ax = plt.subplots(figsize=(9, 3.5))
        realized = [(s["at"] - t0, _estimates(s, "realized")) for s in history]
        for k, metric in enumerate(PERFORMANCE_METRICS):
            color = f"C{k}"
            for points, style, what in ((estimated, "-", "estimated"), (realized, "--", "realized")):
                xy = [(t, float(e[metric])) for t, e in points if e is not None and e.get(metric) is not None]
                if xy:
                    label = f"{metric} {what}"
                    ax.plot([t for t, _ in xy], [v for _, v in xy], style, color=color, marker=".", label=label)
        ax.set_xlabel("seconds since the first snapshot")
        ax.set_ylabel("figure")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=3)
        ax.set_title("Estimated (from calibrated scores) and realized (joined labels) performance")
        save(fig, "performance", "performance.png", "Estimated and realized performance over time")

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
    save(fig, "utilization", "utilization.png", "Utilization")
    return plots


# --- HTML ----------------------------------------------------------------------------------------------------


def _num(value: Any, spec: str = ".3g") -> str:
    """A number as the tables show it: blank for None, ``n/a`` for NaN (undefined: no rows of that kind)."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if not isinstance(value, int | float):
        return html.escape(str(value))
    if spec == "d" and isinstance(value, float):  # a count that travelled as a float
        return format(int(value), "d") if value.is_integer() else format(value, ".3g")
    return format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A table of already escaped cells."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _summary_section(summary: dict[str, Any]) -> str:
    verdict = (
        f"Drifted: <b>{html.escape(', '.join(summary['drifted']))}</b>." if summary["drifted"] else "No drift flagged."
    )
    rows = [
        [html.escape(key.rpartition("|")[0]), html.escape(key.rpartition("|")[2]), _num(n, "d")]
        for key, n in sorted(summary["rows"].items())
    ]
    triton = summary["triton"]
    scraped = ("up" if triton.get("up") else "down") if triton.get("scraped") else "not scraped"
    return (
        f"<p>Release {html.escape(str(summary['release']))}; {summary['snapshots']} snapshots from "
        f"{_when(summary['from'])} to {_when(summary['to'])} (UTC). {verdict} Triton metrics: {scraped}.</p>"
        + (_table(["release", "status", "rows received"], rows) if rows else "<p>No rows received yet.</p>")
    )


def _drift_section(features: list[dict[str, Any]]) -> str:
    if not features:
        return "<p>No drift evaluated yet: the monitor has received no rows of a release.</p>"
    shares = [_missing_share(f["statistics"]) for f in features]
    with_missing = any(s is not None for s in shares)
    shown_apart = {"null_share"} if with_missing else set()
    header = ["feature", "kind", "state", "test", "p-value", "alpha", "rows"]
    header += ["missing share (window)"] if with_missing else []
    rows = []
    for f, share in zip(features, shares, strict=True):
        row = [
            html.escape(f["feature"]),
            html.escape(f["kind"]),
            f"<b>{html.escape(f['state'])}</b>",
            html.escape(f["test"]),
            _num(f["p_value"]),
            _num(f["alpha"]),
            _num(f["n_current"], "d"),
        ]
        if with_missing:
            row.append(_num(share, ".2%"))
        stats = ", ".join(f"{k} {_num(v)}" for k, v in f["statistics"].items() if k not in shown_apart)
        rows.append([*row, html.escape(stats)])
    return _table([*header, "statistics"], rows)


def _latency_section(latency: dict[str, Any]) -> str:
    if not latency:
        return "<p>No latency in the window: no traced requests and no client timings yet.</p>"
    rows = [
        [
            *(html.escape(part) for part in [*key.split("|"), "", "", ""][:3]),
            _num(w["count"], "d"),
            *(_num(w[q] * 1e3) for q in ("p50", "p95", "p99")),
        ]
        for key, w in sorted(latency.items())
    ]
    return _table(["side", "model", "version", "requests", "p50 (ms)", "p95 (ms)", "p99 (ms)"], rows)


def _labels_section(summary: dict[str, Any]) -> str:
    labels = summary["labels"]
    parts = [f"<p>{labels['joined']} labels joined to logged answers; {labels['unmatched']} unmatched.</p>"]
    classes, regression = summary["classes"], summary["regression"]
    if classes:
        rows = [
            [
                html.escape(name),
                _num(c["predicted"], "d"),
                _num(c["actual"], "d"),
                _num(c["error_rate"]),
                _num(c["precision"]),
                _num(c["recall"]),
            ]
            for name, c in classes.items()
        ]
        parts.append(_table(["class", "predicted", "actual", "error rate", "precision", "recall"], rows))
    if regression:
        names = ("rows", "mae", "rmse", "mean_error", "reference_mae", "mae_ratio")
        parts.append(
            f"<p>Release {html.escape(str(regression.get('release')))}, in the label's unit.</p>"
            + _table(list(names), [[_num(regression.get(n)) for n in names]])
        )
    if not classes and not regression:
        parts.append("<p>No errors to show: no labels joined (or the pipeline has no id column to join on).</p>")
    return "".join(parts)


def _performance_section(performance: Mapping[str, Any] | None, classes: list[str]) -> str:
    if not isinstance(performance, Mapping):
        return "<p>No estimate: this snapshot carries no performance estimate (a monitor older than the estimate).</p>"
    estimated, realized = performance.get("estimated"), performance.get("realized")
    rows, realized_rows = performance.get("rows", 0), performance.get("realized_rows", 0)
    if not isinstance(estimated, Mapping):
        return f"<p>No estimate for this window ({_num(rows, 'd')} rows; a regression has none).</p>"
    of = ""  # which figures: the positive class's of a binary classifier, macro averages of more classes
    if len(classes) == 2:
        of = f" of class {html.escape(classes[1])}"
    elif len(classes) > 2:
        of = f" (one-vs-rest macro averages over {len(classes)} classes)"
    calibration = performance.get("calibration_error")
    trust = (
        f"The release's calibration error on its holdout (expected calibration error, measured at training) is "
        f"{_num(calibration)}: the estimate is only as good as the calibration."
        if calibration is not None
        else "The release recorded no calibration error: the estimate assumes calibrated scores."
    )
    realized = realized if isinstance(realized, Mapping) else None
    joined = (
        f"realized over {_num(realized_rows, 'd')} rows with joined labels"
        if realized is not None
        else f"not realized yet ({_num(realized_rows, 'd')} rows with joined labels, too few or one class only)"
    )
    table = [
        [metric, _num(estimated.get(metric)), _num(realized.get(metric)) if realized is not None else "not yet"]
        for metric in PERFORMANCE_METRICS
    ]
    return (
        f"<p>ROC AUC, precision and recall{of}, estimated without labels from the scores of the {_num(rows, 'd')} "
        f"rows of the drift window (confidence-based performance estimation); {joined}. {trust}</p>"
        + _table(["metric", "estimated", "realized"], table)
    )


def _rollout_section(rollout: Mapping[str, Any]) -> str:
    """The rollout's releases, phase and step, then each step decision and the checks it was made on."""
    mode, steps, reason = str(rollout.get("mode", "")), rollout.get("steps"), rollout.get("reason") or ""
    of_steps = f" of {_num(steps, 'd')}" if steps else ""
    parts = [
        f"<p>{html.escape(mode.capitalize())} rollout {html.escape(str(rollout.get('id')))}: release "
        f"{html.escape(str(rollout.get('current')))} -&gt; {html.escape(str(rollout.get('candidate')))}, phase "
        f"<b>{html.escape(str(rollout.get('phase')))}</b>, step {_num(rollout.get('step'), 'd')}{of_steps} "
        f"(0-based; the candidate's share now {_num(rollout.get('share'), '.1%')}).</p>"
    ]
    if reason:
        parts.append(f"<p>{html.escape(reason)}</p>")
    decisions = [d for d in rollout.get("decisions") or [] if isinstance(d, Mapping)]
    if not decisions:
        parts.append("<p>No step decided yet: the step waits until both releases sent enough rows and requests.</p>")
        return "".join(parts)
    rows = [
        [
            _num(d.get("step"), "d"),
            _num(d.get("share"), ".1%"),
            f"<b>{html.escape(str(d.get('verdict')))}</b>",
            _when(d["at"]) if isinstance(d.get("at"), int | float) else "",
        ]
        for d in decisions
    ]
    parts.append(_table(["step", "share", "verdict", "decided at (UTC)"], rows))
    for d in decisions:
        checks = [
            [
                html.escape(str(c.get("name"))),
                html.escape(str(c.get("status"))),
                _num(c.get("p_value")),
                _num(c.get("alpha")),
                _num(c.get("effect")),
                _num(c.get("margin")),
                html.escape(str(c.get("message", ""))),
            ]
            for c in d.get("checks") or []
        ]
        parts.append(
            f"<h3>Step {_num(d.get('step'), 'd')}: {html.escape(str(d.get('verdict')))}</h3>"
            + _table(["check", "status", "p-value", "alpha", "effect", "margin", "message"], checks)
        )
    return "".join(parts)


def _utilization_section(utilization: dict[str, Any]) -> str:
    gpus = utilization.get("gpus", [])
    return (
        f"<p>NVML {html.escape(str(utilization.get('nvml_state')))}; {len(gpus)} GPU(s); host CPU "
        f"{_num(utilization.get('host_cpu_ratio'), '.1%')} of all cores in the last sample.</p>"
    )


def _sections(summary: dict[str, Any], plots: dict[str, tuple[str, str]]) -> Iterator[str]:
    bodies = {
        "summary": _summary_section(summary),
        "drift": _drift_section(summary["drift"]),
        "outputs": "" if "outputs" in plots else "<p>No numeric outputs in the window to compare.</p>",
        "latency": _latency_section(summary["latency"]),
        "labels": _labels_section(summary),
        "performance": _performance_section(summary["performance"], list(summary["classes"])),
        "utilization": _utilization_section(summary["utilization"]),
        "json": f"<pre>{html.escape(json.dumps(summary, indent=2, default=float))}</pre>",
    }
    sections = list(SECTIONS)
    if summary["rollout"]:
        bodies[ROLLOUT_SECTION[0]] = _rollout_section(summary["rollout"])
        sections.insert(1, ROLLOUT_SECTION)
    for section, title in sections:
        image = ""
        if section in plots:
            name, alt = plots[section]
            image = f'<img src="{html.escape(name)}" alt="{html.escape(alt)}">'
        yield f'<section id="{section}"><h2>{html.escape(title)}</h2>{bodies[section]}{image}</section>'


def write_report(history: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """``out/report.html`` (the sections of :data:`SECTIONS`, and :data:`ROLLOUT_SECTION` when a snapshot carries
    a rollout, with the PNGs beside it) and ``out/summary.json``
    from a monitor's snapshots, oldest first; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(history)
    plots = _plots(history, out)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>inferline monitor report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}td,th{{padding:2px 8px;text-align:left}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}img{{max-width:100%}}</style></head><body>
<h1>inferline monitor report</h1>
{"".join(_sections(summary, plots))}
</body></html>
"""
    atomic_write_bytes(out / "report.html", page.encode())
    atomic_write_json(out / "summary.json", summary)
    return summary
