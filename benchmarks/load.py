"""Load generators. Every HTTP stack is driven by the same Debian ``wrk`` (one thread, a Lua script sending the
bodies of a pool in turn); Triton's gRPC endpoint by ``benchmarks.grpc_load`` (asyncio, tritonclient.grpc.aio).
Each runs as a child process so its own CPU time is measured (``wait4``) and reported beside the server's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferline.serving.load.outcome import WrkMissing  # one class for `wrk` missing, wherever it is needed

__all__ = ["LoadResult", "WrkMissing", "run_grpc", "run_wrk"]


@dataclass
class LoadResult:
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    loadgen_cpu_s: float

    @property
    def throughput(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


# Cycles through a pool of request bodies (one per line of the file given after `--`), every request formatted once
# in `init`, so the load generator's per-request work is a table lookup.
_LUA = """
local requests = {}
local i = 0
init = function(args)
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    if #line > 0 then requests[#requests + 1] = wrk.format("POST", nil, headers, line) end
  end
  if #requests == 0 then error("no request bodies in " .. args[1]) end
end
request = function()
  i = i % #requests + 1
  return requests[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\": %d, \\"duration_us\\": %d, \\"errors\\": %d, " ..
    "\\"p50_us\\": %d, \\"p95_us\\": %d, \\"p99_us\\": %d}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50.0), latency:percentile(95.0), latency:percentile(99.0)))
end
"""


def _run_child(cmd: list[str]) -> tuple[str, float]:
    """Run ``cmd``, return (stdout, CPU seconds it used: user + system, from wait4)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}: {out[-2000:]}")
    return out, usage.ru_utime + usage.ru_stime


def run_wrk(url: str, bodies: Path, concurrency: int, duration_s: float) -> LoadResult:
    """``wrk`` (1 thread) POSTing the bodies in ``bodies`` (one JSON body per line) in turn, for ``duration_s``."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkMissing("the load generator `wrk` is not installed: apt-get install wrk (Debian), or run `make bench`")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(_LUA)
        script = fh.name
    try:
        out, cpu = _run_child(
            [
                wrk,
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(duration_s))}s",
                "--timeout",
                "10s",
                "-s",
                script,
                url,
                "--",
                str(bodies),
            ]
        )
    finally:
        Path(script).unlink(missing_ok=True)
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {out[-2000:]}")
    r = json.loads(line.removeprefix("WRKJSON "))
    return LoadResult(
        requests=r["requests"],
        duration_s=r["duration_us"] / 1e6,
        errors=r["errors"],
        p50_ms=r["p50_us"] / 1e3,
        p95_ms=r["p95_us"] / 1e3,
        p99_ms=r["p99_us"] / 1e3,
        loadgen_cpu_s=cpu,
    )


def run_grpc(url: str, row_file: Path, concurrency: int, duration_s: float, model: str) -> LoadResult:
    """``benchmarks.grpc_load``: the rows of the Parquet file ``row_file`` sent one per request, in turn."""
    cmd = [
        sys.executable,
        "-m",
        "inferline.benchmarks.grpc_load",
        "--url",
        url,
        "--rows",
        str(row_file),
        "--model",
        model,
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration_s),
    ]
    out, cpu = _run_child(cmd)
    r: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return LoadResult(
        requests=r["requests"],
        duration_s=r["duration_s"],
        errors=r["errors"],
        p50_ms=r["p50_ms"],
        p95_ms=r["p95_ms"],
        p99_ms=r["p99_ms"],
        loadgen_cpu_s=r.get("loadgen_cpu_s", cpu),  # its CPU while loading, without the pool's preparation
    )
