"""The end-to-end demo: generate -> validate -> train -> export + parity gate -> publish -> Triton -> HTTP and gRPC
predictions -> batch -> monitor -> summary. Every step is the same public code the stage command lines run.

``inferline demo`` (``make demo``) runs it; it sits above every stage (the import-linter layers in pyproject.toml).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from inferline.core.command import Parser, new_dir, positive_int, run
from inferline.core.files import atomic_write_json, atomic_write_parquet
from inferline.core.http import answers_ok, get_json
from inferline.core.processes import free_port, port_or_free, stop_process, wait_until_ready
from inferline.core.secrets import monitor_key
from inferline.export.publish import publish
from inferline.features.dataset import expand_paths, load_validated
from inferline.features.spec import load_pipeline_module
from inferline.features.state import STATE_FILE, FeatureState, compute_features
from inferline.features.synthetic import apply_shifts, parse_shift
from inferline.serving.client import InferlineClient, Protocol
from inferline.serving.server import ServerConfig, TritonServer
from inferline.serving.tap import MonitorTap
from inferline.training.model import load_checkpoint
from inferline.training.train import train


def in_process_probabilities(run_dir: Path, rows: pd.DataFrame, pipeline: str) -> np.ndarray:
    """Training code, in this process: the run's fitted state + checkpoint on the same raw rows."""
    spec = load_pipeline_module(pipeline).SPEC
    state = FeatureState.load(run_dir / STATE_FILE)
    m = compute_features(rows, spec, state)
    model = load_checkpoint(run_dir / "checkpoint.pt")
    with torch.no_grad():
        probs, _ = model(torch.from_numpy(m.numeric), torch.from_numpy(m.categorical))
    return np.asarray(probs.numpy())


def _latency(client: InferlineClient, rows: pd.DataFrame, n: int) -> dict[str, float]:
    for i in range(10):  # warm-up
        client.predict(rows.iloc[[i]])
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        client.predict(rows.iloc[[i % len(rows)]])
        samples.append(time.perf_counter() - t0)
    ms = np.array(samples) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "requests": n}


def _run_batch(raw_dir: Path, output: Path, repository: Path, model: str, workdir: Path) -> dict[str, Any]:
    """The batch stage through its own command line, as a user runs it (serving does not import batch)."""
    command = [sys.executable, "-m", "inferline.batch", "run", "--input", str(raw_dir), "--output", str(output)]
    command += ["--model", model, "--repository", str(repository), "--overwrite", "--quiet"]
    command += ["--alerts", str(workdir / "alerts.jsonl")]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _run_monitoring(
    module: Any, config: ServerConfig, server_pid: int, repository: Path, workdir: Path, seed: int, rows: int = 3_000
) -> dict[str, Any]:
    """The monitor through its own command line; traffic through the serving client with a tap."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "inferline.monitor", "run", "--port", str(port), "--repository", str(repository)]
    command += ["--workdir", str(workdir / "monitor")]  # where it reads its ingest key, which the tap sends
    command += ["--pipeline", module.SPEC.name, "--triton-metrics", config.metrics_url, "--interval", "0.5"]
    command += ["--trace-dir", str(config.trace_dir), "--server-pid", str(server_pid)]
    command += ["--drift-window-rows", str(rows)]
    log = open(workdir / "monitor.log", "wb")
    monitor = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(lambda: answers_ok(f"{url}/healthz"), 60, f"the monitor at {url}", process=monitor)
        phases: dict[str, Any] = {"shifts": list(getattr(module, "DEMO_SHIFTS", ()))}
        for phase, shifts in (("normal", []), ("drifted", phases["shifts"])):
            frame = module.generate(rows, seed=seed + (7 if phase == "normal" else 8))
            frame = apply_shifts(frame, module.SPEC, [parse_shift(s) for s in shifts], seed=seed)
            tap = MonitorTap(url, key=monitor_key(workdir / "monitor"))
            with InferlineClient(config.http_url, "http", pipeline=module.SPEC.name, tap=tap) as client:
                client.predict(frame.drop(columns=[module.SPEC.label]))
            tap.close()
            snapshot = _snapshot_after(url, time.time(), rows, monitor)
            features = snapshot["drift"]["features"]
            phases[phase] = {
                "drifted": [f["feature"] for f in features if f["state"] == "drift"],
                "states": {f["feature"]: f["state"] for f in features},
            }
        out = workdir / "reports" / "monitor"
        report = subprocess.run(
            [sys.executable, "-m", "inferline.monitor", "report", "--url", url, "--out", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if report.returncode != 0:
            raise RuntimeError(f"monitor report failed: {report.stderr[-2000:]}")
        phases["report"] = str(out / "report.html")
        return phases
    finally:
        stop_process(monitor, grace_s=20)
        log.close()


def _snapshot_after(url: str, since: float, rows: int, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    """The first monitor snapshot taken after ``since`` whose drift window holds ``rows`` rows."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the monitor exited with {process.returncode}")
        history = get_json(f"{url}/v1/history", timeout_s=5)
        for snap in reversed(history):
            if snap["at"] > since and rows in snap["drift"]["window_rows"].values() and snap["drift"]["features"]:
                return dict(snap)
        time.sleep(0.2)  # the monitor evaluates every 0.5 s
    raise RuntimeError(f"the monitor at {url} took no snapshot of {rows} rows within 60 s")


