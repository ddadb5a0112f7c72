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

import hashlib
import importlib.util
import json
import logging
import platform
import re
import shutil
import subprocess
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from inferline.export.config import Target, model_names, pipeline_configs, to_json, to_pbtxt
from inferline.export.parity import ParityGateFailed, ParityReport, run_parity_gate
from inferline.export.registry import Registry, RegistryError
from inferline.export.runtime import onnx_session
from inferline.export.safety import MAX_MODEL_BYTES, check_onnx_file
from inferline.features.artifacts import atomic_write_bytes, atomic_write_json, sha256_file
from inferline.features.errors import PathNotFound
from inferline.features.spec import SPEC_FILE, PipelineSpec, read_spec, spec_beside, write_spec
from inferline.features.state import FeatureState, compute_features
from inferline.training.model import ScoringModel, load_checkpoint

__all__ = ["PublishResult", "activate", "export_onnx", "publish"]

log = logging.getLogger("inferline.export")


@dataclass
class PublishResult:
    version: int
    promoted: bool
    manifest: dict[str, Any]
    parity: ParityReport


def export_onnx(model: ScoringModel, path: Path, max_batch_size: int) -> None:
    """torch -> ONNX (dynamo exporter) with a dynamic batch axis; inputs ``numeric``/``categorical``."""
    arch = model.net.arch
    example = (
        torch.zeros(8, arch.n_numeric, dtype=torch.float32),
        torch.zeros(8, len(arch.cardinalities), dtype=torch.int64),
    )
    batch = torch.export.Dim("batch", min=1, max=max(max_batch_size, 65536))
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            example,
            input_names=["numeric", "categorical"],
            output_names=["probabilities", "predicted_class"],
            dynamo=True,
            dynamic_shapes={"numeric": {0: batch}, "categorical": {0: batch}},
            verbose=False,
        )
    assert program is not None
    tmp = path.with_suffix(".tmp.onnx")
    program.save(str(tmp))
    tmp.replace(path)


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


def _pin_versions(text: str, versions: list[int], what: str) -> bytes:
    text, n = re.subn(r"versions: \[[ 0-9,]*\]", f"versions: [ {', '.join(map(str, versions))} ]", text)
    if n != 1:
        raise RegistryError(f"{what} config has no specific version policy")
    return text.encode()


def activate(repository: Path, pipeline: str, version: int, also_load: Sequence[int] = ()) -> None:
    """Point the model-level configs at ``version`` (copied from that release's own configs, atomically).

    ``also_load`` keeps other releases loaded beside it (a switch in progress). Fused layout: ``p``'s version policy
    lists them all (each version is a whole release). Ensemble layout: the inner models' version policy lists them,
    while the ensemble, pinned to ``version``'s pair, routes to ``version`` only."""
    names = model_names(pipeline)
    versions = sorted({version, *also_load})
    if Registry(repository, pipeline).layout(version) == "fused":
        release = repository / names["ensemble"] / str(version) / "release.config.pbtxt"
        pinned = _pin_versions(release.read_text(), versions, f"release {pipeline}:{version}'s")
        atomic_write_bytes(repository / names["ensemble"] / "config.pbtxt", pinned)
        return
    for key in ("preprocess", "model"):
        text = (repository / names[key] / str(version) / "release.config.pbtxt").read_text()
        pinned = _pin_versions(text, versions, f"release {pipeline}:{version}'s {key}")
        atomic_write_bytes(repository / names[key] / "config.pbtxt", pinned)
    ens = repository / names["preprocess"] / str(version) / "ensemble.config.pbtxt"
    atomic_write_bytes(repository / names["ensemble"] / "config.pbtxt", ens.read_bytes())
    (repository / names["ensemble"] / "1").mkdir(parents=True, exist_ok=True)


