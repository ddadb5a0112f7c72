"""The ``wrk`` load generator (Debian's, one thread): closed loop over HTTP(S), one load step against one served
model. Its Lua script reads a file of prepared request bodies (``write_body_file``: Open Inference Protocol bodies,
the binary tensor extension by default), formats every request once in ``init``, and ``request()`` returns them in
turn. The script counts what it sent and the answers by HTTP status; wrk counts socket errors by kind (connect,
read, write, timeout). The requests in flight when it stops are sent but ``unanswered`` (at most one per
connection); a first connection it cannot open makes it send nothing (one ``connect`` error). Its CPU time comes
from ``wait4``. Error kinds: ``load.outcome``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from inferline.serving.load.outcome import PERCENTILES, HttpBody, LoadOutcome, WrkMissing, latency_summary

__all__ = ["run_wrk", "write_body_file"]

# The body file: for each request a line "<json header length or -1> <body length>\n" and then the body's bytes.
# Every request is formatted once in `init`; `request()` returns them in turn and counts what it sent; `response()`
# counts the answers by HTTP status (wrk itself counts only 'status > 399' as one number).
_LUA = r"""
local requests = {}
local i = 0
sent = 0
statuses = {}
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args)
  local f = assert(io.open(args[1], "rb"))
  local auth = nil
  if args[2] ~= nil and #args[2] > 0 then
    local k = assert(io.open(args[2], "r"))
    auth = k:read("*l")
    k:close()
  end
  while true do
    local line = f:read("*l")
    if line == nil then break end
    local jlen, blen = line:match("^(-?%d+) (%d+)$")
    if jlen == nil then error("malformed body file " .. args[1]) end
    local body = f:read(tonumber(blen))
    local headers = {}
    if tonumber(jlen) >= 0 then
      headers["Content-Type"] = "application/octet-stream"
      headers["Inference-Header-Content-Length"] = jlen
    else
      headers["Content-Type"] = "application/json"
    end
    if auth ~= nil then headers["Authorization"] = "Bearer " .. auth end
    requests[#requests + 1] = wrk.format("POST", nil, headers, body)
  end
  f:close()
  if #requests == 0 then error("no request bodies in " .. args[1]) end
end
request = function()
  i = i % #requests + 1
  sent = sent + 1
  return requests[i]
end
response = function(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end
done = function(summary, latency, requests)
  local total_sent = 0
  local parts = {}
  for _, t in ipairs(threads) do
    total_sent = total_sent + t:get("sent")
    for code, n in pairs(t:get("statuses")) do
      parts[#parts + 1] = string.format("\"%s\": %d", code, n)
    end
  end
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\": %d, \"sent\": %d, \"duration_us\": %d, \"connect\": %d, \"read\": %d, " ..
    "\"write\": %d, \"timeout\": %d, \"status_errors\": %d, \"p50_us\": %d, \"p95_us\": %d, \"p99_us\": %d, " ..
    "\"p99.9_us\": %d, \"mean_us\": %f, \"max_us\": %d, \"statuses\": {%s}}\n",
    summary.requests, total_sent, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50.0), latency:percentile(95.0), latency:percentile(99.0), latency:percentile(99.9),
    latency.mean, latency.max, table.concat(parts, ", ")))
end
"""


def write_body_file(path: Path, bodies: Sequence[HttpBody]) -> Path:
    """The request bodies in the file format ``run_wrk``'s script reads (see ``_LUA``)."""
    with open(path, "wb") as fh:
        for b in bodies:
            fh.write(f"{-1 if b.json_length is None else b.json_length} {len(b.body)}\n".encode())
            fh.write(b.body)
    return path


def run_wrk(
    url: str,
    body_file: Path,
    concurrency: int,
    duration_s: float,
    timeout_s: float = 10.0,
    api_key_file: Path | None = None,
) -> LoadOutcome:
    """``wrk`` (1 thread, ``concurrency`` connections) POSTing the bodies of ``body_file`` in turn to ``url`` (the
    full ``http(s)://host:port/v2/models/M/infer``) for ``duration_s`` (whole seconds, at least 1: wrk's unit)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkMissing(
            "the load generator `wrk` is not installed: apt-get install wrk (Debian), or choose --loadgen asyncio"
        )
    seconds = max(1, round(duration_s))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(_LUA)
        script = fh.name
    cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", f"{max(1, round(timeout_s))}s"]
    cmd += ["-s", script, url, "--", str(body_file), str(api_key_file or "")]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        Path(script).unlink(missing_ok=True)
    line = next((x for x in out.splitlines() if x.startswith("WRKJSON ")), None)
    if proc.returncode != 0 and "unable to connect" in out:  # wrk tries one connection first and gives up on it
        return LoadOutcome(
            generator="wrk",
            mode="concurrency",
            sent=0,
            ok=0,
            errors={"connect": 1},
            wall_s=0.0,
            latency_ms=latency_summary([]),
            cpu_s=usage.ru_utime + usage.ru_stime,
            notes=[f"wrk could not open its first connection and sent nothing: {out.strip()[-300:]}"],
        )
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk exited with {proc.returncode} and no result: {out[-2000:]}")
    r = json.loads(line.removeprefix("WRKJSON "))
    errors: Counter[str] = Counter({k: int(r[k]) for k in ("connect", "read", "write", "timeout") if r[k]})
    ok = 0
    for code, n in r["statuses"].items():
        if 200 <= int(code) < 300:
            ok += int(n)
        else:
            errors[f"http_{code}"] += int(n)
    answered = r["requests"]
    latency = (
        {name: r[f"{name}_us"] / 1e3 for name, _ in PERCENTILES}
        | {"mean": r["mean_us"] / 1e3, "max": r["max_us"] / 1e3}
        if answered
        else latency_summary([])
    )
    notes = [
        "wrk: latency over every HTTP answer (2xx or not); wall time is wrk's run; the requests in flight when it "
        "stopped are sent but not answered within the step (unanswered)"
    ]
    return LoadOutcome(
        generator="wrk",
        mode="concurrency",
        sent=int(r["sent"]) - 1,  # wrk calls request() once before the load, to check it (script_verify_request)
        ok=ok,
        errors=dict(errors),
        wall_s=r["duration_us"] / 1e6,
        latency_ms=latency,
        cpu_s=usage.ru_utime + usage.ru_stime,
        notes=notes,
    )
