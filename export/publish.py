"""Export a training run to ONNX, gate it on parity, and publish it as a numbered release.

Layout written into the Triton model repository for pipeline ``p`` and release ``N``, ``--target local`` (the
bundled tritonserver; one fused Python-backend model)::

    p.registry.json                       current / previous / releases / history (the commit point)
    p/config.pbtxt                        the fused model, version_policy specific [current]: clients call ``p``
    p/N/model.py                          serving/backend/fused.py: validation + features + onnxruntime, one execute
    p/N/release.config.{pbtxt,json}       this release's config, restored on promote/rollback
    p_preprocess/N/feature_state.json     fitted vocabularies, statistics, threshold (read by p/N)
    p_preprocess/N/spec.json              the pipeline spec, snapshotted with its hash: the release's contract
    p_model/N/model.onnx                  the gated model (read by p/N); reference_profile.json beside it
    p_model/N/holdout.parquet, golden.*   the labelled sets the quality gate scores releases on (export.quality)
    */N/release.json                      the release manifest (lineage), identical in every version directory

Version N of ``p`` is release N. ``p_preprocess`` and ``p_model`` are not loaded on this target: their version
directories are where every reader of a release (registry, batch job, monitor, switch checks) finds its state and
model, as on the gpu target, so the fused model adds code and a config, never a second copy of an artifact.

``--target gpu`` (NVIDIA's image; native onnxruntime backend), an ensemble of two models::

    p/config.pbtxt, p/1/                  the ensemble (its own version stays 1; it routes to release N's pair)
    p_preprocess/config.pbtxt             version_policy specific [current]
    p_preprocess/N/model.py               serving/backend/preprocess.py (shared feature kernels + validation)
    p_preprocess/N/feature_state.json     fitted vocabularies, statistics, threshold
    p_preprocess/N/spec.json              the pipeline spec, snapshotted with its hash: the release's contract
    p_preprocess/N/ensemble.config.pbtxt  the ensemble's config for this release
    p_model/config.pbtxt                  version_policy specific [current]
    p_model/N/model.onnx                  the gated model; reference_profile.json beside it
    */N/release.json, */N/release.config.{pbtxt,json}   as above

Local releases published before the fused model have the ensemble layout (with ``p_model/N/model.py``, an
onnxruntime runner); ``Registry.layout`` tells the two apart by the release's own files and they are still served.

Nothing is visible to the server until the registry moves: version directories are staged in ``.staging/``,
validated, renamed into place, then the registry and model-level configs are rewritten atomically.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import logging
import platform
import shutil
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from inferline.core.errors import PathNotFound, UserError
from inferline.core.files import atomic_write_bytes, atomic_write_json, sha256_file
from inferline.export.config import Target, pipeline_configs, to_json, to_pbtxt
from inferline.export.outputs import check_batch_axis, check_outputs
from inferline.export.parity import ATOL, RTOL, ParityGateFailed, ParityReport, batch_invariance_gate, run_parity_gate
from inferline.export.quality import (
    QualityReport,
    ReleaseModel,
    quality_gate,
    read_labelled,
)
from inferline.export.safety import MAX_MODEL_BYTES, check_onnx_file
from inferline.features.contract import compile_contract
from inferline.features.spec import SPEC_FILE, TENSOR_DTYPES, PipelineSpec, read_spec, spec_beside, write_spec
from inferline.features.state import FeatureMatrix, FeatureState
from inferline.release.registry import Registry, model_names
from inferline.release.runtime import onnx_session
from inferline.release.switch import activate
from inferline.training.model import ModelLayout, ScoringModel, layout_for, load_checkpoint

BUILTIN_FACTORY = "inferline.training.model:tabular_net"
TORCH_DTYPES = TENSOR_DTYPES  # Triton datatype -> the torch (and numpy) dtype name

__all__ = [
    "Candidate",
    "PublishFailed",
    "PublishResult",
    "activate",
    "export_onnx",
    "model_candidate",
    "publish",
    "release_candidate",
]

log = logging.getLogger("inferline.export")


@dataclass
class PublishResult:
    version: int
    promoted: bool
    manifest: dict[str, Any]
    parity: ParityReport
    quality: QualityReport | None = None


def export_onnx(
    model: ScoringModel,
    path: Path,
    max_batch_size: int,
    layout: ModelLayout | None = None,
    examples: Sequence[torch.Tensor] | None = None,
) -> None:
    """torch -> ONNX (dynamo exporter): inputs named as ``layout.inputs`` with a dynamic batch axis (and a dynamic
    axis for each declared ``-1`` dimension), outputs named as the task's (``probabilities``/``predicted_class`` or
    ``prediction``). ``examples`` (rows of real model inputs) trace the graph; zeros of the layout when absent."""
    if layout is None:
        arch = model.arch
        layout = ModelLayout(
            inputs=(("numeric", "FP32", (arch.n_numeric,)), ("categorical", "INT64", (len(arch.cardinalities),))),
            task=model.task,
            n_outputs=arch.n_classes,
        )
    if examples is None:
        examples = [
            torch.zeros((8, *(8 if d < 0 else d for d in dims)), dtype=getattr(torch, TORCH_DTYPES[dt]))
            for _, dt, dims in layout.inputs
        ]
    examples = tuple(
        t[:8] if t.shape[0] >= 8 else t.repeat((-(-8 // t.shape[0]), *[1] * (t.ndim - 1)))[:8] for t in examples
    )
    batch = torch.export.Dim("batch", min=1, max=max(max_batch_size, 65536))
    names = [name for name, _, _ in layout.inputs]
    outputs = ["prediction"] if model.task == "regression" else ["probabilities", "predicted_class"]

    def shapes(shared: bool) -> tuple[tuple[dict[int, Any], ...]]:
        spec = []
        for name, _, dims in layout.inputs:
            axes: dict[int, Any] = {0: batch}
            for i, d in enumerate(dims):
                if d < 0:
                    axes[i + 1] = torch.export.Dim(f"d{i + 1}" if shared else f"{name}_d{i + 1}", min=1, max=65536)
            spec.append(axes)
        return (tuple(spec),)

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    program = None
    for shared in (False, True):  # separate variable dims first; inputs that must agree (tokens, mask) share them
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    model,
                    examples,
                    input_names=names,
                    output_names=outputs,
                    dynamo=True,
                    dynamic_shapes=shapes(shared),
                    verbose=False,
                )
            break
        except Exception as exc:
            if shared or not any(d < 0 for _, _, dims in layout.inputs for d in dims):
                raise ExportFailed(
                    f"torch.onnx.export could not export the model ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); check that forward() takes the inputs "
                    f"{names} and uses only exportable operations (see the forward contract in "
                    "inferline.training.model)"
                ) from exc
    assert program is not None
    tmp = path.with_suffix(".tmp.onnx")
    program.save(str(tmp))
    tmp.replace(path)


class ExportFailed(UserError, RuntimeError):
    """The model could not be exported to ONNX."""


def _code_revision() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}


def backend_source(name: str) -> Path:
    """The Python-backend model file shipped in ``serving/backend/`` (found without importing inferline.serving)."""
    spec = importlib.util.find_spec("inferline.serving")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'inferline.serving' is not importable; install inferline (pip install -e .)")
    path = Path(next(iter(spec.submodule_search_locations))) / "backend" / name
    if not path.exists():
        raise FileNotFoundError(f"Python-backend model source missing: {path}")
    return path


def _next_version(repository: Path, names: dict[str, str], registry: Registry) -> int:
    seen = [int(v) for v in registry.read()["releases"]]
    for key in ("preprocess", "model", "ensemble"):
        d = repository / names[key]
        if d.exists():
            seen += [int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(seen, default=0) + 1


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _validate_staged(stage: Path, names: dict[str, str], feeds: dict[str, np.ndarray]) -> None:
    """The staged release must be loadable as a whole before it may move into place."""
    state = FeatureState.load(stage / names["preprocess"] / "feature_state.json")
    state.check(read_spec(stage / names["preprocess"] / SPEC_FILE))
    session = onnx_session(stage / names["model"] / "model.onnx")
    session.run(None, {k: v[:2] for k, v in feeds.items()})
    for folder in sorted(p for p in stage.iterdir() if p.is_dir()):
        for f in folder.glob("*.py"):
            compile(f.read_text(), str(f), "exec")  # syntax check without leaving __pycache__ in the release
        for f in folder.glob("*.config.json"):
            json.loads(f.read_text())


@dataclass
class Candidate:
    """What a release is made of, wherever it came from (a training run, a user's module and weights, an ONNX
    file): the spec and fitted state, the PyTorch reference (None for an ONNX file alone), the model inputs the gate
    runs on, and the lineage the manifest records."""

    spec: PipelineSpec
    state: FeatureState
    feeds: dict[str, np.ndarray]  # gate examples: model inputs by name
    model: ScoringModel | None = None
    layout: ModelLayout | None = None
    onnx_source: Path | None = None  # a given ONNX file (already with inferline's head)
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    profile_file: Path | None = None
    holdout: Path | None = None  # labelled raw rows the model never trained on (the quality gate's first set)
    golden: Path | None = None  # the golden set (default: the spec's golden_set)


def _run_candidate(run_dir: Path, onnx_model: Path | None) -> Candidate:
    if not (run_dir / "run.json").is_file():
        raise PathNotFound(
            f"{str(run_dir)!r} is not a training run directory (no run.json in it); expected a directory written by "
            "`inferline train` (e.g. .inferline/runs/<run id>): check --run, or omit it to publish the latest run"
        )
    run = json.loads((run_dir / "run.json").read_text())
    spec = spec_beside(run_dir / "feature_state.json", run["pipeline"])  # the run's snapshot, not the live module
    state = FeatureState.load(run_dir / "feature_state.json")
    contract = compile_contract(spec, state)
    holdout = contract.features(pd.read_parquet(run_dir / "holdout.parquet"))
    model = load_checkpoint(run_dir / "checkpoint.pt")
    return Candidate(
        spec=spec,
        state=state,
        feeds={k: np.ascontiguousarray(v) for k, v in contract.feeds(holdout).items()},
        model=model,
        layout=layout_for(contract),
        onnx_source=onnx_model,
        lineage={
            "source": "training run",
            "run_id": run["run_id"],
            "data_fingerprint": run["data_fingerprint"]["sha256"],
            "data_files": run["data_fingerprint"]["files"],
            "checkpoint_sha256": sha256_file(run_dir / "checkpoint.pt"),
            "model": run.get("model", {"factory": "inferline.training.model:tabular_net"}),
            "origin": f"the model of run {run_dir}",
        },
        metrics=json.loads((run_dir / "metrics.json").read_text())["holdout"],
        profile_file=run_dir / "reference_profile.json",
        holdout=run_dir / "holdout.parquet" if (run_dir / "holdout.parquet").is_file() else None,
    )


def _example_feeds(contract: Any, n: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs drawn from the spec's tensor declarations (dtype, shape; range from the column's ge/le/between
    rules; 16 for a variable dimension): the gate's examples when no data is given."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for c in contract.spec.tensor_columns:
        lo, hi = -1.0, 1.0
        for r in c.rules:
            if r.op == "ge":
                lo = float(r.args[0])
            elif r.op == "le":
                hi = float(r.args[0])
            elif r.op == "between":
                lo, hi = float(r.args[0]), float(r.args[1])
        dims = tuple(16 if d < 0 else d for d in c.shape)
        dtype = np.dtype(TENSOR_DTYPES[c.dtype])
        raw: np.ndarray
        if dtype.kind in "iub":
            raw = rng.integers(int(np.ceil(lo)) if lo > -1 else 0, int(np.floor(hi)) + 1 if hi > 1 else 2, (n, *dims))
        else:
            raw = rng.uniform(lo, hi, (n, *dims))
        feeds[c.name] = raw.astype(dtype)
    plans = {p.name: p for p in contract._tensors}
    return {
        t.name: np.ascontiguousarray(plans[t.name].model_input(np, feeds[t.name], None)) for t in contract.model_inputs
    }


def model_candidate(
    spec: PipelineSpec,
    module: str | None = None,
    checkpoint: Path | None = None,
    onnx_model: Path | None = None,
    data: Sequence[Path] = (),
    threshold: float = 0.5,
    factory_args: dict[str, Any] | None = None,
    examples: int = 64,
    seed: int = 0,
) -> Candidate:
    """A release candidate from a model trained elsewhere: ``module`` (``pkg.mod:build``, the factory) with the
    weights in ``checkpoint``, or an ONNX file (its first output the logits, or the values for regression). The
    feature state is fitted on ``data`` when the spec has tabular features; the gate's examples are ``data``'s rows
    (validated), else drawn from the spec's tensor declarations."""
    from inferline.export.head import attach_head
    from inferline.features.dataset import load_validated
    from inferline.features.state import fit_state
    from inferline.training.model import build_model, load_into, load_weights

    if (module is None) == (onnx_model is None):
        raise UserError("publish a model trained elsewhere with either --module (and --checkpoint) or --onnx")
    if module is not None and checkpoint is None:
        raise UserError(f"--module {module} needs --checkpoint: the weights (torch.save(module.state_dict(), path))")
    frame = None
    lineage: dict[str, Any] = {"source": "module" if module else "onnx file"}
    lineage["origin"] = f"--module {module}" if module else f"--onnx {onnx_model}"  # how messages name it
    if data:
        frame, report = load_validated(list(data), spec, include_label=False, max_invalid_share=1.0)
        lineage.update(data_fingerprint=report.fingerprint.get("sha256"), data_files=report.fingerprint.get("files"))
    elif spec.features:
        raise UserError(
            f"pipeline {spec.name!r} has tabular features, whose vocabularies and statistics are fitted on data: "
            "give --data (Parquet files of raw rows) to fit them"
        )
    state = fit_state(frame if frame is not None else pd.DataFrame(), spec, threshold=threshold)
    contract = compile_contract(spec, state)
    if frame is not None and len(frame):
        feeds = {k: np.ascontiguousarray(v) for k, v in contract.feeds(contract.features(frame.head(2048))).items()}
    else:
        feeds = _example_feeds(contract, examples, seed)
    layout = layout_for(contract)
    candidate = Candidate(spec=spec, state=state, feeds=feeds, layout=layout, lineage=lineage)
    if module is not None:
        from inferline.features.imports import source_sha256
        from inferline.training.model import factory_args_of

        builtin = module in ("", BUILTIN_FACTORY) and spec.model.factory in ("", BUILTIN_FACTORY)
        args = dict(
            factory_args
            if factory_args is not None
            else factory_args_of(spec.model)
            if builtin
            else spec.model.factory_args
        )
        net = build_model(module, layout, args)
        assert checkpoint is not None
        load_into(net, load_weights(Path(checkpoint)), str(checkpoint))
        candidate.model = ScoringModel(net.eval(), threshold, task=spec.task).eval()
        lineage.update(
            checkpoint_sha256=sha256_file(Path(checkpoint)),
            model={"factory": module, "source_sha256": source_sha256(module), "args": args, "layout": layout.as_dict()},
        )
    else:
        assert onnx_model is not None
        check_onnx_file(Path(onnx_model), MAX_MODEL_BYTES)
        check_batch_axis(Path(onnx_model))  # the user's file named in the message, before the head is attached
        headed = Path(tempfile.mkdtemp(prefix="inferline-head-")) / "model.onnx"
        attach_head(
            Path(onnx_model),
            headed,
            spec.task,
            layout.n_outputs,
            threshold,
            input_names=[t.name for t in contract.model_inputs],
        )
        candidate.onnx_source = headed
        lineage.update(onnx_source_sha256=sha256_file(Path(onnx_model)), model={"layout": layout.as_dict()})
    return candidate


