"""Which published release a batch job scores with, resolved through export's registry and checked byte for byte."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferline.core.errors import UserError
from inferline.core.files import sha256_file
from inferline.release.manifest import Manifest
from inferline.release.registry import Registry, RegistryError

__all__ = ["ModelRefError", "ModelRelease", "parse_model_ref", "resolve_release"]

_REF = re.compile(r"^(?P<pipeline>[a-z][a-z0-9_]*)(?::(?P<version>[1-9][0-9]*))?$")


@dataclass(frozen=True)
class ModelRelease:
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "release": self.name,
            "model": str(self.model_path),
            "model_sha256": self.model_sha256,
            "manifest_sha256": self.manifest_sha256,
        }


class ModelRefError(UserError, ValueError):
    """A ``--model`` that is not PIPELINE or PIPELINE:VERSION."""


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


def resolve_release(ref: str, repository: Path) -> ModelRelease:
    """The release's model and feature state; the registry refuses either when it differs from the manifest."""
    pipeline, version = parse_model_ref(ref)
    registry = Registry(Path(repository), pipeline)
    if version is None:
        version = registry.current
        if version is None:
            raise RegistryError(
                f"pipeline {pipeline!r} has no current release in {repository}; publish one with "
                f"`inferline export publish` or name a version (--model {pipeline}:N)"
            )
    files = registry.release_files(version)  # checked against the manifest byte for byte
    manifest = Manifest.load(files["manifest"])
    return ModelRelease(
        pipeline=pipeline,
        version=version,
        model_path=files["model"],
        state_path=files["feature_state"],
        manifest_path=files["manifest"],
        manifest_sha256=sha256_file(files["manifest"]),
        model_sha256=manifest.onnx_sha256,
    )
