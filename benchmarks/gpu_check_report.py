"""The report of ``make gpu-check``: runs the three checks (kernels, training, nvml), each on its own, prints what
each found and writes the JSON report; the exit status says whether all passed, one failed, or some could not run.

The script ``benchmarks/gpu_check.py`` parses the command line and imports this module only once ``inferline``
imports from the right place (the checkout, when run as a file).
"""

from __future__ import annotations

import json
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from inferline.benchmarks.gpu_check_kernels import check_kernels
from inferline.benchmarks.gpu_check_nvml import check_nvml
from inferline.benchmarks.gpu_check_result import (
    EXIT_FAILED,
    EXIT_NOT_RUN,
    EXIT_OK,
    CheckResult,
    NotRun,
    pandas_state,
)
from inferline.benchmarks.gpu_check_training import check_training

__all__ = ["run_checks"]


def _run(result: CheckResult, fn: Callable[[CheckResult], None]) -> CheckResult:
    """Run one check into ``result``: ``NotRun`` is not run, any other error that check's failure (with where)."""
    start = time.perf_counter()
    try:
        fn(result)
    except NotRun as exc:
        result.status, result.reason = "not_run", str(exc)
    except Exception as exc:  # noqa: BLE001 - one check's error is that check's failure; the others still run
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        result.status = "failed"
        result.reason = f"{type(exc).__name__}: {exc} (at {Path(frame.filename).name}:{frame.lineno})"
        result.details["traceback"] = traceback.format_exc()
    result.details["seconds"] = round(time.perf_counter() - start, 3)
    return result


def run_checks(n: int, repeats: int, steps: int, load_seconds: float, out_path: Path, origin: str) -> int:
    """Run the three checks, print the report, write the JSON to ``out_path``; the exit status."""
    start = time.perf_counter()
    print(f"inferline gpu-check: python {platform.python_version()}, numpy {np.__version__}, inferline from {origin}")
    checks = [
        _run(CheckResult("kernels", "cupy kernels equal numpy kernels"), lambda r: check_kernels(r, n, repeats)),
        _run(CheckResult("training", "a torch CUDA training step"), lambda r: check_training(r, steps)),
        _run(CheckResult("nvml", "NVML in state ok with real figures"), lambda r: check_nvml(r, load_seconds)),
    ]
    failed = [c.name for c in checks if c.status == "failed"]
    not_run = [c.name for c in checks if c.status == "not_run"]
    status = EXIT_FAILED if failed else EXIT_NOT_RUN if not_run else EXIT_OK
    if failed:
        verdict = f"FAILED: {', '.join(failed)}" + (f"; not run: {', '.join(not_run)}" if not_run else "")
    elif not_run:
        verdict = f"NOT SHOWN: {len(not_run)} of {len(checks)} checks could not run here ({', '.join(not_run)})"
    else:
        verdict = "PASSED: all three checks ran on the GPU and passed"
    for i, c in enumerate(checks, 1):
        print(f"\n[{c.status.upper().replace('_', ' ')}] {i}. {c.title} ({c.details.get('seconds', 0):.1f} s)")
        for line in c.lines:
            print(f"    {line}")
        print(f"    -> {c.reason}")
    report = {
        "format": 1,
        "verdict": verdict,
        "exit_status": status,
        "passed": status == EXIT_OK,
        "failed": failed,
        "not_run": not_run,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pandas_state(),
        "inferline_from": origin,
        "seconds": round(time.perf_counter() - start, 3),
        "checks": {c.name: {"title": c.title, "status": c.status, "reason": c.reason, **c.details} for c in checks},
    }
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        written = f"JSON: {out_path}"
    except OSError as exc:
        written = f"JSON NOT WRITTEN to {out_path}: {exc}"
        status = EXIT_FAILED
    print(f"\n{verdict} (exit {status}, {report['seconds']:.1f} s, pandas {report['pandas']})\n{written}")
    return status