LINEAGE_KEYS = (
    "source",
    "run_id",
    "data_fingerprint",
    "data_files",
    "checkpoint_sha256",
    "model",
    "onnx_source_sha256",
)


def release_candidate(
    repository: Path, pipeline: str, version: int, rows: pd.DataFrame | None = None
) -> tuple[Candidate, dict[str, Any]]:
    """A candidate made of release ``version``'s own artifacts (its spec snapshot, feature state, ONNX model,
    reference profile, lineage and metrics), and the release's manifest: to publish the same model again with other
    serving settings (``inferline bench tune --publish``), whether it came from a training run or from a user's
    module. The gate's examples are ``rows`` (raw rows) in the release's contract, else drawn from its tensor
    declarations; a pipeline with tabular features needs ``rows``."""
    repository = Path(repository)
    names = model_names(pipeline)
    manifest = Registry(repository, pipeline).manifest(version)
    home = repository / names["preprocess"] / str(version)
    model_dir = repository / names["model"] / str(version)
    spec = read_spec(home / SPEC_FILE)
    state = FeatureState.load(home / "feature_state.json")
    contract = compile_contract(spec, state)
    if rows is not None and len(rows):
        feeds = {k: np.ascontiguousarray(v) for k, v in contract.feeds(contract.features(rows.head(2048))).items()}
    elif spec.features:
        raise UserError(
            f"release {pipeline}:{version} has tabular features: give rows of its raw inputs for the gate's examples"
        )
    else:
        feeds = _example_feeds(contract, 64, 0)
    lineage = {k: manifest.get(k) for k in LINEAGE_KEYS}
    lineage["data_files"] = lineage["data_files"] or []
    lineage["derived_from"] = version
    candidate = Candidate(
        spec=spec,
        state=state,
        feeds=feeds,
        layout=layout_for(contract),
        onnx_source=model_dir / "model.onnx",
        lineage=lineage,
        metrics=manifest.get("metrics") or {},
        profile_file=model_dir / "reference_profile.json",
    )
    sets = manifest.get("quality_sets") or {}  # the release's own labelled sets travel with its model
    if "holdout" in sets:
        candidate.holdout = model_dir / sets["holdout"]["file"]
    if "golden" in sets:
        candidate.golden = model_dir / sets["golden"]["file"]
    return candidate, manifest


