"""The results of ``inferline bench run --pipeline``: JSON (every figure), markdown (the tables), a PNG (throughput
against p99 latency per step; Triton's time per request split into queue, compute input, compute infer and compute
output, stacked per model and step, with the time spent outside Triton on top), and the comparison with an earlier
results file, one line per step both runs measured:

    release 3 vs release 2: throughput x0.93 at c=16 (p99 x1.12)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from inferline.core.errors import UserError
from inferline.core.files import atomic_write_bytes, atomic_write_json
from inferline.serving.load.stats import PHASES

__all__ = ["compare_results", "markdown", "plot", "read_results", "write_outputs"]

FILES = ("results.json", "results.md", "results.png")


def read_results(path: Path) -> dict[str, Any]:
    """An earlier results document (``results.json`` of ``bench run --pipeline``)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"--compare {str(path)!r} cannot be read as JSON: {exc}; give a results.json it wrote") from exc
    if not isinstance(data, dict) or data.get("kind") != "pipeline_bench" or "steps" not in data:
        raise UserError(
            f"--compare {str(path)!r} is not a results file of `inferline bench run --pipeline` (no kind "
            "'pipeline_bench' with steps); give the results.json such a run wrote"
        )
    return data


def _who(r: dict[str, Any], fallback: str) -> str:
    n = r.get("release_number")
    return f"release {n}" if n is not None else fallback


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def compare_results(current: dict[str, Any], previous: dict[str, Any]) -> list[str]:
    """One line per step label both documents hold: ``release 3 vs release 2: throughput x0.93 at c=16 (p99
    x1.12)``; steps only one side measured are named as such."""
    me, them = _who(current, "this run"), _who(previous, "the previous run")
    if me == them:
        me, them = f"{me} (this run)", f"{them} (previous run)"
    before = {s["step"]: s for s in previous["steps"]}
    lines = []
    for s in current["steps"]:
        p = before.get(s["step"])
        if p is None:
            lines.append(f"{me} vs {them}: {s['step']} not measured by the previous run")
            continue
        tp = _ratio(s["throughput_rps"], p["throughput_rps"])
        p99 = _ratio(s["latency_ms"]["p99"], p["latency_ms"]["p99"])
        text = f"{me} vs {them}: throughput " + (f"x{tp:.2f}" if tp is not None else "n/a") + f" at {s['step']}"
        text += f" (p99 x{p99:.2f})" if p99 is not None else " (p99 n/a)"
        errors = sum(s["errors"].values()) + sum(p["errors"].values())
        if errors:
            text += f", {errors} failed requests behind it"
        lines.append(text)
    current_steps = {s["step"] for s in current["steps"]}
    lines += [f"{me} vs {them}: {label} only in the previous run" for label in before if label not in current_steps]
    return lines


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(r: dict[str, Any]) -> str:
    t, p, m = r["target"], r["payloads"], r["machine"]
    lines = [
        f"# {r['pipeline']} ({r.get('release') or 'release unknown'}): load sweep, {r['created_at'][:19]}Z",
        "",
        f"Target: `{t['url']}` over {t['protocol']} (via {t['via']}); server-side split: {t['stats']}.",
        f"Payloads: {p['distinct_requests']} distinct requests of {p['rows_per_request']} row(s) from "
        f"{p['source']} ({p['distinct_rows']} distinct rows), sent in turn; HTTP bodies {p['http_encoding']}.",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; Python {m['python']}. "
        f"Steps of {r['settings']['duration_s']:g} s after a {r['settings']['warmup_s']:g} s warm-up.",
        "",
        "| step | generator | req/s | rows/s | offered req/s | p50 ms | p95 ms | p99 ms | p99.9 ms | sent | errors | "
        "generator CPU (share of its core) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["steps"]:
        lat = s["latency_ms"]
        errors = ", ".join(f"{k} {v}" for k, v in s["errors"].items()) or "0"
        lines.append(
            f"| {s['step']} | {s['generator']} | {s['throughput_rps']:.1f} | {s['rows_per_s']:.1f} | "
            f"{_f(s['offered_rps'], 1)} | {_f(lat['p50'])} | {_f(lat['p95'])} | {_f(lat['p99'])} | "
            f"{_f(lat['p99.9'])} | {s['sent']} | {errors} | {s['loadgen']['core_share']:.0%} |"
        )
    lines += [
        "",
        "## Server-side split (Triton statistics, mean microseconds per request)",
        "",
        "| step | model | version | requests | failed | rows per execution | queue | compute input | compute infer "
        "| compute output | Triton total | client mean - Triton (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["steps"]:
        if s["server"] is None:
            lines.append(f"| {s['step']} | not measured: {s['server_note']} |||||||||||")
            continue
        for mstat in s["server"]:
            ph = mstat["us_per_request"]
            outside = _f(s["outside_triton_ms"]) if mstat["model"] == r["pipeline"] else ""
            lines.append(
                f"| {s['step']} | {mstat['model']} | {mstat['version']} | {mstat['requests']} | {mstat['failed']} | "
                f"{mstat['rows_per_execution']:.2f} | "
                + " | ".join(f"{ph[k]:.0f}" for k in PHASES)
                + f" | {mstat['request_us']:.0f} | {outside} |"
            )
    if r.get("comparison"):
        lines += ["", f"## Compared with {r['comparison']['previous']}", ""]
        lines += [f"- {line}" for line in r["comparison"]["lines"]]
    if r.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in r["warnings"]]
    lines += [
        "",
        "Throughput counts requests answered OK per second of the step's wall time. Latency is the client's, of "
        "answered requests (open loop: from when each request was due). The generator's CPU share is its CPU time "
        f"over the step's wall time, for one thread; above {r['settings']['loadgen_core_limit']:.0%} a step is "
        "flagged, since the generator may then be its limit.",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    for kind, marker in (("concurrency", "o"), ("rate", "s")):
        steps = [s for s in r["steps"] if s["kind"] == kind]
        if not steps:
            continue
        xs = [s["throughput_rps"] for s in steps]
        ys = [math.nan if s["latency_ms"]["p99"] is None else s["latency_ms"]["p99"] for s in steps]
        left.plot(xs, ys, marker=marker, label="closed loop" if kind == "concurrency" else "open loop")
        for s, x, y in zip(steps, xs, ys, strict=True):
            left.annotate(s["step"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    left.set_xlabel("throughput (requests/s answered OK)")
    left.set_ylabel("client p99 latency (ms)")
    left.set_title("throughput vs p99")
    left.grid(alpha=0.3)
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)

    models = sorted({m["model"] for s in r["steps"] for m in s["server"] or []})
    labels = [s["step"] for s in r["steps"]]
    width = 0.8 / max(1, len(models))
    colors = {
        "queue": "tab:red",
        "compute_input": "tab:orange",
        "compute_infer": "tab:blue",
        "compute_output": "tab:green",
    }
    drawn: set[str] = set()
    for j, model in enumerate(models):
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(labels))]
        bottoms = [0.0] * len(labels)
        for phase in (*PHASES, "outside"):
            heights = []
            for s in r["steps"]:
                mstat = next((m for m in s["server"] or [] if m["model"] == model), None)
                if phase == "outside":
                    value = s["outside_triton_ms"] if model == r["pipeline"] and mstat else None
                    heights.append(max(0.0, value) if value is not None else 0.0)
                else:
                    heights.append(mstat["us_per_request"][phase] / 1e3 if mstat else 0.0)
            label = "outside Triton (client mean - Triton)" if phase == "outside" else phase
            right.bar(
                xs,
                heights,
                width,
                bottom=bottoms,
                color=colors.get(phase, "lightgray"),
                label=label if label not in drawn else None,
                edgecolor="white",
                linewidth=0.5,
            )
            drawn.add(label)
            bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
        if len(models) > 1:
            for x in xs:
                right.annotate(model, (x, 0), textcoords="offset points", xytext=(0, -22), fontsize=6, ha="center")
    right.set_xticks(range(len(labels)), labels, fontsize=8)
    right.set_ylabel("mean ms per request")
    right.set_title("server-side split (Triton statistics)" if models else "server-side split: not measured")
    right.grid(axis="y", alpha=0.3)
    if drawn:
        right.legend(fontsize=7)
    fig.suptitle(f"{r['pipeline']} ({r.get('release') or 'release unknown'}) via {r['target']['via']}, "
                 f"{r['target']['protocol']}, {r['machine']['cores']} cores")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(r: dict[str, Any], out: Path) -> list[Path]:
    """``results.json``, ``results.md`` and ``results.png`` in ``out`` (created)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out / name for name in FILES)
    atomic_write_json(json_path, r)
    atomic_write_bytes(md_path, markdown(r).encode())
    plot(r, png_path)
    return [json_path, md_path, png_path]
