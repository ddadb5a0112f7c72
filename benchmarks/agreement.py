"""Does ``inferline bench run --pipeline`` measure what the project benchmark measures? Both, side by side in one
run, on the same server, interleaved repetition by repetition so that the machine's drift hits both alike:

- **demo**: the project suite's release (``stacks.build_release``: the fraud pipeline, the fused model with dynamic
  batching) on one tritonserver. Per repetition and concurrency: the suite's own measurement (``suite._measure``:
  wrk, the suite's JSON bodies of its 10,000-row pool); ``bench run``'s step (``measure_step``) on the same rows
  with ``--encoding json``, which must agree with it; and ``bench run``'s default, the binary tensor extension,
  which measures the server with less JSON to parse.
- **cnn**: the bring-your-own-model CNN release (``cnn_bench``). Per repetition and batch size: the CNN
  benchmark's served figure (one Python ``tritonclient`` caller, back to back) and ``bench run``'s step at c=1 with
  the same images in requests of that many rows, by its asyncio generator and by wrk.

Agreement: ``bench run``'s median throughput lies within the project benchmark's run-to-run spread (its min-max
over the repetitions, widened to +-10 % when the repetitions happen to fall closer than that), and the ratio's
median is reported with its min-max. Every way's measurement is bracketed by Triton's statistics, so each cell also
shows Triton's own time per request: where two ways disagree and that time does not, the difference lies outside
the server (in the client).

    python -m inferline.benchmarks.agreement [--reps 3] [--duration 5] [--out benchmarks/results/agreement]

Never beside other work: the figures become noise.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferline.benchmarks import cnn_bench, stacks
from inferline.benchmarks.suite import _measure, machine
from inferline.features.pipelines import fraud
from inferline.serving.load.payloads import Payloads, payloads_from_frame
from inferline.serving.load.stats import model_stats, settle, stats_delta
from inferline.serving.load.step import Step, measure_step
from inferline.serving.load.target import Target
from inferline.serving.server import ServerConfig, TritonServer

__all__ = ["agree", "main", "run_cnn", "run_demo"]

SPREAD_FLOOR = 0.10  # repetitions closer than +-10 % do not make a tighter yardstick than the machine's noise
DEMO_CONCURRENCY = (1, 16, 64)


@dataclass
class Series:
    """One way of measuring one cell (a concurrency or batch size), over the repetitions."""

    name: str
    throughput: list[float]
    p99_ms: list[float]
    triton_ms: list[float]  # Triton's own mean time per request of the served model (statistics API delta)

    def summary(self) -> dict[str, Any]:
        return {
            "throughput": _stats(self.throughput),
            "p99_ms": _stats(self.p99_ms),
            "triton_ms": _stats(self.triton_ms),
            "reps": list(zip(self.throughput, self.p99_ms, self.triton_ms, strict=True)),
        }


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def agree(reference: list[float], measured: list[float], floor: float = SPREAD_FLOOR) -> dict[str, Any]:
    """Whether ``measured``'s median lies within ``reference``'s run-to-run spread (its min-max, at least
    +-``floor`` of its median), and the per-repetition ratio measured / reference."""
    ref = statistics.median(reference)
    low, high = min(min(reference), ref * (1 - floor)), max(max(reference), ref * (1 + floor))
    ratios = [m / r for m, r in zip(measured, reference, strict=True) if r > 0]
    return {
        "agrees": bool(low <= statistics.median(measured) <= high),
        "band": [low, high],
        "ratio": _stats(ratios) if ratios else None,
    }


Way = Callable[[Any], tuple[float, float, int]]  # a cell -> (requests/s, p99 ms, requests sent)


def _bench(target: Target, payloads: Payloads, step: Step, duration_s: float, loadgen: str) -> tuple[float, float, int]:
    r = measure_step(target, payloads, step, duration_s, loadgen=loadgen)  # type: ignore[arg-type]
    if r.errors:
        raise RuntimeError(f"bench run step {step.label} failed requests: {r.errors}")
    return r.throughput_rps, r.latency_ms["p99"], r.sent


def _interleave(
    cells: list[Any], ways: dict[str, Way], reps: int, stats: tuple[str, str], progress: Callable[[str], None]
) -> dict[Any, dict[str, Series]]:
    """Every way of measuring every cell, ``reps`` times, each bracketed by Triton's statistics (``stats``: its
    HTTP address and the served model); the ways' order turns with the repetition."""
    url, model = stats
    out = {c: {w: Series(w, [], [], []) for w in ways} for c in cells}
    names = list(ways)
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for cell in cells:
            for w in order:
                before = model_stats(url)
                rps, p99, sent = ways[w](cell)
                served = [m for m in stats_delta(before, settle(url, None, model, sent, before)) if m.model == model]
                triton_ms = served[0].request_us / 1e3 if served else float("nan")
                series = out[cell][w]
                series.throughput.append(rps)
                series.p99_ms.append(p99)
                series.triton_ms.append(triton_ms)
                progress(
                    f"rep {rep + 1}/{reps} {cell} {w}: {rps:.0f} req/s, p99 {p99:.2f} ms, Triton {triton_ms:.3f} ms"
                )
    return out


