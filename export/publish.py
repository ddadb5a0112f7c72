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
import logging
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inferline.core.errors import UserError
from inferline.core.files import atomic_write_json, sha256_file
from inferline.export.candidate import Candidate, profile_of, run_candidate
from inferline.export.config import Target, pipeline_configs
from inferline.export.onnx_export import export_onnx
from inferline.export.outputs import check_outputs
from inferline.export.parity import ATOL, RTOL, ParityGateFailed, ParityReport, batch_invariance_gate, run_parity_gate
from inferline.export.quality import QualityReport, ReleaseModel, quality_gate
from inferline.export.safety import MAX_MODEL_BYTES, check_onnx_file
from inferline.export.stage import (
    backend_source,
    check_loads,
    next_version,
    release_manifest,
    stage_labelled_sets,
    undo_publish,
    validate_staged,
    write_configs,
)
from inferline.features.spec import SPEC_FILE, write_spec
from inferline.features.state import STATE_FILE
from inferline.release.manifest import MANIFEST_FILE, Manifest
from inferline.release.registry import Registry, model_names
from inferline.release.switch import activate

__all__ = ["HEADLINE", "PublishFailed", "PublishResult", "publish"]

log = logging.getLogger("inferline.export")


@dataclass
class PublishResult:
    """What a publish did: the release's version, whether it became current, its manifest and the gates' reports
    (``quality`` None when no quality gate ran)."""

    version: int
    promoted: bool
    manifest: Manifest
    parity: ParityReport
    quality: QualityReport | None = None


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
        candidate = run_candidate(Path(run_dir), onnx_model)
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
        quality_sets, labelled = stage_labelled_sets(candidate, stage / names["model"])

        state.save(stage / names["preprocess"] / STATE_FILE)
        write_spec(spec, stage / names["preprocess"] / SPEC_FILE)  # the release carries its own contract
        if target == "local":
            shutil.copyfile(backend_source("fused.py"), stage / names["ensemble"] / "model.py")
        else:
            shutil.copyfile(backend_source("preprocess.py"), stage / names["preprocess"] / "model.py")
        profile_path = stage / names["model"] / "reference_profile.json"
        if candidate.profile_file is not None:
            shutil.copyfile(candidate.profile_file, profile_path)
        else:
            atomic_write_json(profile_path, profile_of(candidate, onnx_path))

        with registry.locked() as reg:
            version = next_version(repository, names, registry)
            current = reg["current"]
            quality = quality_gate(
                repository,
                spec.name,
                ReleaseModel(f"release {version}", spec, state, onnx_path),
                None if current is None else int(current),
                labelled,
                {e.sha256 for e in quality_sets.values()},
                quality_tolerance,
                accept_worse,
                promote if refuse_worse is None else refuse_worse,
                f"Nothing was published; release {current} stays current.",
            )
            log.info("%s", quality.summary())
            configs = pipeline_configs(spec, state, version, target, mbs, tensorrt=tensorrt, serving=serving)
            texts = write_configs(stage, names, configs)
            lineage = candidate.lineage
            manifest = release_manifest(
                candidate,
                version,
                target,
                stage,
                names,
                parity=parity,
                quality=quality,
                quality_sets=quality_sets,
                configs=texts,
                max_batch_size=mbs,
                serving=serving,
            )
            for key in folders:
                manifest.write(stage / names[key] / MANIFEST_FILE)
            validate_staged(stage, names, candidate.feeds)
            if load_check:
                check_loads(stage, names, folders, target, version)

            for key in folders:
                (repository / names[key]).mkdir(parents=True, exist_ok=True)
                (stage / names[key]).rename(repository / names[key] / str(version))
                moved.append(repository / names[key] / str(version))
            reg["releases"][str(version)] = {
                "published_at": manifest.created_at,
                "manifest_sha256": sha256_file(repository / names["model"] / str(version) / MANIFEST_FILE),
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
        undo_publish(moved, saved)
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


HEADLINE = ("roc_auc", "pr_auc", "precision", "recall", "accuracy", "macro_f1", "mae", "rmse", "r2")


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The registry's summary of a release's holdout metrics (those of its task)."""
    return {k: metrics[k] for k in HEADLINE if k in metrics}