def _profile_of(candidate: Candidate, onnx_path: Path) -> dict[str, Any]:
    """A reference profile for a candidate without a training run: features and predictions over its examples."""
    from inferline.training.profile import reference_profile

    session = onnx_session(onnx_path)
    first = session.run(None, candidate.feeds)[0]
    m = FeatureMatrix(
        numeric=candidate.feeds.get("numeric", np.zeros((len(first), 0), np.float32)),
        categorical=candidate.feeds.get("categorical", np.zeros((len(first), 0), np.int64)),
    )
    profile = reference_profile(m, candidate.state, first, task=candidate.spec.task)
    profile["source"] = "data" if candidate.lineage.get("data_fingerprint") else "examples drawn from the spec"
    return profile


def publish(
    run_dir: Path | None,
    repository: Path,
    target: Target = "local",
    promote: bool = True,
    onnx_model: Path | None = None,
    max_batch_size: int | None = None,
    tensorrt: bool = False,
    atol: float = ATOL,
    rtol: float = RTOL,
    max_model_bytes: int = MAX_MODEL_BYTES,
    candidate: Candidate | None = None,
    load_check: bool = True,
    serving: Mapping[str, Any] | None = None,
    quality_tolerance: float | None = None,
    accept_worse: str | None = None,
    refuse_worse: bool | None = None,
) -> PublishResult:
    """Stage, gate, validate and publish ``run_dir`` (or a ``candidate`` from ``model_candidate``) as the next
    release. ``onnx_model`` publishes a given ONNX file instead of exporting one (it must still pass the gate
    against the run's checkpoint). ``load_check`` loads the staged release in a scratch tritonserver before it
    moves into place (about 6.5 s; ``--no-load-check`` on the command line skips it). ``atol``/``rtol``: the parity
    gate's tolerance, ``|onnx - reference| <= atol + rtol*|reference|`` (``export.parity``). ``serving``: the served
    model's instances and batching settings, as ``inferline bench tune`` measured them (``export.config``).

    Quality gate (``export.quality``): the candidate and the current release are scored on the candidate's holdout
    and golden set, each through its own contract; a worse one (beyond ``quality_tolerance``, the task's default
    when None) is refused with ``QualityGateRefused`` and nothing is published, when it would become current
    (``refuse_worse``, default ``promote``), unless ``accept_worse`` gives a reason (recorded in the registry's
    history). The comparison goes into the manifest (``quality``) and the sets into the release."""
    repository = Path(repository)
    if onnx_model is not None:
        check_onnx_file(Path(onnx_model), max_model_bytes)  # refused before anything is staged
    if candidate is None:
        if run_dir is None:
            raise UserError("publish needs a training run (--run) or a model (--module/--checkpoint or --onnx --spec)")
        candidate = _run_candidate(Path(run_dir), onnx_model)
    spec, state = candidate.spec, candidate.state
    state.check(spec)
    names = model_names(spec.name)
    mbs = max_batch_size or spec.model.max_batch_size
    registry = Registry(repository, spec.name)

    # the model directories that get a version directory N for this release
    folders = ("preprocess", "model", "ensemble") if target == "local" else ("preprocess", "model")
    stage = repository / ".staging" / f"{spec.name}-{uuid.uuid4().hex[:12]}"
    moved: list[Path] = []  # version directories renamed into place (undone if anything after them fails)
    saved: dict[Path, bytes | None] = {}  # model-level configs as they were before activate (restored likewise)
    try:
        for key in folders:
            (stage / names[key]).mkdir(parents=True)
        onnx_path = stage / names["model"] / "model.onnx"
        if candidate.onnx_source is not None:
            shutil.copyfile(candidate.onnx_source, onnx_path)
        else:
            assert candidate.model is not None
            examples = [torch.from_numpy(v[:8]) for v in candidate.feeds.values()]
            export_onnx(candidate.model, onnx_path, mbs, candidate.layout, examples)
        check_onnx_file(onnx_path, max_model_bytes)
        origin = str(onnx_model) if onnx_model is not None else str(candidate.lineage.get("origin") or "the model")
        check_outputs(onnx_path, spec, candidate.feeds, what=origin)  # the output contract, before the gate
        if candidate.model is not None:
            parity = run_parity_gate(
                candidate.model, onnx_path, candidate.feeds, batch_sizes=(1, 7, mbs), atol=atol, rtol=rtol
            )
        else:
            parity = batch_invariance_gate(onnx_path, candidate.feeds, batch_sizes=(1, 7, mbs), atol=atol, rtol=rtol)
        if not parity.passed:
            raise ParityGateFailed(parity, spec.name)
        quality_sets, labelled = _stage_labelled_sets(candidate, stage / names["model"])

        state.save(stage / names["preprocess"] / "feature_state.json")
        write_spec(spec, stage / names["preprocess"] / SPEC_FILE)  # the release carries its own contract
        if target == "local":
            shutil.copyfile(backend_source("fused.py"), stage / names["ensemble"] / "model.py")
        else:
            shutil.copyfile(backend_source("preprocess.py"), stage / names["preprocess"] / "model.py")
        profile_path = stage / names["model"] / "reference_profile.json"
        if candidate.profile_file is not None:
            shutil.copyfile(candidate.profile_file, profile_path)
        else:
            atomic_write_json(profile_path, _profile_of(candidate, onnx_path))
        profile = json.loads(profile_path.read_text())

        with registry.locked() as reg:
            version = _next_version(repository, names, registry)
            current = reg["current"]
            quality = quality_gate(
                repository,
                spec.name,
                ReleaseModel(f"release {version}", spec, state, onnx_path),
                None if current is None else int(current),
                labelled,
                {e["sha256"] for e in quality_sets.values()},
                quality_tolerance,
                accept_worse,
                promote if refuse_worse is None else refuse_worse,
                f"Nothing was published; release {current} stays current.",
            )
            log.info("%s", quality.summary())
            configs = pipeline_configs(spec, state, version, target, mbs, tensorrt=tensorrt, serving=serving)
            texts = {key: to_pbtxt(cfg) for key, cfg in configs.items()}
            # where each config lives: a model's own version directory; the gpu ensemble's beside preprocess
            homes = {"fused": "ensemble", "preprocess": "preprocess", "model": "model"}
            for key, home in homes.items():
                if key in configs:
                    atomic_write_bytes(stage / names[home] / "release.config.pbtxt", texts[key].encode())
                    atomic_write_bytes(stage / names[home] / "release.config.json", to_json(configs[key]).encode())
            if "ensemble" in configs:
                atomic_write_bytes(stage / names["preprocess"] / "ensemble.config.pbtxt", texts["ensemble"].encode())
            lineage = candidate.lineage
            manifest = {
                "release": version,
                "pipeline": spec.name,
                "task": spec.task,
                "models": names,
                "target": target,
                "layout": "fused" if target == "local" else "ensemble",
                "created_at": datetime.now(UTC).isoformat(),
                "source": lineage.get("source"),
                "run_id": lineage.get("run_id"),
                "data_fingerprint": lineage.get("data_fingerprint"),
                "data_files": lineage.get("data_files", []),
                "schema_version": spec.version,
                "feature_hash": spec.feature_hash(),
                "feature_state_sha256": sha256_file(stage / names["preprocess"] / "feature_state.json"),
                "spec_sha256": sha256_file(stage / names["preprocess"] / SPEC_FILE),
                "checkpoint_sha256": lineage.get("checkpoint_sha256"),
                "model": lineage.get("model"),
                "onnx_sha256": sha256_file(onnx_path),
                "onnx_source_sha256": lineage.get("onnx_source_sha256"),
                "derived_from": lineage.get("derived_from"),  # the release whose model this one serves again
                "parity": parity.as_dict(),
                "quality": quality.as_dict(),  # the champion/challenger comparison (export.quality)
                "quality_sets": quality_sets,  # the labelled sets beside model.onnx, for `export promote`
                "config_sha256": {key: _sha256_text(t) for key, t in texts.items()},
                "configs": texts,
                "code_revision": _code_revision(),
                "metrics": candidate.metrics,
                "reference_profile": {
                    "file": "reference_profile.json",  # beside model.onnx: the monitor's drift baseline
                    "sha256": sha256_file(profile_path),
                    "rows": profile["rows"],
                    "version": profile.get("version", 1),
                    "source": profile.get("source", "training run"),
                },
                "max_batch_size": mbs,
                "serving_settings": dict(serving) if serving else None,  # bench tune's, when it chose them
                "environment": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "onnxruntime": __import__("onnxruntime").__version__,
                    "onnx": __import__("onnx").__version__,
                },
            }
            for key in folders:
                atomic_write_json(stage / names[key] / "release.json", manifest)
            _validate_staged(stage, names, candidate.feeds)
            if load_check:
                _check_loads(stage, names, folders, target, version)

            for key in folders:
                (repository / names[key]).mkdir(parents=True, exist_ok=True)
                (stage / names[key]).rename(repository / names[key] / str(version))
                moved.append(repository / names[key] / str(version))
            reg["releases"][str(version)] = {
                "published_at": manifest["created_at"],
                "manifest_sha256": sha256_file(repository / names["model"] / str(version) / "release.json"),
                "target": target,
                "run_id": lineage.get("run_id"),
                "source": lineage.get("source"),
                "metrics": _headline(candidate.metrics),
                "quality": quality.headline(),
            }
            Registry.record(reg, "publish", version, run_id=lineage.get("run_id"))
            if quality.status == "accepted_worse":
                Registry.record(
                    reg, "accept_worse", version, reason=quality.accepted_reason, quality=quality.headline()
                )
            if promote or reg["current"] is None:
                for key in ("preprocess", "model", "ensemble"):
                    config = repository / names[key] / "config.pbtxt"
                    saved[config] = config.read_bytes() if config.is_file() else None
                activate(repository, spec.name, version)
                Registry.move_pointer(reg, version, "promote", reason="publish", quality=quality.headline())
        # the registry is written as the `with` block ends: the commit point; nothing below can fail it
    except BaseException as exc:
        _undo_publish(moved, saved)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            current = Registry(repository, spec.name).current
            raise PublishFailed(
                f"no space left on the device of {repository} while publishing {spec.name!r} ({exc.strerror}: "
                f"{exc.filename2 or exc.filename or 'a file'}); nothing was published, "
                + (f"release {current} stays current" if current is not None else "no release is current")
                + ": free space there (`df -h`) or publish into another --repository, then publish again"
            ) from exc
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if candidate.onnx_source is not None and candidate.onnx_source.parent.name.startswith("inferline-head-"):
            shutil.rmtree(candidate.onnx_source.parent, ignore_errors=True)
        try:
            stage.parent.rmdir()
        except OSError:
            pass  # another publish is staging
    log.info("published %s:%d (promoted=%s)", spec.name, version, promote)
    return PublishResult(version=version, promoted=promote, manifest=manifest, parity=parity, quality=quality)