def step(msg: str) -> float:
    print(f"==> {msg}", flush=True)
    return time.perf_counter()


def run_demo(
    workdir: Path = Path(".inferline"),
    repository: Path = Path("triton_models"),
    pipeline: str = "fraud",
    rows: int = 200_000,
    files: int = 4,
    seed: int = 0,
    keep_serving: bool = False,
    latency_requests: int = 300,
) -> dict[str, Any]:
    t_start = time.perf_counter()
    module = load_pipeline_module(pipeline)
    spec = module.SPEC
    raw_dir = workdir / "data" / "raw"
    timings: dict[str, float] = {}

    t = step(f"generate {rows} synthetic {pipeline} rows into {raw_dir}")
    per = -(-rows // files)
    for i in range(files):
        atomic_write_parquet(
            raw_dir / f"{pipeline}-{i:04d}.parquet", module.generate(min(per, rows - i * per), seed * 1000 + i)
        )
    timings["generate_s"] = time.perf_counter() - t

    t = step("validate (pandera, lazy) and quarantine")
    paths = expand_paths([raw_dir])
    _, report = load_validated(paths, spec, quarantine_dir=workdir / "quarantine", include_label=True)
    print(f"    {report.rows_in} rows in = {report.rows_valid} valid + {report.rows_quarantined} quarantined")
    timings["validate_s"] = time.perf_counter() - t

    t = step("train (PyTorch, deterministic for the seed)")
    torch.set_num_threads(1)
    result = train(paths, spec, workdir / "runs", seed=seed)
    h = result.metrics["holdout"]
    print(
        f"    holdout ROC AUC {h['roc_auc']:.4f}, PR AUC {h['pr_auc']:.4f}, precision {h['precision']:.3f}, "
        f"recall {h['recall']:.3f} at threshold {h['threshold']:.3f}"
    )
    timings["train_s"] = time.perf_counter() - t

    t = step(f"export to ONNX, parity gate, publish into {repository}")
    published = publish(result.run_dir, repository)
    print(
        f"    release {pipeline}:{published.version}, parity max abs error {published.parity.max_abs_error:.2e} "
        f"over {published.parity.rows} rows"
    )
    timings["export_s"] = time.perf_counter() - t

    t = step("start Triton (127.0.0.1, admin APIs behind a secret, explicit model control)")
    config = ServerConfig(
        repository=repository,
        workdir=workdir,
        http_port=port_or_free(8000),
        grpc_port=port_or_free(8001),
        metrics_port=port_or_free(8002),
        trace_dir=workdir / "trace",  # per-request server timings for the monitor
        trace_log_frequency=1,
    )
    server = TritonServer(config)
    server.start(timeout_s=120, detach=keep_serving)
    timings["server_ready_s"] = time.perf_counter() - t
    print(
        f"    ready in {timings['server_ready_s']:.1f}s: http {config.http_url}, grpc {config.grpc_url}, "
        f"metrics {config.metrics_url}"
    )
    try:
        t = step("predict the holdout over HTTP and gRPC; compare with training code in process")
        holdout = pd.read_parquet(result.run_dir / "holdout.parquet").head(4000)
        expected = in_process_probabilities(result.run_dir, holdout, pipeline)
        served: dict[str, Any] = {}
        endpoints: tuple[tuple[Protocol, str], ...] = (("http", config.http_url), ("grpc", config.grpc_url))
        for protocol, url in endpoints:
            with InferlineClient(url, protocol, pipeline=pipeline) as client:
                p = client.predict(holdout)
                served[protocol] = {
                    "rows": len(p),
                    "ok": int(p.ok.sum()),
                    "max_abs_diff": float(np.abs(p.probabilities - expected).max()),
                    "release": sorted(set(p.release)),
                    "latency_single_row": _latency(client, holdout, latency_requests),
                }
            print(
                f"    {protocol}: {served[protocol]['rows']} rows, max |served - in-process| = "
                f"{served[protocol]['max_abs_diff']:.2e}, single-row p50 "
                f"{served[protocol]['latency_single_row']['p50_ms']:.2f} ms, p99 "
                f"{served[protocol]['latency_single_row']['p99_ms']:.2f} ms"
            )
        timings["predict_s"] = time.perf_counter() - t

        t = step("monitor: normal traffic, then traffic from a drifted upstream (inferline monitor run)")
        assert server.process is not None
        monitoring = _run_monitoring(module, config, server.process.pid, repository, workdir, seed)
        print(
            f"    normal traffic: drifted {monitoring['normal']['drifted'] or 'none'}; drifted upstream "
            f"({', '.join(monitoring['shifts'])}): drifted {monitoring['drifted']['drifted'] or 'none'}; "
            f"report {monitoring['report']}"
        )
        timings["monitor_s"] = time.perf_counter() - t
    finally:
        if not keep_serving:
            server.stop()

    t = step(f"batch: score {raw_dir} with the same release on a Dask LocalCluster (inferline batch run)")
    batch = _run_batch(raw_dir, workdir / "batch", repository, f"{pipeline}:{published.version}", workdir)
    scored = pd.read_parquet(workdir / "batch").set_index(spec.id_column.name if spec.id_column else "source_row")
    ids = holdout[spec.id_column.name] if spec.id_column else holdout.index
    probs = scored.loc[ids, [f"probability_{c}" for c in spec.classes]].to_numpy()
    batch["max_abs_diff_vs_in_process"] = float(np.abs(probs - expected).max())
    batch["max_abs_diff_vs_served"] = float(np.abs(probs - p.probabilities).max())
    print(
        f"    {batch['rows_in']} rows in = {batch['rows_predicted']} predicted + {batch['rows_quarantined']} "
        f"quarantined, {batch['partitions']} partitions, {batch['rows_per_s']:,.0f} rows/s; on the holdout rows max "
        f"|batch - in-process| = {batch['max_abs_diff_vs_in_process']:.2e}, |batch - served| = "
        f"{batch['max_abs_diff_vs_served']:.2e}"
    )
    timings["batch_s"] = time.perf_counter() - t
    summary = {
        "pipeline": pipeline,
        "rows": {"in": report.rows_in, "valid": report.rows_valid, "quarantined": report.rows_quarantined},
        "holdout": h,
        "release": published.version,
        "parity_max_abs_error": published.parity.max_abs_error,
        "served": served,
        "batch": batch,
        "monitoring": monitoring,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "total_s": round(time.perf_counter() - t_start, 1),
        "server": "kept running (inferline serve down to stop)" if keep_serving else "stopped",
    }
    atomic_write_json(workdir / "reports" / "demo-summary.json", summary)
    if keep_serving:
        server.save_record()
    return summary


def print_summary(s: dict[str, Any]) -> None:
    h = s["holdout"]
    print("\n" + "=" * 72)
    print(f"inferline demo summary ({s['pipeline']}), {s['total_s']} s end to end")
    print("=" * 72)
    print(
        f"rows             {s['rows']['in']} in = {s['rows']['valid']} valid + {s['rows']['quarantined']} quarantined"
    )
    print(
        f"holdout          ROC AUC {h['roc_auc']:.4f}  PR AUC {h['pr_auc']:.4f}  precision {h['precision']:.3f}  "
        f"recall {h['recall']:.3f}  (threshold {h['threshold']:.3f}, fraud rate {h['positive_rate']:.2%})"
    )
    print(f"parity gate      max |onnxruntime - torch| = {s['parity_max_abs_error']:.2e}")
    for proto, d in s["served"].items():
        lat = d["latency_single_row"]
        print(
            f"served ({proto:<4})    {d['rows']} rows, max |served - in-process| = {d['max_abs_diff']:.2e}; "
            f"single-row latency p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms"
        )
    b = s["batch"]
    print(
        f"batch (Dask)     {b['rows_in']} rows in = {b['rows_predicted']} predicted + {b['rows_quarantined']} "
        f"quarantined, {b['rows_per_s']:,.0f} rows/s; max |batch - in-process| = "
        f"{b['max_abs_diff_vs_in_process']:.2e}, |batch - served| = {b['max_abs_diff_vs_served']:.2e}"
    )
    m = s["monitoring"]
    print(
        f"monitor          normal traffic: drift on {', '.join(m['normal']['drifted']) or 'nothing'}; drifted "
        f"upstream ({', '.join(m['shifts'])}): drift on {', '.join(m['drifted']['drifted']) or 'nothing'}"
    )
    print(f"                 report {m['report']}")
    print(f"model version    {s['pipeline']}:{s['release']} (answered by {s['served']['http']['release']})")
    print(f"server           {s['server']}")
    print(json.dumps(s["timings_s"]))


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog or "inferline demo", description=__doc__)
    parser.add_argument(
        "--workdir", type=new_dir, default=".inferline", help="server state, logs and the generated admin key"
    )
    parser.add_argument(
        "--repository", type=new_dir, default="triton_models", help="the model repository to publish into"
    )
    parser.add_argument("--rows", type=positive_int, default=200_000, help="synthetic rows to generate")
    parser.add_argument("--keep-serving", action="store_true", help="leave the server running after the summary")
    parser.set_defaults(func=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    summary = run_demo(
        workdir=Path(args.workdir), repository=Path(args.repository), rows=args.rows, keep_serving=args.keep_serving
    )
    print_summary(summary)
    worst = max(d["max_abs_diff"] for d in summary["served"].values())
    return 0 if worst <= 1e-5 else 1


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    return run(build_parser(prog), argv)


if __name__ == "__main__":
    sys.exit(main())
