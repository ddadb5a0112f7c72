"""The requests of a load step, built once before any load: ``Payloads``, a pool of distinct rows (or tensors)
of the pipeline's own data (``payloads_from_frame``; ``load_rows`` finds a Parquet file, the holdout of the
release's training run, or the pipeline's generator; ``resolve_pipeline`` the spec whose contract encodes them),
``rows_per_request`` rows each, encoded by the wire contract (``features.wire.encode_rows``) into Open Inference
Protocol bodies (HTTP, the binary tensor extension by default) or ``InferInput`` lists (gRPC), sent in turn so that
consecutive requests never repeat within a pass. Preparing them is not the generator's load, so it happens here,
before a step.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from inferline.core.errors import UserError
from inferline.features.spec import SPEC_FILE, PipelineSpec
from inferline.serving.load.outcome import HttpBody
from inferline.serving.load.wrk import write_body_file

__all__ = ["Payloads", "load_rows", "payloads_from_frame", "resolve_pipeline", "unique_text"]


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