class PublishFailed(UserError, OSError):
    """The repository could not be written (a full disk, a quota); nothing was published."""


def _undo_publish(moved: Sequence[Path], saved: Mapping[Path, bytes | None]) -> None:
    """After a publish failed past its first rename: remove the version directories it moved into place, then put
    the model-level configs back as they were (removing those it created), so the repository serves what the
    registry (not rewritten) says. Best effort: what cannot be undone is logged."""
    for folder in moved:
        shutil.rmtree(folder, ignore_errors=True)
    for path, data in saved.items():
        try:
            if data is None:
                path.unlink(missing_ok=True)
            elif not path.is_file() or path.read_bytes() != data:
                atomic_write_bytes(path, data)
        except OSError as exc:
            log.error("could not restore %s after a failed publish: %s", path, exc)


def _stage_labelled_sets(
    candidate: Candidate, folder: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, pd.DataFrame]]:
    """Copy the candidate's labelled sets into its staged model folder: the holdout (``holdout.parquet``) and the
    golden set (``golden.parquet`` / ``golden.csv``: the candidate's, else the spec's ``golden_set``). Returns the
    manifest's ``quality_sets`` (``{name: {file, sha256, rows}}``) and the sets as read (for the quality gate). A
    declared golden set that is missing or has no label is refused (``UserError``)."""
    golden = candidate.golden
    if golden is None and candidate.spec.golden_set:
        golden = Path(candidate.spec.golden_set).expanduser()
        if not golden.is_file():
            raise PathNotFound(
                f"pipeline {candidate.spec.name!r} declares golden_set={candidate.spec.golden_set!r}, which is not a "
                f"file (from {Path.cwd()}); expected a Parquet or CSV file of labelled raw rows: fix the path in "
                "the spec (an absolute path, or relative to where you run inferline)"
            )
    out: dict[str, dict[str, Any]] = {}
    frames: dict[str, pd.DataFrame] = {}
    for name, source in (("holdout", candidate.holdout), ("golden", golden)):
        if source is None:
            continue
        suffix = ".csv" if source.suffix == ".csv" else ".parquet"
        if source.suffix not in (".csv", ".parquet", ".pq"):
            raise UserError(f"the {name} set {source} is neither .parquet nor .csv; give a Parquet or CSV file")
        target = folder / f"{name}{suffix}"
        shutil.copyfile(source, target)
        frames[name] = read_labelled(target, candidate.spec)
        out[name] = {"file": target.name, "sha256": sha256_file(target), "rows": len(frames[name])}
    return out, frames


