"""A published release as its consumers use it: resolved from a reference (``fraud``, ``fraud:3``) through the
registry, its files checked byte for byte against its manifest, and what it is made of in one call each:
:meth:`Release.spec` (the release's own spec snapshot), :meth:`Release.state` (the fitted feature state),
:meth:`Release.contract` (both compiled: the features, the wire codec and validation that this release serves),
:meth:`Release.manifest`. Batch jobs and the quality gate load a release through it instead of spelling out the file
names and the snapshot + state + compile sequence."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferline.core.errors import UserError
from inferline.core.files import sha256_file
from inferline.features.contract import Contract, compile_contract
from inferline.features.spec import PipelineSpec, spec_beside
from inferline.features.state import FeatureState
from inferline.release.manifest import Manifest
from inferline.release.registry import Registry, RegistryError

__all__ = ["ModelRefError", "Release", "parse_model_ref", "resolve_release"]

_REF = re.compile(r"^(?P<pipeline>[a-z][a-z0-9_]*)(?::(?P<version>[1-9][0-9]*))?$")


@dataclass(frozen=True)
class Release:
    """One published release, its files checked against its manifest when it was resolved."""

    pipeline: str
    version: int
    model_path: Path
    state_path: Path
    manifest_path: Path
    manifest_sha256: str
    model_sha256: str

    @property
    def name(self) -> str:
        return f"{self.pipeline}:{self.version}"

    @classmethod
    def open(cls, repository: Path, pipeline: str, version: int | None = None) -> Release:
        """Release ``version`` of ``pipeline`` in ``repository`` (default: the current one), its files checked
        against its manifest byte for byte (``Registry.release_files``)."""
        registry = Registry(Path(repository), pipeline)
        if version is None:
            version = registry.current
            if version is None:
                raise RegistryError(
                    f"pipeline {pipeline!r} has no current release in {repository}; publish one with "
                    f"`inferline export publish` or name a version (--model {pipeline}:N)"
                )
        files = registry.release_files(version)
        return cls(
            pipeline=pipeline,
            version=version,
            model_path=files["model"],
            state_path=files["feature_state"],
            manifest_path=files["manifest"],
            manifest_sha256=sha256_file(files["manifest"]),
            model_sha256=Manifest.load(files["manifest"]).onnx_sha256,
        )

    def spec(self) -> PipelineSpec:
        """The release's spec snapshot (``spec.json`` beside its feature state); a release published before snapshots
        existed has none, and gets the live pipeline module's (``spec_beside``)."""
        return spec_beside(self.state_path, self.pipeline)

    def state(self) -> FeatureState:
        """The fitted feature state the release was published with."""
        return FeatureState.load(self.state_path)

    def contract(self) -> Contract:
        """The release's compiled contract: its spec snapshot and fitted state, the state checked against the spec
        first (a state fitted for other features is refused with the reason)."""
        spec, state = self.spec(), self.state()
        state.check(spec)
        return compile_contract(spec, state)

    def manifest(self) -> Manifest:
        """The release's manifest (``release.json``), as published."""
        return Manifest.load(self.manifest_path)

    def as_dict(self) -> dict[str, Any]:
        return {
            "release": self.name,
            "model": str(self.model_path),
            "model_sha256": self.model_sha256,
            "manifest_sha256": self.manifest_sha256,
        }


class ModelRefError(UserError, ValueError):
    """A ``--model`` that is not PIPELINE or PIPELINE:VERSION."""

    docs = "reference/cli.md#inferline-batch-run"


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """``fraud`` (the current release) or ``fraud:3`` (release 3)."""
    m = _REF.match(ref.strip())
    if m is None:
        raise ModelRefError(
            f"--model {ref!r} is not a release reference; expected PIPELINE or PIPELINE:VERSION, e.g. 'fraud' "
            "(the current release) or 'fraud:2'"
        )
    version = m.group("version")
    return m.group("pipeline"), int(version) if version else None


def resolve_release(ref: str, repository: Path) -> Release:
    """The release ``ref`` names (its pipeline's current one without a version); the registry refuses one whose files
    differ from its manifest."""
    pipeline, version = parse_model_ref(ref)
    return Release.open(repository, pipeline, version)
