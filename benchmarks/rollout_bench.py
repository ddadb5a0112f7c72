"""What a rollout costs and how well it decides, measured on real served answers.

1. **Shadow overhead**: the current release's throughput through the HTTP edge with a shadow rollout copying 5 % of
   requests to a second release (``inferline rollout shadow``'s routing, its copies and their pairs sampled to a
   live monitor) against the same release behind an edge with no rollout. Two supervised servers side by side,
   wrk (one thread) driving each in turn, interleaved, one raw row per request from the suite's pool of distinct
   rows; both servers sample 1 % of answers to the same monitor. Goal (issue 32): under 10 % lower.
2. **The decision on real answers**: four releases served by one Triton through the edge, each addressed by
   version, requests interleaved round-robin so every release sees the same machine: the current release, an
   identical one (the same run published again), one that sleeps 20 ms per batch and one with a flipped head.
   From their answers (the latency the client measured per request, the probabilities and classes per row):
   the false-alarm rate of whole rollouts of the identical release (``monitor.rollout_decision``: resampled
   rollouts of the current release against itself, and of the current against the real identical release), and
   the rows each bad release answered before it was stopped.

    .venv/bin/python -m inferline.benchmarks.rollout_bench --reps 3 --duration 8 --out benchmarks/results/rollout

Run it on a quiet machine: the ratios matter, not the absolute figures."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from inferline.benchmarks.load import run_wrk
from inferline.benchmarks.release_faults import flip_head, slow_down
from inferline.benchmarks.stacks import build_release, serve_up, triton_body, write_bodies
from inferline.core.files import atomic_write_bytes
from inferline.core.processes import free_port, stop_process
from inferline.core.secrets import admin_key, monitor_key
from inferline.export.publish import publish
from inferline.monitor.app import MonitorServer
from inferline.monitor.config import MonitorConfig
from inferline.monitor.rollout_decision import Arm, Policy, rows_to_stop, simulate_false_alarms
from inferline.monitor.service import Monitor
from inferline.release.rollout import Rollout, wait_for_ack, write_rollout
from inferline.release.switch import load_beside

__all__ = ["bench_decisions", "bench_shadow_overhead"]

SHARES = (0.05, 0.25, 0.5)  # the default canary steps (`inferline rollout canary`), promotion after the last
ROWS_PER_REQUEST = 8


def _triton_http(workdir: Path) -> str:
    return str(json.loads((workdir / "serving" / "server.json").read_text())["http"])


def bench_shadow_overhead(
    repository: Path, candidate: int, pool: list[dict[str, Any]], workdir: Path, reps: int, duration_s: float,
    concurrency: int, share: float = 0.05,
) -> dict[str, Any]:  # fmt: skip
    config = MonitorConfig(repository=repository, pipeline="fraud", port=free_port(), nvml=False, interval_s=1.0)
    key = monitor_key(workdir / "plain")
    monitor = MonitorServer(Monitor(config), ingest_key=key).start()
    stacks: dict[str, tuple[Any, str, str]] = {}
    try:
        for name in ("plain", "shadow"):
            copy = workdir / f"repo-{name}"
            if not copy.exists():
                import shutil

                shutil.copytree(repository, copy)
            (workdir / name).mkdir(parents=True, exist_ok=True)
            (workdir / name / "monitor.key").write_text(key + "\n")
            (workdir / name / "monitor.key").chmod(0o600)
            stacks[name] = serve_up(copy, workdir / name, "--monitor-url", monitor.url, "--sample-rate", "0.01")
        shadow_repo = workdir / "repo-shadow"
        rollout = write_rollout(shadow_repo, Rollout("fraud", "shadow", 1, candidate, [share], policy={}))
        wait_for_ack(shadow_repo, rollout, 10.0)
        http = _triton_http(workdir / "shadow")
        load_beside(http, admin_key(workdir / "shadow"), shadow_repo, "fraud", candidate)
        rollout.phase = "running"
        write_rollout(shadow_repo, rollout)
        if not wait_for_ack(shadow_repo, rollout, 10.0):
            raise RuntimeError("the shadow server's edge did not acknowledge the rollout")
        bodies = write_bodies(workdir / "bodies.jsonl", pool, triton_body)
        throughput: dict[str, list[float]] = {name: [] for name in stacks}
        p99: dict[str, list[float]] = {name: [] for name in stacks}
        for _, url, _ in stacks.values():  # warm both
            run_wrk(f"http://{url}/v2/models/fraud/infer", bodies, concurrency, 2)
        for _ in range(reps):
            for name, (_, url, _) in stacks.items():
                result = run_wrk(f"http://{url}/v2/models/fraud/infer", bodies, concurrency, duration_s)
                throughput[name].append(result.throughput)
                p99[name].append(result.p99_ms)
                print(f"{name}: {result.throughput:.0f} req/s, p99 {result.p99_ms:.2f} ms, errors {result.errors}",
                      flush=True)  # fmt: skip
        from inferline.core.http import get_text

        shadow_metrics = get_text(stacks["shadow"][2], timeout_s=10)
        copies = {
            line.split("outcome=")[1].split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in shadow_metrics.splitlines()
            if line.startswith("inferline_edge_shadow_requests_total{")
        }
    finally:
        for proc, _, _ in stacks.values():
            stop_process(proc)
        monitor.stop()
    ratios = [s / p for s, p in zip(throughput["shadow"], throughput["plain"], strict=True)]
    return {
        "share": share,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "throughput_rps": throughput,
        "p99_ms": p99,
        "ratio_shadow_over_plain": ratios,
        "median_ratio": statistics.median(ratios),
        "shadow_copies": copies,
    }


def _collect(edge: str, versions: list[int], pool: list[dict[str, Any]], requests: int, threads: int) -> dict[int, Arm]:
    """``requests`` requests of ROWS_PER_REQUEST rows to each version: every request's rows go to every version in
    turn (the releases answer the same rows, so their answers differ only by the release), threads interleaved."""
    import pandas as pd
    import tritonclient.http as httpclient

    from inferline.features.pipelines import fraud
    from inferline.features.wire import encode_rows

    frame = pd.DataFrame(pool)
    arrays = encode_rows(frame, fraud.SPEC)
    n = len(frame)
    latency: dict[int, list[float]] = {v: [] for v in versions}
    values: dict[int, list[np.ndarray]] = {v: [] for v in versions}
    predicted: dict[int, list[np.ndarray]] = {v: [] for v in versions}
    failed = dict.fromkeys(versions, 0)
    lock = threading.Lock()

    def work(k: int) -> None:
        client = httpclient.InferenceServerClient(edge, network_timeout=60.0)
        i = k * 997
        for _ in range(requests // threads):
            start = i % (n - ROWS_PER_REQUEST)
            i += ROWS_PER_REQUEST
            for v in versions:
                inputs = []
                for c in fraud.SPEC.input_columns:
                    part = arrays[c.name][start : start + ROWS_PER_REQUEST]
                    tensor = httpclient.InferInput(c.name, list(part.shape), c.triton_dtype)
                    tensor.set_data_from_numpy(part, binary_data=True)
                    inputs.append(tensor)
                began = time.perf_counter()
                try:
                    result = client.infer("fraud", inputs, model_version=str(v))
                except Exception:  # noqa: BLE001 - a failed request is a figure here
                    with lock:
                        failed[v] += 1
                    continue
                took = time.perf_counter() - began
                status = result.as_numpy("status").reshape(-1)
                ok = status == b"ok"
                with lock:
                    latency[v].append(took)
                    values[v].append(result.as_numpy("probabilities")[ok])
                    predicted[v].append(result.as_numpy("predicted_class").reshape(-1)[ok].astype(np.int64))
        client.close()

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {
        v: Arm(
            np.asarray(latency[v]),
            len(latency[v]),
            failed[v],
            np.concatenate(values[v]).astype(np.float64),
            np.concatenate(predicted[v]),
        )
        for v in versions
    }


def bench_decisions(
    repository: Path, run_dir: Path, pool: list[dict[str, Any]], workdir: Path, requests: int, runs: int
) -> dict[str, Any]:
    equal = publish(run_dir, repository, promote=False, load_check=False).version
    slow = publish(run_dir, repository, promote=False, load_check=False).version
    flipped = publish(run_dir, repository, promote=False, load_check=False).version
    slow_down(repository, slow, 0.02)
    flip_head(repository, flipped)
    proc, edge, _ = serve_up(repository, workdir / "decisions")
    try:
        import tritonclient.http as httpclient

        from inferline.release.switch import activate

        http = _triton_http(workdir / "decisions")
        activate(repository, "fraud", 1, also_load=[equal, slow, flipped])
        client = httpclient.InferenceServerClient(http, network_timeout=120.0)
        client.load_model("fraud", headers={"admin-key": admin_key(workdir / "decisions")})
        client.close()
        started = time.perf_counter()
        arms = _collect(edge, [1, equal, slow, flipped], pool, requests, threads=4)
        collected_s = time.perf_counter() - started
    finally:
        stop_process(proc)
    policy = Policy(steps=len(SHARES))
    current = arms[1]
    resampled = simulate_false_alarms(current, "binary", policy, SHARES, runs=runs, seed=1)
    pair_stops = [rows_to_stop(current, arms[equal], "binary", policy, SHARES, seed=s) for s in range(runs)]
    alarms = sum(1 for r in pair_stops if r["stopped_at_step"] is not None)
    real_pair = {"runs": runs, "false_alarms": alarms, "rate": alarms / runs, "by_check": _count_checks(pair_stops)}
    bad: dict[str, Any] = {}
    for name, version in (("slow 20 ms per batch", slow), ("flipped head", flipped)):
        stops = [rows_to_stop(current, arms[version], "binary", policy, SHARES, seed=s) for s in range(50)]
        stopped = [r for r in stops if r["stopped_at_step"] is not None]
        bad[name] = {
            "stopped": f"{len(stopped)}/{len(stops)}",
            "step": statistics.median(r["stopped_at_step"] for r in stopped) if stopped else None,
            "candidate_rows_median": statistics.median(r["candidate_rows"] for r in stopped) if stopped else None,
            "checks": _count_checks(stopped),
        }
    figures = {
        v: {
            "requests": int(a.latency_s.size),
            "failed": a.failed_requests,
            "p50_ms": float(np.percentile(a.latency_s, 50) * 1e3),
            "p99_ms": float(np.percentile(a.latency_s, 99) * 1e3),
            "positive_share": float(a.predicted.mean()) if a.predicted is not None and a.predicted.size else None,
        }
        for v, a in arms.items()
    }
    return {
        "policy": {k: getattr(policy, k) for k in policy.__dataclass_fields__},
        "shares": list(SHARES),
        "collected_s": collected_s,
        "releases": {"current": 1, "identical": equal, "slow": slow, "flipped": flipped},
        "answers": figures,
        "false_alarms_resampled_current": {k: v for k, v in resampled.items() if k != "rows_per_run"},
        "false_alarms_current_vs_identical_release": real_pair,
        "bad_candidates": bad,
    }


def _count_checks(stops: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in stops:
        for name in r["checks"]:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _markdown(result: dict[str, Any]) -> str:
    shadow, decisions = result["shadow"], result["decisions"]
    lines = [
        "# Rollouts: shadow overhead and the decision on real answers",
        "",
        f"`python -m inferline.benchmarks.rollout_bench` on {result['machine']}, {result['date']}.",
        "",
        f"## Shadow at {shadow['share']:.0%}: the current release's throughput through the HTTP edge",
        "",
        "| | req/s per rep | p99 ms per rep |",
        "|---|---|---|",
    ]
    for name in ("plain", "shadow"):
        rps = ", ".join(f"{x:.0f}" for x in shadow["throughput_rps"][name])
        p99 = ", ".join(f"{x:.1f}" for x in shadow["p99_ms"][name])
        lines.append(f"| {name} | {rps} | {p99} |")
    lines += [
        "",
        f"Shadow / plain, median of {len(shadow['ratio_shadow_over_plain'])} interleaved reps: "
        f"**{shadow['median_ratio']:.3f}** (goal >= 0.90); copies sent: {shadow['shadow_copies']}.",
        "",
        "## The decision (alpha 0.05 over the whole rollout; steps "
        + " -> ".join(f"{s:.0%}" for s in decisions["shares"])
        + f"; {decisions['policy']['min_rows']} rows and {decisions['policy']['min_requests']} requests per arm)",
        "",
        "| release answers | requests | failed | p50 ms | p99 ms | predicted positive |",
        "|---|---|---|---|---|---|",
    ]
    names = {v: k for k, v in decisions["releases"].items()}
    for v, f in decisions["answers"].items():
        lines.append(
            f"| {names[int(v)]} ({v}) | {f['requests']} | {f['failed']} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | "
            f"{f['positive_share']:.3%} |"
        )
    a, b = decisions["false_alarms_resampled_current"], decisions["false_alarms_current_vs_identical_release"]
    lines += [
        "",
        f"- False alarms, identical candidate resampled from the current release's answers: {a['false_alarms']}/"
        f"{a['runs']} = **{a['rate']:.3f}** (by check: {a['by_check']})",
        f"- False alarms, the current release against the identical release actually served: {b['false_alarms']}/"
        f"{b['runs']} = **{b['rate']:.3f}** (by check: {b['by_check']})",
    ]
    for name, f in decisions["bad_candidates"].items():
        lines.append(
            f"- {name}: stopped in {f['stopped']} simulated rollouts, at step {f['step']} (median), after "
            f"{f['candidate_rows_median']} candidate rows (median); checks: {f['checks']}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="interleaved wrk runs per server (shadow overhead)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, default=16, help="wrk connections")
    parser.add_argument("--requests", type=int, default=2_000, help="requests per release for the decision figures")
    parser.add_argument("--runs", type=int, default=300, help="simulated rollouts of the identical candidate")
    parser.add_argument("--out", default=None, help="a directory for results.json and results.md")
    args = parser.parse_args(argv)
    import platform

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        release = build_release(workdir / "release", rows=20_000, pool_rows=2_000)
        candidate = publish(release.run_dir, release.repository, promote=False, load_check=False).version
        shadow = bench_shadow_overhead(
            release.repository, candidate, release.pool, workdir, args.reps, args.duration, args.concurrency
        )
        decisions = bench_decisions(
            release.repository, release.run_dir, release.pool, workdir, args.requests, args.runs
        )
    result = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "shadow": shadow,
        "decisions": decisions,
    }
    text = json.dumps(result, indent=2, default=str)
    print(text)
    print(_markdown(result))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / "results.json", (text + "\n").encode())
        atomic_write_bytes(out / "results.md", _markdown(result).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