HEADLINE = ("roc_auc", "pr_auc", "precision", "recall", "accuracy", "macro_f1", "mae", "rmse", "r2")


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The registry's summary of a release's holdout metrics (those of its task)."""
    return {k: metrics[k] for k in HEADLINE if k in metrics}


def _check_loads(stage: Path, names: dict[str, str], folders: Sequence[str], target: Target, version: int) -> None:
    """Load the staged release in a scratch tritonserver before it may move into place (``export.loadcheck``): a
    release the server cannot load is refused here, never promoted. The local target only: the gpu target's
    ensemble needs NVIDIA's image (its onnxruntime backend is not in the bundled server)."""
    if target != "local":
        return
    from inferline.export.loadcheck import check_release_loads

    scratch = stage.parent / f"{stage.name}-loadcheck"
    try:
        for key in folders:  # model directories as the server will see them: version N is the staged folder
            folder = scratch / names[key]
            folder.mkdir(parents=True)
            # absolute: a link beside the stage resolves from its own folder, so a relative stage (a repository
            # given as Path("triton_models"), as `inferline demo` gives it) would dangle
            (folder / str(version)).symlink_to((stage / names[key]).resolve(), target_is_directory=True)
        served = stage / names["ensemble"] / "release.config.pbtxt"
        shutil.copyfile(served, scratch / names["ensemble"] / "config.pbtxt")
        check_release_loads({names[k]: scratch / names[k] for k in folders})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