def _cells(series: dict[Any, dict[str, Series]], reference: str, label: str) -> list[dict[str, Any]]:
    rows = []
    for cell, ways in series.items():
        ref = ways[reference]
        row: dict[str, Any] = {label: cell, "ways": {w: s.summary() for w, s in ways.items()}, "agreement": {}}
        for w, s in ways.items():
            if w != reference:
                row["agreement"][w] = agree(ref.throughput, s.throughput)
        rows.append(row)
    return rows


def run_demo(workdir: Path, reps: int, duration_s: float, progress: Callable[[str], None]) -> dict[str, Any]:
    release = stacks.build_release(workdir)
    server = TritonServer(ServerConfig.on_free_ports(release.repository, workdir / "triton")).start(timeout_s=120)
    try:
        assert server.process is not None
        url = server.config.http_url
        bodies = stacks.write_bodies(workdir / "bodies.jsonl", release.pool, stacks.triton_body)
        stack = stacks.Stack(
            "triton_batching_http", "", "http", f"http://{url}/v2/models/{stacks.PIPELINE}/infer", bodies,
            server.process.pid,
        )  # fmt: skip
        stacks.check_answers(stack)
        pool = pd.read_parquet(release.pool_file)
        target = Target(url, "http", stacks.PIPELINE, "triton", url)
        common = {"rows_per_request": 1, "pool_rows": len(pool), "source": "the project suite's payload pool"}
        as_json = payloads_from_frame(fraud.SPEC, pool, encoding="json", **common)  # type: ignore[arg-type]
        binary = payloads_from_frame(fraud.SPEC, pool, encoding="binary", **common)  # type: ignore[arg-type]
        ways: dict[str, Way] = {
            "suite": lambda c: _suite(stack, c, duration_s, release.pool_file),
            "bench_json": lambda c: _bench(target, as_json, Step("concurrency", c), duration_s, "wrk"),
            "bench_binary": lambda c: _bench(target, binary, Step("concurrency", c), duration_s, "wrk"),
        }
        series = _interleave(list(DEMO_CONCURRENCY), ways, reps, (url, stacks.PIPELINE), progress)
        as_json.close()
        binary.close()
    finally:
        server.stop()
    return {"reference": "suite", "cells": _cells(series, "suite", "concurrency")}


def _suite(stack: stacks.Stack, c: int, duration_s: float, pool_file: Path) -> tuple[float, float, int]:
    r = _measure(stack, c, duration_s, pool_file)
    if r["errors"]:
        raise RuntimeError(f"the suite's measurement at c={c} failed {r['errors']} requests")
    return r["throughput_rps"], r["p99_ms"], r["requests"]  # wrk's count: answers, not the few still in flight


