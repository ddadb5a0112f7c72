"""``inferline bench run --pipeline P``: how fast is one published pipeline on a running server (its edge or Triton
itself, HTTP or gRPC), step by step under a load the user chooses.

The load itself (payloads, targets, steps, the generators and Triton's statistics) is ``inferline.serving.load``,
which ``bench tune`` and the publish gate call too; this module is the sweep and the command line over it:

- ``run_sweep`` checks the pool (``check_pool``), runs a warm-up and then a list of steps (``measure_step``), and
  returns the results document (JSON-ready), with the machine it ran on;
- ``run_pipeline_command`` turns ``bench run``'s options into a target, payloads and steps, runs the sweep, and has
  ``benchmarks.pipeline_report`` write it as JSON, markdown and PNG and compare it with an earlier one.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inferline.core.errors import UserError
from inferline.serving.load.outcome import Arrivals
from inferline.serving.load.payloads import Payloads, load_rows, payloads_from_frame, resolve_pipeline
from inferline.serving.load.step import (
    LOADGEN_CORE_LIMIT,
    Loadgen,
    Step,
    StepResult,
    check_pool,
    measure_step,
    parse_steps,
)
from inferline.serving.load.target import Target, resolve_target

__all__ = ["run_pipeline_command", "run_sweep"]


def _machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or "unknown"
    try:
        cpu = next(
            (
                x.split(":", 1)[1].strip()
                for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")
            ),
            cpu,
        )
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def run_sweep(
    target: Target,
    payloads: Payloads,
    steps: Sequence[Step],
    duration_s: float,
    *,
    warmup_s: float = 1.0,
    loadgen: Loadgen = "auto",
    timeout_s: float = 10.0,
    arrivals: Arrivals = "poisson",
    seed: int = 0,
    max_inflight: int = 1024,
    loadgen_core_limit: float = LOADGEN_CORE_LIMIT,
    progress: Callable[[StepResult], None] | None = None,
) -> dict[str, Any]:
    """The pool check, a warm-up (not recorded), then every step in order: the results document."""
    if not steps:
        raise UserError("no load steps: give --concurrency LIST and/or --rate LIST")
    started = time.perf_counter()
    pool = check_pool(target, payloads, timeout_s=timeout_s)
    warnings = []
    if pool.get("error") or pool["ok"] < pool["rows"]:
        warnings.append(
            f"pool check: {pool['ok']} of {pool['rows']} rows scored 'ok' "
            f"({pool.get('statuses') or pool.get('error')}); refusals are cheaper than scoring, so the figures may "
            "flatter the server"
        )
    if payloads.refused_rows:
        warnings.append(f"{payloads.refused_rows} pool rows carry a value the wire cannot (sent with a stand-in)")
    options: dict[str, Any] = {
        "loadgen": loadgen,
        "timeout_s": timeout_s,
        "arrivals": arrivals,
        "seed": seed,
        "max_inflight": max_inflight,
        "loadgen_core_limit": loadgen_core_limit,
    }
    if warmup_s > 0:
        warm = next((s for s in steps if s.kind == "concurrency"), Step("concurrency", 4))
        measure_step(target, payloads, warm, warmup_s, **options)
    results = []
    for step in steps:
        r = measure_step(target, payloads, step, duration_s, **options)
        results.append(r)
        if progress is not None:
            progress(r)
    release = pool.get("release")
    document = {
        "format": 1,
        "kind": "pipeline_bench",
        "created_at": datetime.now(UTC).isoformat(),
        "machine": _machine(),
        "pipeline": payloads.spec.name,
        "release": release,
        "release_number": _release_number(release),
        "target": target.describe(),
        "payloads": payloads.describe(),
        "pool_check": pool,
        "settings": {"duration_s": duration_s, "warmup_s": warmup_s, **options},
        "steps": [r.as_dict() for r in results],
        "warnings": warnings + [f"{r.step}: {w}" for r in results for w in r.warnings],
        "wall_s": round(time.perf_counter() - started, 2),
    }
    return dict(_json_safe(document))


def _json_safe(value: Any) -> Any:
    """NaN and infinities (a step with no answer has no percentiles) as None: the document is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _release_number(release: str | None) -> int | None:
    """``fraud:3`` -> 3 (what the served model answers in ``release``)."""
    if not release:
        return None
    tail = release.rpartition(":")[2]
    return int(tail) if tail.isdigit() else None