def _validate_staged(
    stage: Path, names: dict[str, str], spec: PipelineSpec, holdout_numeric: np.ndarray, holdout_categorical: np.ndarray
) -> None:
    """The staged release must be loadable as a whole before it may move into place."""
    state = FeatureState.load(stage / names["preprocess"] / "feature_state.json")
    state.check(read_spec(stage / names["preprocess"] / SPEC_FILE))
    session = onnx_session(stage / names["model"] / "model.onnx")
    session.run(None, {"numeric": holdout_numeric[:2], "categorical": holdout_categorical[:2]})
    for folder in sorted(p for p in stage.iterdir() if p.is_dir()):
        for f in folder.glob("*.py"):
            compile(f.read_text(), str(f), "exec")  # syntax check without leaving __pycache__ in the release
        for f in folder.glob("*.config.json"):
            json.loads(f.read_text())


def publish(
    run_dir: Path,
    repository: Path,
    target: Target = "local",
    promote: bool = True,
    onnx_model: Path | None = None,
    max_batch_size: int | None = None,
    tensorrt: bool = False,
    atol: float = 1e-5,
    max_model_bytes: int = MAX_MODEL_BYTES,
) -> PublishResult:
    """Stage, gate, validate and publish ``run_dir`` as the next release. ``onnx_model`` publishes a given ONNX
    file instead of exporting one (it must still pass the gate against the run's checkpoint)."""
    run_dir, repository = Path(run_dir), Path(repository)
    if not (run_dir / "run.json").is_file():
        raise PathNotFound(
            f"{str(run_dir)!r} is not a training run directory (no run.json in it); expected a directory written by "
            "`inferline train` (e.g. .inferline/runs/<run id>): check --run, or omit it to publish the latest run"
        )
    if onnx_model is not None:
        check_onnx_file(Path(onnx_model), max_model_bytes)  # refused before anything is staged
    run = json.loads((run_dir / "run.json").read_text())
    spec = spec_beside(run_dir / "feature_state.json", run["pipeline"])  # the run's snapshot, not the live module
    state = FeatureState.load(run_dir / "feature_state.json")
    state.check(spec)
    model = load_checkpoint(run_dir / "checkpoint.pt")
    names = model_names(spec.name)
    mbs = max_batch_size or spec.model.max_batch_size
    registry = Registry(repository, spec.name)

    # the model directories that get a version directory N for this release
    folders = ("preprocess", "model", "ensemble") if target == "local" else ("preprocess", "model")
    stage = repository / ".staging" / f"{spec.name}-{uuid.uuid4().hex[:12]}"
    try:
        for key in folders:
            (stage / names[key]).mkdir(parents=True)
        onnx_path = stage / names["model"] / "model.onnx"
        if onnx_model is not None:
            shutil.copyfile(onnx_model, onnx_path)
        else:
            export_onnx(model, onnx_path, mbs)
        check_onnx_file(onnx_path, max_model_bytes)
        holdout = compute_features(pd.read_parquet(run_dir / "holdout.parquet"), spec, state)
        parity = run_parity_gate(model, onnx_path, holdout, batch_sizes=(1, 7, mbs), atol=atol)
        if not parity.passed:
            raise ParityGateFailed(parity, spec.name)

        shutil.copyfile(run_dir / "feature_state.json", stage / names["preprocess"] / "feature_state.json")
        write_spec(spec, stage / names["preprocess"] / SPEC_FILE)  # the release carries its own contract
        if target == "local":
            shutil.copyfile(backend_source("fused.py"), stage / names["ensemble"] / "model.py")
        else:
            shutil.copyfile(backend_source("preprocess.py"), stage / names["preprocess"] / "model.py")

        with registry.locked() as reg:
            version = _next_version(repository, names, registry)
            configs = pipeline_configs(spec, state, version, target, mbs, tensorrt=tensorrt)
            texts = {key: to_pbtxt(cfg) for key, cfg in configs.items()}
            # where each config lives: a model's own version directory; the gpu ensemble's beside preprocess
            homes = {"fused": "ensemble", "preprocess": "preprocess", "model": "model"}
            for key, home in homes.items():
                if key in configs:
                    atomic_write_bytes(stage / names[home] / "release.config.pbtxt", texts[key].encode())
                    atomic_write_bytes(stage / names[home] / "release.config.json", to_json(configs[key]).encode())
            if "ensemble" in configs:
                atomic_write_bytes(stage / names["preprocess"] / "ensemble.config.pbtxt", texts["ensemble"].encode())
            profile = json.loads((run_dir / "reference_profile.json").read_text())
            manifest = {
                "release": version,
                "pipeline": spec.name,
                "models": names,
                "target": target,
                "layout": "fused" if target == "local" else "ensemble",
                "created_at": datetime.now(UTC).isoformat(),
                "run_id": run["run_id"],
                "data_fingerprint": run["data_fingerprint"]["sha256"],
                "data_files": run["data_fingerprint"]["files"],
                "schema_version": spec.version,
                "feature_hash": spec.feature_hash(),
                "feature_state_sha256": sha256_file(run_dir / "feature_state.json"),
                "spec_sha256": sha256_file(stage / names["preprocess"] / SPEC_FILE),
                "checkpoint_sha256": sha256_file(run_dir / "checkpoint.pt"),
                "onnx_sha256": sha256_file(onnx_path),
                "parity": parity.as_dict(),
                "config_sha256": {key: _sha256_text(t) for key, t in texts.items()},
                "configs": texts,
                "code_revision": _code_revision(),
                "metrics": json.loads((run_dir / "metrics.json").read_text())["holdout"],
                "reference_profile": {
                    "file": "reference_profile.json",  # beside model.onnx: the monitor's drift baseline
                    "sha256": sha256_file(run_dir / "reference_profile.json"),
                    "rows": profile["rows"],
                    "version": profile.get("version", 1),
                },
                "max_batch_size": mbs,
                "environment": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "onnxruntime": __import__("onnxruntime").__version__,
                    "onnx": __import__("onnx").__version__,
                },
            }
            for key in folders:
                atomic_write_json(stage / names[key] / "release.json", manifest)
            shutil.copyfile(run_dir / "reference_profile.json", stage / names["model"] / "reference_profile.json")
            _validate_staged(stage, names, spec, holdout.numeric, holdout.categorical)

            for key in folders:
                (repository / names[key]).mkdir(parents=True, exist_ok=True)
                (stage / names[key]).rename(repository / names[key] / str(version))
            reg["releases"][str(version)] = {
                "published_at": manifest["created_at"],
                "manifest_sha256": sha256_file(repository / names["model"] / str(version) / "release.json"),
                "target": target,
                "run_id": run["run_id"],
                "metrics": {k: manifest["metrics"][k] for k in ("roc_auc", "pr_auc", "precision", "recall")},
            }
            Registry.record(reg, "publish", version, run_id=run["run_id"])
            if promote or reg["current"] is None:
                activate(repository, spec.name, version)
                Registry.move_pointer(reg, version, "promote", reason="publish")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        try:
            stage.parent.rmdir()
        except OSError:
            pass  # another publish is staging
    log.info("published %s:%d (promoted=%s)", spec.name, version, promote)
    return PublishResult(version=version, promoted=promote, manifest=manifest, parity=parity)


def set_current(
    repository: Path, pipeline: str, version: int | None = None, action: str = "promote", reason: str = ""
) -> dict[str, Any]:
    """``promote`` to ``version`` or ``rollback`` to the previous release: moves configs and registry together."""
    registry = Registry(Path(repository), pipeline)
    with registry.locked() as reg:
        if action == "rollback":
            if reg["previous"] is None:
                raise RegistryError(
                    f"pipeline {pipeline!r} has no previous release to roll back to "
                    f"(current {reg['current']}, history {len(reg['history'])} entries)"
                )
            version = int(reg["previous"])
        if version is None:
            raise RegistryError("promote needs a version")
        if str(version) not in reg["releases"]:
            raise RegistryError(
                f"release {pipeline}:{version} does not exist; published: {sorted(map(int, reg['releases']))}"
            )
        activate(Path(repository), pipeline, version)
        Registry.move_pointer(reg, version, action, reason=reason)
        return dict(reg)
