"""``inferline bench run --pipeline P``: how fast is one published pipeline on a running server (its edge or Triton
itself, HTTP or gRPC), step by step under a load the user chooses.

The library (what ``bench tune`` and a publish gate call; the command line is a thin layer over it):

- ``Payloads``: the requests, built once before any load from a pool of distinct rows (or tensors) of the
  pipeline's own data (``payloads_from_frame``; ``load_rows`` finds a Parquet file, the holdout of the release's
  training run, or the pipeline's generator), ``rows_per_request`` rows each, encoded by the wire contract
  (``features.wire.encode_rows``) into Open Inference Protocol bodies (HTTP, the binary tensor extension by default)
  or ``InferInput`` lists (gRPC), sent in turn so that consecutive requests never repeat within a pass.
- ``Target``: where to send them, and Triton's own HTTP port for the statistics API (``resolve_target`` reads the
  server record ``inferline serve up`` wrote into its work directory).
- ``Step``: one load level: ``concurrency`` (closed loop: that many requests in flight) or ``rate`` (open loop:
  requests per second on a schedule, whatever the answers do).
- ``measure_step(target, payloads, step, duration_s)`` -> ``StepResult``: throughput, client latency percentiles,
  errors by kind, the load generator's own CPU share, and Triton's per-model split of the step's server time
  (queue, compute input, compute infer, compute output) from its statistics before and after the step.
- ``run_sweep`` runs a list of steps after a warm-up and returns the results document (JSON-ready);
  ``benchmarks.pipeline_report`` writes it as JSON, markdown and PNG and compares it with an earlier one.

The generator must not be what limits a step. Each is one thread (wrk -t1, or one asyncio loop), so its CPU time
over the step divided by the step's wall time is the share of the one core it can use; above ``LOADGEN_CORE_LIMIT``
(0.7) the step carries a warning that the figures may measure the generator rather than the server. Open-loop
steps also report how late requests left against their schedule (p99; warned above ``SCHEDULE_LAG_LIMIT_MS``).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from inferline.benchmarks.pipeline_load import (
    Arrivals,
    HttpBody,
    LoadOutcome,
    WrkMissing,
    run_asyncio,
    run_wrk,
    write_body_file,
)
from inferline.benchmarks.pipeline_stats import ModelStep, StatsUnavailable, model_stats, settle, stats_delta
from inferline.core.errors import UserError
from inferline.features.spec import SPEC_FILE, PipelineSpec

__all__ = [
    "LOADGEN_CORE_LIMIT",
    "SCHEDULE_LAG_LIMIT_MS",
    "Payloads",
    "Step",
    "StepResult",
    "Target",
    "check_pool",
    "load_rows",
    "measure_step",
    "parse_steps",
    "payloads_from_frame",
    "resolve_pipeline",
    "resolve_target",
    "run_pipeline_command",
    "run_sweep",
]

LOADGEN_CORE_LIMIT = 0.7  # share of its one core above which a step is flagged: the generator may be the limit
SCHEDULE_LAG_LIMIT_MS = 2.0  # open loop: p99 lateness of sends above which a step is flagged
Loadgen = Literal["auto", "wrk", "asyncio"]
Protocol = Literal["http", "grpc"]


# ------------------------------------------------------------------------------------------------------ payloads
@dataclass
class Payloads:
    """The pool's rows encoded once; request ``i`` is rows ``[i*r, (i+1)*r)`` of the pool (``r`` rows per
    request). ``http_bodies``, ``body_file`` and ``grpc_requests`` are built on first use and kept."""

    spec: PipelineSpec
    frame: pd.DataFrame  # the pool's raw rows (input columns), in request order
    arrays: dict[str, np.ndarray]  # their wire tensors
    rows_per_request: int
    source: str  # where the rows came from, in words
    distinct_rows: int
    refused_rows: int = 0  # rows the wire carries with a stand-in value (an integer column's null)
    encoding: Literal["binary", "json"] = "binary"
    _http: list[HttpBody] | None = None
    _grpc: list[list[Any]] | None = None
    _dir: Path | None = None

    @property
    def n_requests(self) -> int:
        return len(self.frame) // self.rows_per_request

    @property
    def outputs(self) -> list[str]:
        from inferline.features.contract import model_outputs

        return [t.name for t in model_outputs(self.spec)] + ["status", "release"]

    def request(self, i: int) -> dict[str, np.ndarray]:
        r = self.rows_per_request
        return {k: v[i * r : (i + 1) * r] for k, v in self.arrays.items()}

    def _inputs(self, client_module: Any, i: int, **encoding: Any) -> list[Any]:
        """Request ``i`` as the InferInputs of ``client_module`` (tritonclient.http or .grpc), one per column."""
        arrays, inputs = self.request(i), []
        for c in self.spec.input_columns:
            inp = client_module.InferInput(c.name, list(arrays[c.name].shape), c.triton_dtype)
            inp.set_data_from_numpy(arrays[c.name], **encoding)
            inputs.append(inp)
        return inputs

    def http_bodies(self) -> list[HttpBody]:
        if self._http is None:
            import tritonclient.http as httpclient

            binary = self.encoding == "binary"
            outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in self.outputs]
            bodies = []
            for i in range(self.n_requests):
                inputs = self._inputs(httpclient, i, binary_data=binary)
                body, json_length = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
                bodies.append(HttpBody(body if isinstance(body, bytes) else body.encode(), json_length))
            self._http = bodies
        return self._http

    def body_file(self) -> Path:
        """The HTTP bodies in the file wrk's script reads (written once, into a temporary directory)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="inferline-pipeline-bench-"))
        path = self._dir / f"bodies-{self.encoding}.bin"
        if not path.exists():
            write_body_file(path, self.http_bodies())
        return path

    def grpc_requests(self) -> list[list[Any]]:
        if self._grpc is None:
            import tritonclient.grpc as grpcclient

            self._grpc = [self._inputs(grpcclient, i) for i in range(self.n_requests)]
        return self._grpc

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "pool_rows": len(self.frame),
            "distinct_rows": self.distinct_rows,
            "rows_per_request": self.rows_per_request,
            "distinct_requests": self.n_requests,
            "refused_by_the_wire": self.refused_rows,
            "http_encoding": self.encoding,
        }

    def close(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _distinct(frame: pd.DataFrame) -> int:
    try:
        return len(frame.drop_duplicates())
    except TypeError:  # a tensor column (arrays per row) is not hashable: count its rows' bytes instead
        keys = frame.apply(lambda row: hash(tuple(np.asarray(v).tobytes() for v in row)), axis=1)
        return int(keys.nunique())


def unique_text(frame: pd.DataFrame, spec: PipelineSpec) -> pd.DataFrame:
    """Every non-empty value of the spec's free-text columns given a suffix of its own (``" ref000042"``: ASCII
    letters and digits), so no text repeats within the pool: the served model keeps per-value verdicts and features
    of text, and a pool of a generator's few dozen descriptions would measure those caches, not the model (3x on the
    fraud demo: 22 distinct descriptions in 2,000 rows). Nulls and empty texts stay as they are."""
    text = [c.name for c in spec.input_columns if c.kind == "text" and c.name in frame.columns]
    if not text:
        return frame
    out = frame.copy()
    suffix = pd.Series([f" ref{i:06d}" for i in range(len(out))], index=out.index, dtype="string")
    for name in text:
        values = out[name].astype("string")
        out[name] = values.where(values.isna() | (values == ""), values + suffix)
    return out


def payloads_from_frame(
    spec: PipelineSpec,
    frame: pd.DataFrame,
    rows_per_request: int = 1,
    pool_rows: int = 2000,
    seed: int = 0,
    source: str = "rows given by the caller",
    encoding: Literal["binary", "json"] = "binary",
) -> Payloads:
    """A pool of up to ``pool_rows`` distinct rows of ``frame`` (drawn at random with ``seed``; duplicates
    dropped), in requests of ``rows_per_request`` rows."""
    if rows_per_request > spec.model.max_batch_size:
        raise UserError(
            f"--rows-per-request {rows_per_request} is more than the served model takes at once "
            f"(max_batch_size {spec.model.max_batch_size}); choose at most {spec.model.max_batch_size}"
        )
    names = [c.name for c in spec.input_columns]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise UserError(f"the rows ({source}) lack input column(s) {missing} of pipeline {spec.name!r}: {names}")
    rows = frame[names]
    try:
        rows = rows.drop_duplicates()
    except TypeError:  # tensor columns: arrays are not hashable; the pool is checked for distinct rows below
        pass
    if len(rows) > pool_rows:
        rows = rows.sample(n=pool_rows, random_state=seed)
    rows = rows.reset_index(drop=True)
    if len(rows) < rows_per_request:
        raise UserError(
            f"{source} gives {len(rows)} distinct row(s), fewer than --rows-per-request {rows_per_request}; give "
            "more rows or fewer per request"
        )
    rows = rows.iloc[: len(rows) // rows_per_request * rows_per_request]
    rows = unique_text(rows, spec)
    from inferline.features.wire import encode_rows

    refused: dict[int, str] = {}
    arrays = encode_rows(rows, spec, refused)
    return Payloads(
        spec=spec,
        frame=rows,
        arrays=arrays,
        rows_per_request=rows_per_request,
        source=source,
        distinct_rows=_distinct(rows),
        refused_rows=len(refused),
        encoding=encoding,
    )


def _random_tensors(spec: PipelineSpec, n: int, seed: int) -> pd.DataFrame:
    """Seeded random rows for a pipeline of tensor inputs only that has no generator: normal values for float
    tensors, the dtype's range for integer ones, 8 for a variable dimension."""
    from inferline.features.tensors import numpy_dtype

    rng = np.random.default_rng(seed)
    columns = {}
    for c in spec.input_columns:
        assert c.dtype is not None
        dtype = numpy_dtype(c.dtype)
        shape = (n, *(d if d > 0 else 8 for d in c.shape))
        if dtype.kind == "f":
            values = rng.normal(0, 1, shape).astype(dtype)
        elif dtype.kind == "b":
            values = rng.random(shape) < 0.5
        else:
            info = np.iinfo(dtype)
            values = rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dtype)
        columns[c.name] = list(values)
    return pd.DataFrame(columns)


def load_rows(
    spec: PipelineSpec,
    *,
    data: Path | None = None,
    holdout: bool = False,
    repository: Path | None = None,
    release: int | None = None,
    runs: Path = Path(".inferline/runs"),
    pool_rows: int = 2000,
    seed: int = 0,
    module: str | None = None,
) -> tuple[pd.DataFrame, str]:
    """The rows to draw payloads from, and where they came from: the Parquet file ``data``; the holdout of the
    training run of ``release`` (its manifest's ``run_id`` under ``runs``); else ``pool_rows`` rows of the pipeline
    module's ``generate(n, seed)`` (``module``: its import name, default the spec's name); else, for a pipeline of
    tensor inputs only, seeded random tensors."""
    if data is not None:
        try:
            return pd.read_parquet(data), f"Parquet file {data}"
        except (OSError, ValueError) as exc:
            raise UserError(f"--data {str(data)!r} cannot be read as Parquet: {exc}; give a Parquet file") from exc
    if holdout:
        if repository is None:
            raise UserError(
                "--holdout needs the model repository to find the release's training run: pass --repository DIR "
                "or --workdir of the running server"
            )
        from inferline.release.registry import Registry, RegistryError

        try:
            manifest = Registry(repository, spec.name).manifest(release)
        except RegistryError as exc:
            raise UserError(f"--holdout: {exc}") from exc
        run_id = manifest.run_id
        if not run_id:
            raise UserError(
                f"release {spec.name}:{manifest.release} was not published from a training run (no run_id in "
                "its manifest), so it has no holdout; pass --data FILE instead"
            )
        path = Path(runs) / str(run_id) / "holdout.parquet"
        if not path.is_file():
            raise UserError(
                f"the holdout of run {run_id} is not at {path}; pass --runs DIR (where `inferline train --runs` "
                "wrote the run) or --data FILE"
            )
        return pd.read_parquet(path), f"holdout of run {run_id} (release {manifest.release})"
    from inferline.features.spec import SpecError, load_pipeline_module

    try:
        pipeline_module = load_pipeline_module(module or spec.name)
    except SpecError:
        pipeline_module = None
    generate = getattr(pipeline_module, "generate", None)
    if pipeline_module is not None and callable(generate):
        return generate(pool_rows, seed=seed), f"{pipeline_module.__name__}.generate({pool_rows}, seed={seed})"
    if all(c.kind == "tensor" for c in spec.input_columns):
        return _random_tensors(
            spec, pool_rows, seed
        ), f"seeded random tensors (seed {seed}; the pipeline has no generator)"
    raise UserError(
        f"pipeline {spec.name!r} has no generate() to draw payloads from; pass --data FILE (Parquet rows) or "
        "--holdout (the release's training holdout)"
    )


def resolve_pipeline(pipeline: str, repository: Path | None) -> tuple[PipelineSpec, int | None, str]:
    """The spec of ``pipeline`` (a name, or a dotted module), its current release, and where the spec came from:
    the current release's snapshot in ``repository`` when there is one (the contract the server runs), else the
    pipeline module."""
    from inferline.features.spec import load_pipeline, read_spec
    from inferline.release.registry import Registry, model_names

    name = pipeline
    if "." in pipeline:
        name = load_pipeline(pipeline).name
    if repository is not None:
        current = Registry(repository, name).current
        if current is not None:
            snapshot = Path(repository) / model_names(name)["preprocess"] / str(current) / SPEC_FILE
            if snapshot.is_file():
                return read_spec(snapshot), current, f"release {current}'s snapshot ({snapshot})"
    return load_pipeline(pipeline), None, f"pipeline module {pipeline!r}"


# -------------------------------------------------------------------------------------------------------- target
@dataclass
class Target:
    url: str  # host:port
    protocol: Protocol
    model: str
    via: str = "unknown"  # "edge", "triton" or "unknown"
    triton_http: str | None = None  # Triton's own HTTP port: the statistics API
    stats_note: str = ""  # why there is no server-side breakdown, when there is none
    api_key_file: Path | None = None  # the edge's caller key (--api-keys), read from a file, never an argument
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    admin_headers: dict[str, str] = field(default_factory=dict)

    @property
    def infer_url(self) -> str:
        scheme = "https" if self.tls_ca is not None else "http"
        return f"{scheme}://{self.url}/v2/models/{self.model}/infer"

    def api_key(self) -> str | None:
        return Path(self.api_key_file).read_text().strip() if self.api_key_file else None

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "protocol": self.protocol,
            "model": self.model,
            "via": self.via,
            "triton_http": self.triton_http,
            "tls": self.tls_ca is not None,
            "stats": "Triton statistics API" if self.triton_http else f"not measured: {self.stats_note}",
        }


