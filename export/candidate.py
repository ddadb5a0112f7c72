"""Release candidates: what a release is made of, wherever its model came from.

``run_candidate`` reads a training run, ``model_candidate`` a model trained elsewhere (a module and its weights, or
an ONNX file), ``release_candidate`` an earlier release (the same model published again with other serving
settings). ``export.publish`` stages, gates and publishes any of them the same way.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inferline.core.errors import PathNotFound, UserError
from inferline.core.files import sha256_file
from inferline.export.outputs import check_batch_axis
from inferline.export.safety import MAX_MODEL_BYTES, check_onnx_file
from inferline.features.contract import compile_contract
from inferline.features.spec import SPEC_FILE, TENSOR_DTYPES, PipelineSpec, read_spec, spec_beside
from inferline.features.state import STATE_FILE, FeatureMatrix, FeatureState
from inferline.release.manifest import Manifest
from inferline.release.registry import Registry, model_names
from inferline.release.runtime import onnx_session
from inferline.training.model import ModelLayout, ScoringModel, layout_for, load_checkpoint

__all__ = [
    "BUILTIN_FACTORY",
    "Candidate",
    "example_feeds",
    "model_candidate",
    "profile_of",
    "release_candidate",
    "run_candidate",
]

BUILTIN_FACTORY = "inferline.training.model:tabular_net"


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


def run_candidate(run_dir: Path, onnx_model: Path | None) -> Candidate:
    """A candidate from a training run directory (``onnx_model``: a given ONNX file to publish instead of exporting
    the run's checkpoint, which still gates it)."""
    if not (run_dir / "run.json").is_file():
        raise PathNotFound(
            f"{str(run_dir)!r} is not a training run directory (no run.json in it); expected a directory written by "
            "`inferline train` (e.g. .inferline/runs/<run id>): check --run, or omit it to publish the latest run"
        )
    run = json.loads((run_dir / "run.json").read_text())
    spec = spec_beside(run_dir / STATE_FILE, run["pipeline"])  # the run's snapshot, not the live module
    state = FeatureState.load(run_dir / STATE_FILE)
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


def example_feeds(contract: Any, n: int, seed: int) -> dict[str, np.ndarray]:
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
        feeds = example_feeds(contract, examples, seed)
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


def release_candidate(
    repository: Path, pipeline: str, version: int, rows: pd.DataFrame | None = None
) -> tuple[Candidate, Manifest]:
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
    state = FeatureState.load(home / STATE_FILE)
    contract = compile_contract(spec, state)
    if rows is not None and len(rows):
        feeds = {k: np.ascontiguousarray(v) for k, v in contract.feeds(contract.features(rows.head(2048))).items()}
    elif spec.features:
        raise UserError(
            f"release {pipeline}:{version} has tabular features: give rows of its raw inputs for the gate's examples"
        )
    else:
        feeds = example_feeds(contract, 64, 0)
    lineage = manifest.lineage()
    lineage["derived_from"] = version
    candidate = Candidate(
        spec=spec,
        state=state,
        feeds=feeds,
        layout=layout_for(contract),
        onnx_source=model_dir / "model.onnx",
        lineage=lineage,
        metrics=manifest.metrics,
        profile_file=model_dir / "reference_profile.json",
    )
    sets = manifest.quality_sets  # the release's own labelled sets travel with its model
    if "holdout" in sets:
        candidate.holdout = model_dir / sets["holdout"].file
    if "golden" in sets:
        candidate.golden = model_dir / sets["golden"].file
    return candidate, manifest


def profile_of(candidate: Candidate, onnx_path: Path) -> dict[str, Any]:
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