# ------------------------------------------------------------------------------------------------- command line
def _numbers(text: str, kind: type[int] | type[float], flag: str) -> list[Any]:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise UserError(f"{flag} {text!r}: expected a comma-separated list of numbers, e.g. 1,4,16") from exc
    if not values or any(v <= 0 for v in values):
        raise UserError(f"{flag} {text!r}: expected a comma-separated list of numbers above 0, e.g. 1,4,16")
    return values


def _traced_server(record: dict[str, Any] | None, target: Target) -> str:
    """A warning when the measured server is the recorded one and it writes request traces (empty otherwise)."""
    if record is None or not record.get("trace_dir") or target.via not in ("edge", "triton"):
        return ""
    rate = record.get("trace_rate")
    return (
        f"the server traces {'1 request in ' + str(rate) if rate else 'requests'} (serve up's default): tracing "
        "costs throughput, and the bundled Triton 2.51 can crash under sustained traced load (fixed in 25.04); "
        "measure a server started with `inferline serve up --no-trace`"
    )


def run_pipeline_command(args: argparse.Namespace) -> int:
    """``inferline bench run --pipeline P ...`` (the options are defined in ``benchmarks.__main__``)."""
    from inferline.benchmarks.pipeline_report import compare_results, markdown, read_results, write_outputs

    workdir = Path(args.workdir) if args.workdir else None
    record_repository, record = None, None
    if workdir is not None:
        from inferline.serving.server import read_state

        record = read_state(workdir, "pass --url HOST:PORT instead")
        record_repository = Path(record["repository"]) if record and record.get("repository") else None
    repository = Path(args.repository) if args.repository else record_repository
    spec, current, spec_source = resolve_pipeline(args.pipeline, repository)
    concurrency = _numbers(args.concurrency, int, "--concurrency") if args.concurrency else []
    rates = _numbers(args.rate, float, "--rate") if args.rate else []
    if not concurrency and not rates:
        concurrency = [1, 4, 16]
    steps = parse_steps(concurrency, rates)
    previous = read_results(Path(args.compare)) if args.compare else None  # a bad file fails before any load
    target = resolve_target(
        spec.name,
        args.protocol,
        url=args.url,
        workdir=workdir,
        direct=args.direct,
        triton_http=args.triton_http,
        api_key_file=Path(args.api_key_file) if args.api_key_file else None,
        tls_ca=Path(args.tls_ca) if args.tls_ca else None,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
    )
    frame, source = load_rows(
        spec,
        data=Path(args.data) if args.data else None,
        holdout=args.holdout,
        repository=repository,
        release=current,
        runs=Path(args.runs),
        pool_rows=args.pool,
        seed=args.seed,
        module=args.pipeline,
    )
    payloads = payloads_from_frame(spec, frame, args.rows_per_request, args.pool, args.seed, source, args.encoding)
    duration = args.duration or (2.0 if args.quick else 5.0)
    print(
        f"{spec.name} ({spec_source}) at {target.url} ({target.protocol}, via {target.via}); "
        f"{payloads.n_requests} distinct requests of {payloads.rows_per_request} row(s) from {source}; "
        f"{len(steps)} steps of {duration:g} s"
    )

    def progress(r: StepResult) -> None:
        flag = "  WARNING" if r.warnings else ""
        print(
            f"  {r.step:>12}: {r.throughput_rps:9.1f} req/s  p50 {r.latency_ms['p50']:.2f} ms  p99 "
            f"{r.latency_ms['p99']:.2f} ms  errors {sum(r.errors.values())}  generator "
            f"{r.loadgen['core_share']:.0%} of a core{flag}"
        )

    try:
        results = run_sweep(
            target,
            payloads,
            steps,
            duration,
            warmup_s=args.warmup,
            loadgen=args.loadgen,
            timeout_s=args.timeout,
            arrivals=args.arrivals,
            seed=args.seed,
            max_inflight=args.max_inflight,
            progress=progress,
        )
    finally:
        payloads.close()
    results["spec_source"] = spec_source
    traced = _traced_server(record, target)
    if traced:
        results["warnings"].insert(0, traced)
        print(f"WARNING: {traced}", file=sys.stderr)
    if previous is not None:
        results["comparison"] = {"previous": str(args.compare), "lines": compare_results(results, previous)}
    out = (
        Path(args.out)
        if args.out
        else Path(".inferline") / "bench" / spec.name / f"release-{results['release_number'] or 'unknown'}"
    )
    written = write_outputs(results, out)
    print(markdown(results))
    print(f"written to {out}/ ({', '.join(p.name for p in written)})")
    return 0