def _stats_answer(url: str) -> bool:
    try:
        model_stats(url, timeout_s=3)
        return True
    except StatsUnavailable:
        return False


def resolve_target(
    model: str,
    protocol: Protocol = "http",
    *,
    url: str | None = None,
    workdir: Path | None = Path(".inferline"),
    direct: bool = False,
    triton_http: str | None = None,
    api_key_file: Path | None = None,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> Target:
    """Where to send the load and where to read Triton's statistics. Without ``url``, the server recorded in
    ``workdir`` (``inferline serve up``): its edge for ``protocol``, or Triton's own port with ``direct`` (or when it
    runs without an edge). Statistics: ``triton_http``; else the record's Triton when ``url`` is that server's;
    else ``url`` itself when it answers the statistics API (Triton over HTTP); else none, saying why."""
    from inferline.core.secrets import ADMIN_HEADER, admin_key
    from inferline.serving.server import read_state

    record = read_state(workdir, "pass --url HOST:PORT (and --triton-http) instead") if workdir else None
    edge_key = "gateway" if protocol == "http" else "grpc_edge"
    if url is None:
        if record is None:
            raise UserError(
                f"no --url given and no server record in --workdir {workdir}; start one with `inferline serve up`, "
                "pass the --workdir it was started with, or give the server's address with --url HOST:PORT"
            )
        edge = None if direct else record.get(edge_key)
        url, via = (edge, "edge") if edge else (str(record[protocol]), "triton")
        if via == "edge" and record.get("gateway_tls") and tls_ca is None:
            raise UserError(
                f"the edge at {url} serves TLS; pass --tls-ca FILE (the CA that signed its certificate), or --direct "
                "for Triton's own loopback port"
            )
    elif record is not None and url in (record.get("http"), record.get("grpc")):
        via = "triton"
    elif record is not None and url in (record.get("gateway"), record.get("grpc_edge")):
        via = "edge"
    else:
        via, record = "unknown", None  # another server than the recorded one
    target = Target(url, protocol, model, via, None, "", api_key_file, tls_ca, tls_cert, tls_key)
    if record is not None and workdir is not None:
        target.admin_headers = {ADMIN_HEADER: admin_key(workdir)}  # the record's server: its key exists already
    if triton_http:
        target.triton_http = triton_http
    elif record is not None:
        target.triton_http = str(record["http"])
    elif protocol == "http" and tls_ca is None and _stats_answer(url):
        target.triton_http, target.via = url, "triton"
    else:
        target.stats_note = (
            f"{url} does not answer Triton's statistics API and no server record names Triton's own HTTP port; "
            "pass --triton-http HOST:PORT"
        )
    return target


# --------------------------------------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class Step:
    kind: Literal["concurrency", "rate"]
    value: float  # requests in flight, or requests per second

    @property
    def label(self) -> str:
        return f"c={int(self.value)}" if self.kind == "concurrency" else f"rate={self.value:g}/s"


def parse_steps(concurrency: Sequence[int] = (), rates: Sequence[float] = ()) -> list[Step]:
    return [Step("concurrency", int(c)) for c in concurrency] + [Step("rate", float(r)) for r in rates]


@dataclass
class StepResult:
    step: str  # its label: "c=16", "rate=200/s"
    kind: str
    value: float
    generator: str
    duration_s: float  # asked for
    wall_s: float  # measured: first request to last answer
    sent: int
    ok: int
    errors: dict[str, int]
    unanswered: int  # sent, still in flight when the generator stopped (wrk; the asyncio generator waits for all)
    throughput_rps: float  # answered OK per second
    rows_per_s: float
    offered_rps: float | None  # open loop: arrivals drawn / duration
    latency_ms: dict[str, float]  # p50, p95, p99, p99.9, mean, max
    loadgen: dict[str, Any]  # cpu_s, core_share (of its one thread's core), machine_share, schedule_lag_p99_ms
    server: list[dict[str, Any]] | None  # per model version: requests, phases in us per request (None: not measured)
    server_note: str = ""
    outside_triton_ms: float | None = None  # client mean latency minus Triton's mean time per request (served model)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def model(self, name: str) -> dict[str, Any] | None:
        return next((m for m in self.server or [] if m["model"] == name), None)


def _generator(target: Target, step: Step, loadgen: Loadgen) -> str:
    wrk_fits = target.protocol == "http" and step.kind == "concurrency" and target.tls_cert is None
    if loadgen == "wrk":
        if not wrk_fits:
            raise UserError(
                f"wrk drives closed-loop HTTP steps only (without client certificates); step {step.label} over "
                f"{target.protocol} needs --loadgen asyncio (or auto)"
            )
        if shutil.which("wrk") is None:
            raise WrkMissing("the load generator `wrk` is not installed: apt-get install wrk, or --loadgen asyncio")
        return "wrk"
    if loadgen == "auto" and wrk_fits and shutil.which("wrk") is not None:
        return "wrk"
    return "asyncio"


def _load(
    target: Target,
    payloads: Payloads,
    step: Step,
    duration_s: float,
    generator: str,
    timeout_s: float,
    arrivals: Arrivals,
    seed: int,
    max_inflight: int,
) -> LoadOutcome:
    if generator == "wrk":
        return run_wrk(
            target.infer_url, payloads.body_file(), int(step.value), duration_s, timeout_s, target.api_key_file
        )
    common: dict[str, Any] = {
        "model": target.model,
        "timeout_s": timeout_s,
        "api_key": target.api_key(),
        "tls": (target.tls_ca, target.tls_cert, target.tls_key),
        "arrivals": arrivals,
        "seed": seed,
        "max_inflight": max_inflight,
    }
    if target.protocol == "http":
        return run_asyncio(
            "http", target.infer_url, (step.kind, step.value), duration_s, http_bodies=payloads.http_bodies(), **common
        )
    return run_asyncio(
        "grpc",
        target.url,
        (step.kind, step.value),
        duration_s,
        grpc_requests=payloads.grpc_requests(),
        outputs=payloads.outputs,
        **common,
    )


def measure_step(
    target: Target,
    payloads: Payloads,
    step: Step,
    duration_s: float,
    *,
    loadgen: Loadgen = "auto",
    timeout_s: float = 10.0,
    arrivals: Arrivals = "poisson",
    seed: int = 0,
    max_inflight: int = 1024,
    loadgen_core_limit: float = LOADGEN_CORE_LIMIT,
) -> StepResult:
    """One load step against ``target``: Triton's counters before, the load, the counters after (once the step's
    requests are counted), and what the step measured. Never raises for what the server does (refused
    connections, timeouts, error answers are counted by kind); raises ``UserError`` for a generator that cannot
    run the step."""
    generator = _generator(target, step, loadgen)
    if generator == "wrk":
        payloads.body_file()  # prepared before the step, not during it
    elif target.protocol == "http":
        payloads.http_bodies()
    else:
        payloads.grpc_requests()
    before, note = None, target.stats_note
    if target.triton_http:
        try:
            before = model_stats(target.triton_http, target.admin_headers)
        except StatsUnavailable as exc:
            note = str(exc)
    outcome = _load(target, payloads, step, duration_s, generator, timeout_s, arrivals, seed, max_inflight)
    server: list[ModelStep] | None = None
    if before is not None and target.triton_http:
        try:
            after = settle(target.triton_http, target.admin_headers, target.model, outcome.sent, before)
            server = stats_delta(before, after)
        except StatsUnavailable as exc:
            note = str(exc)
    return _result(target, payloads, step, duration_s, outcome, server, note, loadgen_core_limit)


def _result(
    target: Target,
    payloads: Payloads,
    step: Step,
    duration_s: float,
    o: LoadOutcome,
    server: list[ModelStep] | None,
    note: str,
    core_limit: float,
) -> StepResult:
    core_share = o.cpu_s / o.wall_s if o.wall_s > 0 else 0.0
    warnings = []
    if core_share > core_limit:
        warnings.append(
            f"the load generator ({o.generator}, one thread) used {core_share:.0%} of a core (limit "
            f"{core_limit:.0%}): it may be what limits this step, not the server"
        )
    if o.schedule_lag_p99_ms is not None and o.schedule_lag_p99_ms > SCHEDULE_LAG_LIMIT_MS:
        warnings.append(
            f"requests left {o.schedule_lag_p99_ms:.1f} ms late (p99) against their schedule (limit "
            f"{SCHEDULE_LAG_LIMIT_MS} ms): the generator could not keep the rate; the lateness is in the latency"
        )
    if o.errors:
        warnings.append(f"{sum(o.errors.values())} failed request(s): {dict(sorted(o.errors.items()))}")
    served = next((m for m in server or [] if m.model == target.model), None)
    if server is not None and target.via == "triton" and served is not None:
        counted = served.requests + served.failed
        if counted != o.sent:
            warnings.append(f"Triton counted {counted} requests of {target.model!r}; the generator sent {o.sent}")
    outside = None
    if served is not None and served.requests and o.ok:
        outside = o.latency_ms["mean"] - served.request_us / 1e3
    return StepResult(
        step=step.label,
        kind=step.kind,
        value=step.value,
        generator=o.generator,
        duration_s=duration_s,
        wall_s=o.wall_s,
        sent=o.sent,
        ok=o.ok,
        errors=dict(sorted(o.errors.items())),
        unanswered=o.unanswered,
        throughput_rps=o.throughput_rps,
        rows_per_s=o.throughput_rps * payloads.rows_per_request,
        offered_rps=(o.scheduled / duration_s) if o.scheduled is not None else None,
        latency_ms=o.latency_ms,
        loadgen={
            "cpu_s": o.cpu_s,
            "core_share": core_share,
            "machine_share": core_share / (os.cpu_count() or 1),
            "limit": core_limit,
            "schedule_lag_p99_ms": o.schedule_lag_p99_ms,
        },
        server=None if server is None else [{**asdict(m), "rows_per_execution": m.rows_per_execution} for m in server],
        server_note="" if server is not None else note,
        outside_triton_ms=outside,
        warnings=warnings,
        notes=o.notes,
    )


# --------------------------------------------------------------------------------------------------------- sweep
def check_pool(target: Target, payloads: Payloads, requests: int = 4, timeout_s: float = 10.0) -> dict[str, Any]:
    """The first ``requests`` requests' rows sent once through the typed client: which release answers, and how
    many rows the server scores (``ok``) rather than refuses; a server that cannot be reached is reported, not
    raised (the steps then count its errors)."""
    from inferline.serving.client import InferlineClient, InferlineError, TlsFiles

    rows = payloads.frame.iloc[: requests * payloads.rows_per_request]
    tls = TlsFiles(target.tls_ca, target.tls_cert, target.tls_key) if target.tls_ca else None
    try:
        with InferlineClient(
            target.url,
            target.protocol,
            pipeline=target.model,
            spec=payloads.spec,
            timeout_s=timeout_s,
            retries=1,
            api_key=target.api_key(),
            tls=tls,
            max_batch_size=payloads.rows_per_request,
        ) as client:
            p = client.predict(rows, errors="record")
    except (InferlineError, OSError, ValueError) as exc:
        return {"rows": len(rows), "ok": 0, "release": None, "error": str(exc)}
    statuses = pd.Series(p.status).value_counts().to_dict()
    releases = sorted({r for r in p.release if r})
    return {
        "rows": len(rows),
        "ok": int(sum(s == "ok" for s in p.status)),
        "statuses": {str(k): int(v) for k, v in statuses.items()},
        "release": releases[-1] if releases else None,
        "releases": releases,
        "error": "; ".join(str(e) for e in p.errors[:1]) or None,
    }


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