def run_cnn(workdir: Path, reps: int, duration_s: float, progress: Callable[[str], None]) -> dict[str, Any]:
    from tritonclient.http import InferenceServerClient, InferInput

    built = cnn_bench.publish_release(workdir)
    server = TritonServer(ServerConfig.on_free_ports(built.repository, workdir / "triton")).start(timeout_s=180)
    try:
        url = server.config.http_url
        client = InferenceServerClient(url)

        def served(x: np.ndarray) -> Any:  # cnn_bench's served call, as it makes it
            inp = InferInput("image", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            return client.infer(cnn_bench.SPEC.name, [inp])

        def project(batch: int) -> tuple[float, float, int]:
            r = cnn_bench._timed(served, built.pool, batch, duration_s)
            return r["images_per_s"] / batch, r["p99_ms"], int(r["requests"]) + 1  # and its warm-up request

        frame = pd.DataFrame({"image": list(built.pool)})
        target = Target(url, "http", cnn_bench.SPEC.name, "triton", url)
        payloads = {
            b: payloads_from_frame(cnn_bench.SPEC, frame, rows_per_request=b, pool_rows=len(frame), source="pool")
            for b in cnn_bench.BATCHES
        }
        one = Step("concurrency", 1)
        ways: dict[str, Way] = {
            "cnn_bench": project,
            "bench_asyncio": lambda b: _bench(target, payloads[b], one, duration_s, "asyncio"),
            "bench_wrk": lambda b: _bench(target, payloads[b], one, duration_s, "wrk"),
        }
        series = _interleave(list(cnn_bench.BATCHES), ways, reps, (url, cnn_bench.SPEC.name), progress)
        client.close()
        for p in payloads.values():
            p.close()
    finally:
        server.stop()
    return {"reference": "cnn_bench", "cells": _cells(series, "cnn_bench", "batch")}


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# bench run against the project benchmark, one run ({results['created_at']}, {results['wall_s']:.0f} s)",
        "",
        f"Machine: {results['machine'].get('cpu')}, {results['machine'].get('cores')} cores. {results['reps']} "
        f"interleaved repetitions of {results['duration_s']:g} s per cell; figures are median [min-max]. Agreement: "
        f"the median within the reference's min-max, at least +-{SPREAD_FLOOR:.0%}. Command: "
        "`python -m inferline.benchmarks.agreement`.",
    ]
    for part, label, unit in (("demo", "concurrency", "req/s"), ("cnn", "batch", "requests/s")):
        block = results.get(part)
        if not block:
            continue
        lines += ["", f"## {part} (reference: {block['reference']})", ""]
        lines += [
            f"| {label} | way | {unit} | p99 ms | Triton ms per request | / reference | agrees |",
            "|---|---|---|---|---|---|---|",
        ]
        for cell in block["cells"]:
            for way, s in cell["ways"].items():
                t, p, tm = s["throughput"], s["p99_ms"], s["triton_ms"]
                a = cell["agreement"].get(way)
                ratio = "-" if a is None else _fmt(a["ratio"], "x", 2)
                verdict = "reference" if a is None else ("yes" if a["agrees"] else "**no**")
                lines.append(
                    f"| {cell[label]} | {way} | {_fmt(t, '', 0)} | {_fmt(p, '', 2)} | {_fmt(tm, '', 3)} | {ratio} | "
                    f"{verdict} |"
                )
    return "\n".join(lines) + "\n"


def _fmt(s: dict[str, float] | None, suffix: str, digits: int) -> str:
    if s is None:
        return "-"
    return f"{s['median']:.{digits}f}{suffix} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferline.benchmarks.agreement", description=__doc__)
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default: 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default: 5)")
    parser.add_argument("--only", choices=("demo", "cnn"), help="one part only (default: both)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/agreement"), help="results folder")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    results: dict[str, Any] = {"reps": args.reps, "duration_s": args.duration, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="inferline-agreement-") as tmp:
        for part, fn in (("demo", run_demo), ("cnn", run_cnn)):
            if args.only in (None, part):
                results[part] = fn(Path(tmp) / part, args.reps, args.duration, functools.partial(print, part))
    results["created_at"] = started.strftime("%Y-%m-%dT%H:%M:%SZ")
    results["wall_s"] = (datetime.now(UTC) - started).total_seconds()
    print(cnn_bench.save_results(args.out, results, to_markdown(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
