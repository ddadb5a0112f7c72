"""Staging a release: the files of version N written into ``.staging/``, checked before anything moves into place.

``export.publish`` drives the sequence; the steps here each do one part of it: the labelled sets copied beside the
model, the served configs written (``release.config.{pbtxt,json}``), the manifest assembled, the staged release
validated as a whole (``validate_staged``) and loaded in a scratch tritonserver (``check_loads``), and, when
anything fails after the first rename, the repository put back as it was (``undo_publish``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import platform
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tritonclient.grpc.model_config_pb2 import ModelConfig

from inferline.core.errors import PathNotFound, UserError
from inferline.core.files import atomic_write_bytes, sha256_file
from inferline.export.candidate import Candidate
from inferline.export.config import Target, to_json, to_pbtxt
from inferline.export.parity import ParityReport
from inferline.export.quality import QualityReport, read_labelled
from inferline.features.spec import SPEC_FILE, read_spec
from inferline.features.state import STATE_FILE, FeatureState
from inferline.release.manifest import CodeRevision, Environment, LabelledSet, Manifest, ReferenceProfileEntry
from inferline.release.registry import Registry
from inferline.release.runtime import onnx_session

__all__ = [
    "backend_source",
    "check_loads",
    "code_revision",
    "next_version",
    "release_manifest",
    "sha256_text",
    "stage_labelled_sets",
    "undo_publish",
    "validate_staged",
    "write_configs",
]

log = logging.getLogger("inferline.export")


def code_revision() -> CodeRevision:
    """The git commit of the inferline checkout publishing, and whether its tracked files have changes."""
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
        return CodeRevision(commit=commit, dirty=dirty)
    except (OSError, subprocess.CalledProcessError):
        return CodeRevision()


def backend_source(name: str) -> Path:
    """The Python-backend model file shipped in ``serving/backend/`` (found without importing inferline.serving)."""
    spec = importlib.util.find_spec("inferline.serving")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'inferline.serving' is not importable; install inferline (pip install -e .)")
    path = Path(next(iter(spec.submodule_search_locations))) / "backend" / name
    if not path.exists():
        raise FileNotFoundError(f"Python-backend model source missing: {path}")
    return path


def next_version(repository: Path, names: dict[str, str], registry: Registry) -> int:
    """One past every version the registry or a model directory knows (a folder left without a registry entry
    is never reused)."""
    seen = [int(v) for v in registry.read()["releases"]]
    for key in ("preprocess", "model", "ensemble"):
        d = repository / names[key]
        if d.exists():
            seen += [int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(seen, default=0) + 1


def sha256_text(text: str) -> str:
    """The sha256 of ``text`` as UTF-8 (a config's, for the manifest)."""
    return hashlib.sha256(text.encode()).hexdigest()


def validate_staged(stage: Path, names: dict[str, str], feeds: dict[str, np.ndarray]) -> None:
    """The staged release must be loadable as a whole before it may move into place."""
    state = FeatureState.load(stage / names["preprocess"] / STATE_FILE)
    state.check(read_spec(stage / names["preprocess"] / SPEC_FILE))
    session = onnx_session(stage / names["model"] / "model.onnx")
    session.run(None, {k: v[:2] for k, v in feeds.items()})
    for folder in sorted(p for p in stage.iterdir() if p.is_dir()):
        for f in folder.glob("*.py"):
            compile(f.read_text(), str(f), "exec")  # syntax check without leaving __pycache__ in the release
        for f in folder.glob("*.config.json"):
            json.loads(f.read_text())


def stage_labelled_sets(candidate: Candidate, folder: Path) -> tuple[dict[str, LabelledSet], dict[str, pd.DataFrame]]:
    """Copy the candidate's labelled sets into its staged model folder: the holdout (``holdout.parquet``) and the
    golden set (``golden.parquet`` / ``golden.csv``: the candidate's, else the spec's ``golden_set``). Returns the
    manifest's ``quality_sets`` (``{name: LabelledSet}``) and the sets as read (for the quality gate). A
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
    out: dict[str, LabelledSet] = {}
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
        out[name] = LabelledSet(file=target.name, sha256=sha256_file(target), rows=len(frames[name]))
    return out, frames


def undo_publish(moved: Sequence[Path], saved: Mapping[Path, bytes | None]) -> None:
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


def check_loads(stage: Path, names: dict[str, str], folders: Sequence[str], target: Target, version: int) -> None:
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


def write_configs(stage: Path, names: dict[str, str], configs: Mapping[str, ModelConfig]) -> dict[str, str]:
    """Write the release's served configs into its staged model folders, each as ``release.config.pbtxt`` (what
    ``release.switch.activate`` serves) and ``release.config.json`` (a model-control override); the gpu ensemble's
    as ``ensemble.config.pbtxt`` beside preprocess. Returns the pbtxt texts by key, for the manifest."""
    texts = {key: to_pbtxt(config) for key, config in configs.items()}
    # where each config lives: a model's own version directory; the gpu ensemble's beside preprocess
    homes = {"fused": "ensemble", "preprocess": "preprocess", "model": "model"}
    for key, home in homes.items():
        if key in configs:
            atomic_write_bytes(stage / names[home] / "release.config.pbtxt", texts[key].encode())
            atomic_write_bytes(stage / names[home] / "release.config.json", to_json(configs[key]).encode())
    if "ensemble" in configs:
        atomic_write_bytes(stage / names["preprocess"] / "ensemble.config.pbtxt", texts["ensemble"].encode())
    return texts


def release_manifest(
    candidate: Candidate,
    version: int,
    target: Target,
    stage: Path,
    names: dict[str, str],
    *,
    parity: ParityReport,
    quality: QualityReport,
    quality_sets: dict[str, LabelledSet],
    configs: dict[str, str],
    max_batch_size: int,
    serving: Mapping[str, Any] | None,
) -> Manifest:
    """The manifest of release ``version``, staged in ``stage``: the candidate's lineage, the sha256 of the staged
    files its consumers load, the gates' verdicts, the served configs (``configs``: pbtxt texts by key) and the
    environment that published it."""
    spec, lineage = candidate.spec, candidate.lineage
    profile_path = stage / names["model"] / "reference_profile.json"
    profile = json.loads(profile_path.read_text())
    return Manifest(
        release=version,
        pipeline=spec.name,
        task=spec.task,
        models=names,
        target=target,
        layout="fused" if target == "local" else "ensemble",
        created_at=datetime.now(UTC).isoformat(),
        source=lineage.get("source"),
        run_id=lineage.get("run_id"),
        data_fingerprint=lineage.get("data_fingerprint"),
        data_files=lineage.get("data_files", []),
        schema_version=spec.version,
        feature_hash=spec.feature_hash(),
        feature_state_sha256=sha256_file(stage / names["preprocess"] / STATE_FILE),
        spec_sha256=sha256_file(stage / names["preprocess"] / SPEC_FILE),
        checkpoint_sha256=lineage.get("checkpoint_sha256"),
        model=lineage.get("model"),
        onnx_sha256=sha256_file(stage / names["model"] / "model.onnx"),
        onnx_source_sha256=lineage.get("onnx_source_sha256"),
        derived_from=lineage.get("derived_from"),  # the release whose model this one serves again
        parity=parity.as_dict(),
        quality=quality.as_dict(),  # the champion/challenger comparison (export.quality)
        quality_sets=quality_sets,  # the labelled sets beside model.onnx, for `export promote`
        config_sha256={key: sha256_text(text) for key, text in configs.items()},
        configs=configs,
        code_revision=code_revision(),
        metrics=candidate.metrics,
        reference_profile=ReferenceProfileEntry(
            file=profile_path.name,  # beside model.onnx: the monitor's drift baseline
            sha256=sha256_file(profile_path),
            rows=profile["rows"],
            version=profile.get("version", 1),
            source=profile.get("source", "training run"),
        ),
        max_batch_size=max_batch_size,
        serving_settings=dict(serving) if serving else None,  # bench tune's, when it chose them
        environment=Environment(
            python=platform.python_version(),
            torch=torch.__version__,
            onnxruntime=__import__("onnxruntime").__version__,
            onnx=__import__("onnx").__version__,
        ),
    )
