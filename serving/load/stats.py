"""Server-side time of a load step from Triton's statistics API (``GET /v2/models/stats``): cumulative counters per
model version, read before and after the step; the difference is the step's.

Per model version and step: requests answered (``success``) and failed, executions (batches the model ran) and
inferences (rows; with dynamic batching several requests share an execution), and the mean time per request in
each phase Triton measures: ``queue`` (waiting for the scheduler), ``compute_input`` (inputs into the backend),
``compute_infer`` (the model's execute) and ``compute_output`` (outputs back). Triton counts a request once it has
answered it, so after a step ``settle`` reads again until the counters stop moving (requests still on the server
when the generator stopped are then counted too).

The statistics API is on Triton's own HTTP port (loopback, beside the admin APIs); the edge refuses it (403).
"""

from __future__ import annotations

import json
import time
import urllib.error
from dataclasses import dataclass
from typing import Any

from inferline.core.http import get_json

__all__ = ["PHASES", "ModelStep", "StatsUnavailable", "model_stats", "settle", "stats_delta"]

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
Key = tuple[str, str]  # (model, version)


class StatsUnavailable(RuntimeError):
    pass


@dataclass
class ModelStep:
    model: str
    version: str
    requests: int  # answered (success)
    failed: int
    executions: int
    inferences: int  # rows
    us_per_request: dict[str, float]  # each of PHASES: mean microseconds per answered request
    request_us: float  # Triton's whole time per answered request (success.ns / count)

    @property
    def rows_per_execution(self) -> float:
        return self.inferences / self.executions if self.executions else 0.0


def model_stats(triton_http: str, headers: dict[str, str] | None = None, timeout_s: float = 10.0) -> dict[Key, Any]:
    """The cumulative counters of every loaded model version at ``triton_http`` (``host:port``)."""
    try:
        data = get_json(f"http://{triton_http}/v2/models/stats", timeout_s, headers=headers)
    except urllib.error.HTTPError as exc:
        raise StatsUnavailable(
            f"GET http://{triton_http}/v2/models/stats answered {exc.code} ({exc.read()[:200]!r}); the edge refuses "
            "the statistics API: give Triton's own HTTP port (--triton-http, or the server record's 'http')"
        ) from exc
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise StatsUnavailable(f"GET http://{triton_http}/v2/models/stats failed: {exc}") from exc
    return {(m["name"], str(m.get("version", ""))): m for m in data.get("model_stats", [])}


def _n(stats: dict[str, Any], phase: str, what: str) -> int:
    return int(stats.get("inference_stats", {}).get(phase, {}).get(what, 0))


def _answered(snapshot: dict[Key, Any], model: str | None) -> int:
    return sum(_n(m, "success", "count") + _n(m, "fail", "count") for k, m in snapshot.items() if model in (None, k[0]))


def settle(
    triton_http: str,
    headers: dict[str, str] | None = None,
    model: str | None = None,
    expected: int | None = None,
    before: dict[Key, Any] | None = None,
    timeout_s: float = 5.0,
    quiet_s: float = 0.25,
) -> dict[Key, Any]:
    """The counters once the step's requests are all counted: as soon as ``model``'s answered count (every
    model's, for None) has grown by ``expected`` since ``before``; else once it has not moved for ``quiet_s``
    (some requests never reached Triton: refused at the edge, or lost with their connection); at the latest after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    current = model_stats(triton_http, headers)
    last_change, count = time.monotonic(), _answered(current, model)
    while time.monotonic() < deadline:
        if expected is not None and before is not None and count - _answered(before, model) >= expected:
            break
        if time.monotonic() - last_change >= quiet_s:
            break
        time.sleep(0.05)  # polling Triton's counters until the step's last requests are counted
        current = model_stats(triton_http, headers)
        if _answered(current, model) != count:
            last_change, count = time.monotonic(), _answered(current, model)
    return current


def stats_delta(before: dict[Key, Any], after: dict[Key, Any]) -> list[ModelStep]:
    """The step's share of the counters, for every model version that answered or failed a request in it."""
    out = []
    for key, a in sorted(after.items()):
        b = before.get(key, {})
        requests = _n(a, "success", "count") - _n(b, "success", "count")
        failed = _n(a, "fail", "count") - _n(b, "fail", "count")
        if requests == 0 and failed == 0:
            continue
        per = {
            phase: (_n(a, phase, "ns") - _n(b, phase, "ns")) / 1e3 / requests if requests else 0.0 for phase in PHASES
        }
        whole = (_n(a, "success", "ns") - _n(b, "success", "ns")) / 1e3 / requests if requests else 0.0
        out.append(
            ModelStep(
                model=key[0],
                version=key[1],
                requests=requests,
                failed=failed,
                executions=int(a.get("execution_count", 0)) - int(b.get("execution_count", 0)),
                inferences=int(a.get("inference_count", 0)) - int(b.get("inference_count", 0)),
                us_per_request=per,
                request_us=whole,
            )
        )
    return out
