"""What flows into the monitor: samples bodies (``POST /v1/samples``, featurized with the release's own feature state),
Triton's metrics endpoint (request successes and failures per model and version) and Triton's trace files
(per-request server timings). Parsing and featurizing only: ``monitor.service.Monitor`` keeps what these return in
its windows, under its lock.
"""

from __future__ import annotations

import json
import logging
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from inferline.core.http import get_text
from inferline.features.spec import Column, PipelineSpec
from inferline.features.wire import from_json_columns
from inferline.monitor.evaluate import ReleaseReferences
from inferline.monitor.outputs import PREDICTED_CLASS, SamplesError, parse_outputs
from inferline.monitor.windows import Chunk
from inferline.training.profile import missing_columns

__all__ = [
    "LATENCY_SIDES",
    "Samples",
    "TritonCounters",
    "advance_triton_window",
    "new_traces",
    "parse_samples",
    "read_traces",
    "scrape_triton",
    "tabular_columns",
]

log = logging.getLogger("inferline.monitor")
# where a latency was measured: Triton's traces (server), the edge's sampler (edge), a client's tap (client)
LATENCY_SIDES = ("client", "edge")
_TRACE_FILE = re.compile(r"trace\.json\.\d+")

TritonCounters = dict[tuple[str, str], dict[str, float]]
"""(model, version) -> {"success": count, "failure": count}, as Triton's counters read at one scrape."""


# --- samples ---------------------------------------------------------------------------------------------------
def _null_mask(values: np.ndarray) -> np.ndarray:
    """Nulls of one wire column (``features.wire``): an empty BYTES element, a NaN float; INT64 has none."""
    if values.dtype == object:
        return np.fromiter((len(v) == 0 for v in values), bool, len(values))
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.zeros(len(values), bool)


def tabular_columns(spec: PipelineSpec) -> tuple[Column, ...]:
    """The input columns samples carry: every input column but the tensor ones."""
    return tuple(c for c in spec.input_columns if c.kind != "tensor")


def _rows_of(payload: dict[str, Any], arrays: dict[str, np.ndarray]) -> int:
    """The rows of a samples body that sends no status: its outputs', else its columns'."""
    for key in ("prediction", PREDICTED_CLASS, "probabilities"):
        if isinstance(payload.get(key), list):
            return len(payload[key])
    return len(next(iter(arrays.values()))) if arrays else 0


@dataclass(frozen=True)
class Samples:
    """One samples body, parsed and featurized: the accepted rows as a window chunk, every row's status, the nulls
    per missing column of every row received, and what the label log keeps of the accepted rows."""

    release: str
    spec: PipelineSpec  # the release's spec snapshot
    side: str  # where latency_s was measured (LATENCY_SIDES)
    model: str
    source: str  # "serving" | "batch"
    status: np.ndarray  # one per row: "ok" or a reason
    ok: np.ndarray  # status == "ok"
    chunk: Chunk  # the accepted rows
    nulls: np.ndarray  # nulls per missing column (``training.profile.missing_columns``) over every row
    arrays: dict[str, np.ndarray]  # the wire columns of every row
    answers: np.ndarray  # of the accepted rows: the predicted class, or the regression's value
    scores: np.ndarray | None  # of the accepted rows: a classifier's outputs (for realized ROC AUC); None: regression
    latency_s: list[float] | None
    pairs: np.ndarray | None  # shadow: per row, the id it shares with the other release's answer (-1: none)

    def __len__(self) -> int:
        return len(self.status)


