"""A release's manifest (``release.json``, identical in each of its version directories) as a typed record.

The manifest is the release's lineage and its integrity record: where the model came from (a training run, a
user's module, an ONNX file, an earlier release), the sha256 of every file a consumer loads (checked by
``Registry.release_files``), the parity and quality gates' verdicts, the served configs and the environment that
published it. ``Manifest`` is written by ``export.publish`` and read by every consumer of a release (registry,
resolution, batch, monitor, benchmarks).

The JSON on disk is the contract: ``to_dict`` writes the keys publish always wrote, with the same names and
nesting, and ``from_dict`` reads releases published by older inferline versions, which lack keys added since
(every such field is optional here) or carry keys this version no longer writes (kept in ``extra``, written back).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from inferline.core.files import atomic_write_json

__all__ = ["MANIFEST_FILE", "CodeRevision", "Environment", "LabelledSet", "Manifest", "ReferenceProfileEntry"]

MANIFEST_FILE = "release.json"

# what a release made from another one (``export.candidate.release_candidate``) carries over: where its model came from
LINEAGE_KEYS = (
    "source",
    "run_id",
    "data_fingerprint",
    "data_files",
    "checkpoint_sha256",
    "model",
    "onnx_source_sha256",
)


@dataclass(frozen=True)
class CodeRevision:
    """The inferline checkout that published the release: its git commit, and whether tracked files had changes
    (``commit`` ``"unknown"`` and ``dirty`` None outside a git checkout)."""

    commit: str = "unknown"
    dirty: bool | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CodeRevision:
        return cls(commit=str(data.get("commit", "unknown")), dirty=data.get("dirty"))


@dataclass(frozen=True)
class ReferenceProfileEntry:
    """The release's drift baseline (the monitor's reference), a file beside ``model.onnx``: its name, sha256 (the
    registry refuses a changed file), how many rows it summarises, its format version and what it was made from
    (a training run's holdout, data, or examples drawn from the spec)."""

    file: str
    sha256: str
    rows: int | None = None
    version: int = 1
    source: str = "training run"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceProfileEntry:
        return cls(
            file=str(data.get("file", "")),
            sha256=str(data.get("sha256", "")),
            rows=data.get("rows"),
            version=int(data.get("version", 1)),
            source=str(data.get("source", "training run")),
        )


@dataclass(frozen=True)
class LabelledSet:
    """A labelled set kept beside ``model.onnx`` (``holdout`` or ``golden``), on which the quality gate scores this
    release when a later one is published or promoted."""

    file: str
    sha256: str
    rows: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelledSet:
        return cls(file=str(data["file"]), sha256=str(data["sha256"]), rows=int(data["rows"]))


@dataclass(frozen=True)
class Environment:
    """The versions of the software that exported and gated the model (None: not recorded)."""

    python: str | None = None
    torch: str | None = None
    onnxruntime: str | None = None
    onnx: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Environment:
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


@dataclass
class Manifest:
    """One release's manifest. The four required fields have been in every manifest inferline wrote; the others
    default to "not recorded" (None, or an empty collection) for releases published before they existed.

    What the release is:

    - ``release``: its number N, the version directory ``N`` of each of its model directories.
    - ``pipeline``: the pipeline's name (the spec's ``name``), which callers call.
    - ``task``: ``"binary"``, ``"multiclass"`` or ``"regression"`` (the spec's).
    - ``models``: its model directories by role: ``ensemble`` (the served name, the pipeline's), ``preprocess``
      (``<pipeline>_preprocess``: feature state and spec snapshot) and ``model`` (``<pipeline>_model``: the ONNX
      model, the reference profile, the labelled sets).
    - ``target``: ``"local"`` (the bundled CPU server) or ``"gpu"`` (NVIDIA's Triton image).
    - ``layout``: ``"fused"`` (one Python-backend model; the local target) or ``"ensemble"`` (preprocess, then
      the native ONNX model; the gpu target).
    - ``created_at``: when it was published, ISO 8601 in UTC.

    Where its model came from (a release made from another one by ``inferline bench tune --publish`` copies these):

    - ``source``: ``"training run"``, ``"module"`` (``export publish --module``) or ``"onnx file"``
      (``export publish --onnx``).
    - ``run_id``: the training run's directory name, or None.
    - ``data_fingerprint``: sha256 over the files the model was trained (or the features fitted) on.
    - ``data_files``: those files, each ``{file, sha256, bytes}``.
    - ``checkpoint_sha256``: the PyTorch weights exported (the run's checkpoint, or ``--checkpoint``).
    - ``model``: the model factory (``factory``), the sha256 of its source file (``source_sha256``), its arguments
      (``args``) and the input layout it was built for (``layout``: a ``ModelLayout``).
    - ``onnx_source_sha256``: an ONNX file given with ``--onnx``, before inferline's head was attached.
    - ``derived_from``: the release whose model this one serves again with other serving settings, or None.

    The contract, and the files a consumer checks byte for byte before it loads them (``Registry.release_files``:
    a file that differs is refused, and a rollback to it too):

    - ``schema_version``: the spec's ``version``.
    - ``feature_hash``: ``PipelineSpec.feature_hash()``: columns, rules and features (a change of one of them is a
      new contract).
    - ``spec_sha256``: ``<pipeline>_preprocess/N/spec.json``, the spec snapshot the release is served with.
    - ``feature_state_sha256``: ``<pipeline>_preprocess/N/feature_state.json`` (vocabularies, standardization
      statistics, decision threshold).
    - ``onnx_sha256``: ``<pipeline>_model/N/model.onnx``.

    The gates' verdicts:

    - ``parity``: the parity gate (``ParityReport``): onnxruntime against PyTorch on the holdout and at batch
      sizes 1, 7 and ``max_batch_size``.
    - ``quality``: the quality gate (``QualityReport``): this release against the one that was current.
    - ``quality_sets``: the labelled sets kept beside ``model.onnx`` (``holdout``, ``golden``), each
      ``{file, sha256, rows}``, on which a later release is compared with this one.
    - ``metrics``: the training run's holdout metrics, for example ``roc_auc``, ``pr_auc``, ``precision``, ``recall``,
      ``threshold`` (binary); ``accuracy``, ``macro_f1``, ``per_class``, ``confusion_matrix`` (multi-class);
      ``mae``, ``rmse``, ``r2`` (regression); each with the holdout's ``rows``.

    How it is served:

    - ``configs``: the Triton ``config.pbtxt`` texts the server loads: ``fused``, or ``ensemble``, ``preprocess``
      and ``model``.
    - ``config_sha256``: the sha256 of each of those texts.
    - ``max_batch_size``: the most rows in one request or one batch (the spec's ``ModelParams.max_batch_size``,
      unless publish was given another).
    - ``serving_settings``: the instances, queue delay and preferred batch sizes ``inferline bench tune`` chose,
      or None.
    - ``reference_profile``: the monitor's drift baseline (``ReferenceProfileEntry``), a file beside
      ``model.onnx``.

    Who published it:

    - ``code_revision``: the inferline checkout (``CodeRevision``).
    - ``environment``: the Python, torch, onnxruntime and onnx versions (``Environment``).

    Keys this inferline version does not know (written by another one) are kept in ``extra`` and written back.
    """

    release: int
    pipeline: str
    onnx_sha256: str
    feature_state_sha256: str
    task: str | None = None
    models: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    layout: str | None = None
    created_at: str | None = None
    source: str | None = None
    run_id: str | None = None
    data_fingerprint: str | None = None
    data_files: list[dict[str, Any]] = field(default_factory=list)
    schema_version: int | None = None
    feature_hash: str | None = None
    spec_sha256: str | None = None
    checkpoint_sha256: str | None = None
    model: dict[str, Any] | None = None
    onnx_source_sha256: str | None = None
    derived_from: int | None = None
    parity: dict[str, Any] = field(default_factory=dict)  # export.parity.ParityReport.as_dict()
    quality: dict[str, Any] | None = None  # export.quality.QualityReport.as_dict()
    quality_sets: dict[str, LabelledSet] = field(default_factory=dict)
    config_sha256: dict[str, str] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)
    code_revision: CodeRevision | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    reference_profile: ReferenceProfileEntry | None = None
    max_batch_size: int | None = None
    serving_settings: dict[str, Any] | None = None
    environment: Environment | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    def lineage(self) -> dict[str, Any]:
        """Where the release's model came from (``LINEAGE_KEYS``), as a candidate made from it records it."""
        return {key: getattr(self, key) for key in LINEAGE_KEYS}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``release.json`` (nested records as objects, ``extra`` merged back)."""
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name == "quality_sets":
                value = {name: _record(entry) for name, entry in value.items()}
            elif f.name in ("code_revision", "reference_profile", "environment") and value is not None:
                value = _record(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """A manifest from its JSON form, of this inferline version or an older one (missing keys: not recorded)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        values["release"] = int(data["release"])
        for key in ("models", "parity", "config_sha256", "configs", "metrics"):
            values[key] = values.get(key) or {}
        values["data_files"] = values.get("data_files") or []
        values["quality_sets"] = {k: LabelledSet.from_dict(v) for k, v in (data.get("quality_sets") or {}).items()}
        for key, kind in (
            ("code_revision", CodeRevision),
            ("reference_profile", ReferenceProfileEntry),
            ("environment", Environment),
        ):
            raw = data.get(key)
            values[key] = kind.from_dict(raw) if raw else None
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read ``path`` (a release's ``release.json``)."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def write(self, path: Path) -> None:
        """Write ``path`` atomically (``core.files.atomic_write_json``: sorted keys, indented)."""
        atomic_write_json(Path(path), self.to_dict())


def _record(value: Any) -> dict[str, Any]:
    """A nested record's JSON object, its fields in declaration order."""
    return {f.name: getattr(value, f.name) for f in fields(value)}
