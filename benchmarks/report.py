"""Benchmark results as JSON (every sample), a markdown report, and PNG plots."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from inferline.core.files import atomic_write_bytes, atomic_write_json

__all__ = ["markdown", "summary", "write_results"]


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of a figure's repetitions."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _fmt(s: dict[str, float], digits: int = 0) -> str:
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def _measured(row: dict[str, Any]) -> str:
    """A ratio as median [min-max], with what makes it doubtful said beside it."""
    if not row.get("measured", True):
        return "not measured (a side did not run)"
    text = f"{row['median']:.2f}x [{row['min']:.2f}-{row['max']:.2f}]"
    if row.get("errors"):
        text += f", {row['errors']} failed requests"
    return text


def _load_table(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| stack | concurrency | req/s | p50 ms | p95 ms | p99 ms | inferences / server CPU-s | "
        "server CPU-s | edge CPU us / request | load-generator CPU-s | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, per_c in summary.items():
        for c, v in per_c.items():
            edge = v.get("edge_cpu_us_per_request", {}).get("median", 0.0)  # results from before it was measured
            lines.append(
                f"| {name} | {c} | {_fmt(v['throughput_rps'])} | {_fmt(v['p50_ms'], 2)} | {_fmt(v['p95_ms'], 2)} | "
                f"{_fmt(v['p99_ms'], 2)} | {_fmt(v['inferences_per_server_cpu_s'])} | "
                f"{v['server_cpu_s']['median']:.1f} | {f'{edge:.0f}' if edge else '-'} | "
                f"{v['loadgen_cpu_s']['median']:.1f} | {v['errors']['max']:.0f} |"
            )
    return lines


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"# inferline benchmarks ({r['mode']} run, {r['created_at'][:19]}Z, {r['wall_s']} s)",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, GPU: {m['gpu']}; Python {m['python']}.",
        "Each figure: median [min-max] over interleaved repetitions; each ratio is computed per repetition.",
        "",
    ]
    if "goals" in r:
        lines += [
            "## Goals",
            "",
            "Each ratio is a / b, computed per repetition; a goal is judged on the median, and is not met when a run "
            "behind it had failed requests.",
            "",
            "| goal | ratio (a / b) | measured | target | met |",
            "|---|---|---|---|---|",
        ]
        for g in r["goals"]:
            op = ">=" if g["higher_is_better"] else "<="
            lines.append(
                f"| {g['goal']} | {g['ratio']} | {_measured(g)} | {op} {g['target']} | "
                f"{'met' if g['met'] else '**NOT MET**'} |"
            )
        lines.append("")
    if r.get("comparisons"):
        lines += [
            "## Ratios reported without a target",
            "",
            "| ratio (a / b) | concurrency | measured |",
            "|---|---|---|",
        ]
        for row in r["comparisons"]:
            lines.append(f"| {row['ratio']} | {row['concurrency']} | {_measured(row)} |")
        lines.append("")
    if "serving" in r:
        s = r["serving"]
        lines += ["## Serving: one raw row per request", "", *_load_table(s["summary"])]
        pool = s.get("pool")
        lines += [
            "",
            "Stacks: " + "; ".join(f"`{k}`: {d}" for k, d in s["stacks"].items()) + ".",
            "HTTP stacks are driven by wrk (1 thread); gRPC by `benchmarks.grpc_load` (Python asyncio, whose "
            "own CPU use caps what it can offer on 2 cores). Torch, onnxruntime and OpenMP use 1 thread each.",
        ]
        if pool:
            lines.append(
                f"Payloads: every load generator sends, in turn, the {pool['rows']:,} distinct rows of a pool "
                f"generated with seed {pool['seed']} (not the training data's), each description made unique."
            )
        lines.append("")
    if "edge" in r:
        e = r["edge"]
        lines += ["## The edge against Triton direct, on one server", "", *_load_table(e["summary"]), ""]
        lines += ["| ratio (a / b) | " + " | ".join(f"c={c}" for c in next(iter(e["ratios"].values()))) + " |"]
        lines += ["|---|" + "---|" * len(next(iter(e["ratios"].values())))]
        for name, per_c in e["ratios"].items():
            lines.append(f"| {name} | " + " | ".join(f"{_fmt(v, 2)}x" for v in per_c.values()) + " |")
        lines += ["", "Stacks: " + "; ".join(f"`{k}`: {d}" for k, d in e["stacks"].items()) + ".", ""]
    if "sketch" in r:
        k = r["sketch"]
        lines += [
            "## Latency sketch: monitor.sketch.LogHistogram against the ddsketch package",
            "",
            f"{k['values']:,} latencies in {k['slices']} slices, both at {k['relative_accuracy']:.0%} relative "
            "accuracy, interleaved.",
            "",
            "| side | ns per value added | merge of the slices (ms) | p50 error | p99 error | p99.9 error | bytes |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("inferline", "ddsketch"):
            err = k["quantile_relative_error"][name]
            lines.append(
                f"| {name} | {_fmt(summary(k['ns_per_value_added'][name]), 0)} | "
                f"{_fmt(summary([s * 1e3 for s in k['merge_s'][name]]), 2)} | {err['0.5']:.2%} | {err['0.99']:.2%} | "
                f"{err['0.999']:.2%} | {k['serialized_bytes'][name]} |"
            )
        lines += [
            "",
            f"Adding: the hand-written sketch is {_fmt(summary(k['add_speedup_over_ddsketch']), 1)}x faster.",
            "",
        ]
    if "inprocess" in r:
        p = r["inprocess"]["per_call_us"]
        sizes = list(next(iter(p.values())))
        lines += [
            "## In process: model only, one thread",
            "",
            "| runtime | " + " | ".join(f"batch {b} (us)" for b in sizes) + " |",
            "|---|" + "---|" * len(sizes),
        ]
        for name, d in p.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(summary(v), 1) for v in d.values()) + " |")
        for name, note in r["inprocess"]["notes"].items():
            lines.append(f"\n{name}: {note}")
        lines.append("")
    if "features" in r:
        f = r["features"]
        lines += [
            "## Compiled contract",
            "",
            f"Batch features over {f['rows']} rows: {_fmt(summary(f['pandas_rows_per_s']))} rows/s, "
            f"{_fmt(summary(f['pandas_gb_per_s']), 3)} GB/s of raw input, against numpy copy bandwidth "
            f"{_fmt(summary(f['numpy_copy_gb_per_s']), 2)} GB/s in the same run.",
            "",
            f"Request path (wire tensors -> validated features), {f['request_pool_rows']} distinct rows whose free "
            f"text never repeats; requests of up to {f['scalar_path_up_to_rows']} rows take the scalar path:",
            "",
            "| rows per call | us per call | us per row | numpy copy of the request, us | ratio to the copy | goal |",
            "|---|---|---|---|---|---|",
        ]
        for n, d in f["request_path"].items():
            per_row = summary(d["contract_us_per_row"])
            per_call = summary(d["contract_us_per_call"])
            goal = f["goals_us"][n]
            figure = per_call if n == "1" else per_row
            met = "met (median)" if figure["median"] <= goal else "NOT MET"
            unit = "per call" if n == "1" else "per row"
            lines.append(
                f"| {n} | {_fmt(per_call, 1)} | {_fmt(per_row, 2)} | {_fmt(summary(d['numpy_copy_us_per_call']), 1)} "
                f"| {_fmt(summary(d['ratio_contract_over_copy']), 1)} | <= {goal:g} us {unit}: {met} |"
            )
        lines += ["", f"cuDF kernels: {f['cudf']}.", ""]
    if "validation" in r:
        v = r["validation"]
        ours, plain = v["rows_per_s"]["inferline_validate_frame"], v["rows_per_s"]["pandera_lazy"]
        ratio = summary(v["ratio_inferline_over_pandera"])
        lines += [
            "## Validation",
            "",
            f"{v['rows']} rows with {v['defect_share']:.0%} defects: inferline `validate_frame` (policy "
            "normalization, pandera for the structure, the compiled contract for the rows, quarantine split) "
            f"{_fmt(summary(ours))} rows/s; plain pandera lazy validation of the same schema "
            f"{_fmt(summary(plain))} rows/s; ratio "
            f"{ratio['median']:.2f}x [{ratio['min']:.2f}-{ratio['max']:.2f}] (inferline / pandera).",
            "",
        ]
        if "inferline_without_new_rules" in v["rows_per_s"]:
            cost = summary(v["ratio_new_rules_over_before"])
            lines += [
                "The same data without the protective text defaults (default max_length, forbidden code-point "
                f"sets, NFC normalization): {_fmt(summary(v['rows_per_s']['inferline_without_new_rules']))} rows/s; "
                f"with them / without {cost['median']:.2f}x [{cost['min']:.2f}-{cost['max']:.2f}] (the rules "
                "without them pass the ids with a zero-width character).",
                "",
            ]
    if "batch" in r:
        b = r["batch"]
        lines += [
            "## Batch inference",
            "",
            f"{b['rows']:,} rows in {b['files']} Parquet files ({b['partitions']} partitions of whole row groups) on "
            f"{r['machine']['cores']} cores, "
            "same release and output format on every side; wall time includes planning, cluster start-up, writing "
            "and committing.",
            "",
            "| side | seconds | rows/s |",
            "|---|---|---|",
        ]
        for name, secs in b["seconds"].items():
            lines.append(f"| {name} | {_fmt(summary(secs), 2)} | {_fmt(summary(b['rows_per_s'][name]))} |")
        lines += [
            "",
            f"Largest difference in any probability between the sides: {b['max_abs_diff_between_sides']:.1e}.",
            "",
        ]
    if "monitor" in r:
        d, o = r["monitor"]["drift"], r["monitor"]["overhead"]
        lines += [
            "## Drift detection",
            "",
            f"{d['rows']:,} reference rows and {d['rows']:,} current rows x {d['columns']['numeric']} numeric + "
            f"{d['columns']['categorical']} categorical columns; shifted: "
            + ", ".join(f"{k} ({v})" for k, v in d["shifted"].items())
            + f". alpha {d['alpha']} over all columns (Bonferroni). inferline's references precomputed in "
            f"{d['reference_precompute_s']:.2f} s.",
            "",
            "| side | seconds per window | flagged | missed | false positives |",
            "|---|---|---|---|---|",
        ]
        for name, secs in d["seconds"].items():
            det = d["detection"][name]
            lines.append(
                f"| {name} | {_fmt(summary(secs), 3)} | {', '.join(det['flagged']) or '-'} | "
                f"{', '.join(det['missed']) or '-'} | {', '.join(det['false_positives']) or '-'} |"
            )
        fp = d["false_positives"]
        lines += [
            "",
            f"Undrifted windows ({fp['windows']} x {fp['rows_per_window']:,} rows, {fp['tests']} tests per side): "
            + ", ".join(f"{k} {v} false flags" for k, v in fp["flags"].items())
            + f"; nominal rate per test {fp['nominal_rate_per_test']:.4f} "
            f"(at most {fp['windows_with_any_flag_nominal']:.0%} of windows with any flag).",
            "",
            "## Monitor overhead on serving",
            "",
            f"wrk c={o['concurrency']}, {o['duration_s']:g} s per run, {len(o['ratio_on_over_off'])} interleaved "
            "pairs: "
            f"with traces (1 request in {o['trace_rate']}) + monitor "
            f"{_fmt(summary(o['throughput_rps']['on']))} req/s, without {_fmt(summary(o['throughput_rps']['off']))} "
            f"req/s.",
            "",
        ]
    lines += [f"GPU rows: {r['gpu']}.", ""]
    return "\n".join(lines)


def _plots(r: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "serving" in r:
        fig, axes = plt.subplots(1, 2, figsize=(13, 5))
        for name, per_c in r["serving"]["summary"].items():
            cs = [int(c) for c in per_c]
            style = {"color": "black", "linestyle": "--"} if name.startswith("floor") else {}
            for ax, key in zip(axes, ("throughput_rps", "p99_ms"), strict=True):
                med = [per_c[str(c)][key]["median"] for c in cs]
                lo = [med[i] - per_c[str(c)][key]["min"] for i, c in enumerate(cs)]
                hi = [per_c[str(c)][key]["max"] - med[i] for i, c in enumerate(cs)]
                ax.errorbar(cs, med, yerr=[lo, hi], marker="o", capsize=3, label=name, **style)
        for ax, label in zip(axes, ("requests/s (one row each)", "p99 latency (ms)"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent connections")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[1].set_yscale("log")
        axes[0].set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"Serving, {r['machine']['cores']} cores, {r['mode']} run (median, min-max)")
        fig.tight_layout()
        fig.savefig(out / "serving.png", dpi=110)
        plt.close(fig)
        written.append("serving.png")
    if "inprocess" in r:
        p = r["inprocess"]["per_call_us"]
        sizes = list(next(iter(p.values())))
        fig, ax = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(p)
        for i, (name, d) in enumerate(p.items()):
            ax.bar(
                [j + i * width for j in range(len(sizes))],
                [statistics.median(v) for v in d.values()],
                width,
                label=name,
            )
        ax.set_xticks([j + width * (len(p) - 1) / 2 for j in range(len(sizes))], [f"batch {b}" for b in sizes])
        ax.set_yscale("log")
        ax.set_ylabel("microseconds per call (median)")
        ax.legend()
        ax.set_title("Model only, in process, 1 thread")
        fig.tight_layout()
        fig.savefig(out / "inprocess.png", dpi=110)
        plt.close(fig)
        written.append("inprocess.png")
    if "batch" in r:
        b = r["batch"]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        names = list(b["rows_per_s"])
        med = [statistics.median(b["rows_per_s"][n]) for n in names]
        err = [
            [m - min(b["rows_per_s"][n]) for m, n in zip(med, names, strict=True)],
            [max(b["rows_per_s"][n]) - m for m, n in zip(med, names, strict=True)],
        ]
        ax.barh(names, med, xerr=err, capsize=3, color=["tab:blue", "tab:cyan", "tab:gray"][: len(names)])
        ax.set_xlabel("rows per second, end to end (median, min-max)")
        ax.set_title(f"Batch inference over {b['rows']:,} rows, {r['machine']['cores']} cores")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "batch.png", dpi=110)
        plt.close(fig)
        written.append("batch.png")
    return written


def write_results(r: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    r["plots"] = _plots(r, out)
    atomic_write_json(out / "results.json", r)
    atomic_write_bytes(out / "results.md", markdown(r).encode())