def parse_samples(
    payload: dict[str, Any], release_of: Callable[[str], ReleaseReferences], default_model: str
) -> Samples:
    """Rows a release answered (the body is described in ``monitor.service``'s docstring). ``columns`` holds the
    raw tabular request columns as sent on the wire (strings as text, nulls as empty strings; tensor columns are
    neither needed nor read), the outputs are the task's (``monitor.outputs``), ``status`` one per row,
    ``release`` one for all rows (loaded by ``release_of``), ``latency_s`` optional (one per request, measured
    where ``latency_side`` says: ``client``, the default, or ``edge``). A body that is none of that raises
    ``SamplesError`` (a ``ValueError``) naming what was expected."""
    if not isinstance(payload, dict) or "release" not in payload:
        raise SamplesError("samples need a JSON object with 'release', 'columns', 'status' and the outputs")
    release = str(payload["release"])
    side = payload.get("latency_side", "client")
    if side not in LATENCY_SIDES:
        raise SamplesError(f"'latency_side' is {side!r}; expected one of {', '.join(LATENCY_SIDES)}")
    refs = release_of(release)
    spec, state = refs.spec, refs.state
    columns = payload.get("columns", {})
    arrays = from_json_columns(columns, tabular_columns(spec))
    status = np.asarray(payload["status"], dtype=object) if "status" in payload else None
    n = len(status) if status is not None else _rows_of(payload, arrays)
    status = np.full(n, "ok", dtype=object) if status is None else status
    lengths = {name: len(values) for name, values in arrays.items() if len(values) != n}
    if lengths:
        raise SamplesError(f"samples hold {n} rows (one status each), but columns {lengths} differ; one value per row")
    ok = status == "ok"
    pairs = payload.get("pairs")
    if pairs is not None:
        if not isinstance(pairs, list) or len(pairs) != n or not all(type(p) is int for p in pairs):
            raise SamplesError(f"'pairs' must be a list of {n} integers (one per row, -1 for none)")
        pairs = np.asarray(pairs, np.int64)
    outputs = parse_outputs(payload, spec, ok)
    if refs.contract is not None:
        features, _ = refs.contract.featurize(arrays)
        numeric = features.numeric
        categorical = np.empty((n, len(state.categorical)), dtype=object)
        for j, name in enumerate(state.categorical):
            categorical[:, j] = state.category_labels(name, features.categorical[:, j])
    else:  # no tabular features (a tensor pipeline): only the outputs are watched
        numeric = np.zeros((n, 0), np.float32)
        categorical = np.zeros((n, 0), object)
    predicted = outputs.predicted_class if outputs.predicted_class is not None else np.full(n, -1, np.int64)
    return Samples(
        release=release,
        spec=spec,
        side=side,
        model=str(payload.get("model", default_model)),
        source=str(payload.get("source", "serving")),
        status=status,
        ok=ok,
        chunk=Chunk(numeric[ok], categorical[ok], outputs.values[ok], predicted[ok]),
        nulls=np.array([int(_null_mask(arrays[c.name]).sum()) for c in missing_columns(spec)], np.int64),
        arrays=arrays,
        answers=outputs.values[ok, 0] if outputs.predicted_class is None else predicted[ok],
        scores=outputs.values[ok] if outputs.predicted_class is not None else None,
        latency_s=payload.get("latency_s") or None,
        pairs=pairs,
    )


# --- Triton ----------------------------------------------------------------------------------------------------
def scrape_triton(url: str) -> TritonCounters | None:
    """Triton's request counters per (model, version) from its metrics endpoint; None when it is unreachable (a
    warning is logged)."""
    try:
        text = get_text(url, timeout_s=2)
    except OSError as exc:  # URLError, a timeout, a refused connection, an HTTP error
        log.warning("Triton metrics at %s unreachable: %s", url, exc)
        return None
    current: TritonCounters = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("nv_inference_request_success", "nv_inference_request_failure"):
            continue
        outcome = "success" if family.name.endswith("success") else "failure"
        for sample in family.samples:
            key = (sample.labels.get("model", ""), sample.labels.get("version", ""))
            current.setdefault(key, {})[outcome] = sample.value
    return current


def advance_triton_window(
    window: dict[tuple[str, str], deque[tuple[float, float, float]]],
    before: TritonCounters,
    current: TritonCounters,
    now: float,
    window_s: float,
) -> None:
    """Append each key's successes and failures since the ``before`` scrape (never negative: a restarted Triton
    starts its counters again) to ``window`` at ``now``, and drop what is older than ``window_s``."""
    for key, counts in current.items():
        previous = before.get(key, {})
        d_ok = counts.get("success", 0.0) - previous.get("success", 0.0)
        d_fail = counts.get("failure", 0.0) - previous.get("failure", 0.0)
        q = window.setdefault(key, deque())
        q.append((now, max(d_ok, 0.0), max(d_fail, 0.0)))
        while q and q[0][0] < now - window_s:
            q.popleft()


def read_traces(path: Path) -> list[tuple[str, str, float]]:
    """One Triton trace file (a JSON list at level TIMESTAMPS) -> ``(model, version, seconds)`` per traced request,
    from its REQUEST_START to its REQUEST_END."""
    entries = json.loads(path.read_text())
    models: dict[int, tuple[str, str]] = {}
    stamps: dict[int, dict[str, int]] = {}
    for e in entries:
        if "model_name" in e:
            models[e["id"]] = (str(e["model_name"]), str(e.get("model_version", "")))
        for t in e.get("timestamps", []):
            stamps.setdefault(e["id"], {})[t["name"]] = int(t["ns"])
    out = []
    for trace_id, (model, version) in models.items():
        ts = stamps.get(trace_id, {})
        if "REQUEST_START" in ts and "REQUEST_END" in ts:
            out.append((model, version, (ts["REQUEST_END"] - ts["REQUEST_START"]) / 1e9))
    return out


def new_traces(trace_dir: Path | None, read: set[str]) -> Iterator[dict[tuple[str, ...], list[float]]]:
    """The server latencies of each complete trace file in ``trace_dir`` not yet in ``read`` (its name is added
    once it parsed), keyed ``("server", model, version)``, one dict per file. A file still being written (not yet
    valid JSON) is left for the next call."""
    if trace_dir is None or not Path(trace_dir).is_dir():
        return
    for path in sorted(Path(trace_dir).glob("trace.json.*")):
        if path.name in read or not _TRACE_FILE.fullmatch(path.name):
            continue
        try:
            traced = read_traces(path)
        except (ValueError, OSError):
            continue  # still being written: read it on the next tick
        read.add(path.name)
        by_key: dict[tuple[str, ...], list[float]] = {}
        for model, version, seconds in traced:
            by_key.setdefault(("server", model, version), []).append(seconds)
        yield by_key
