"""The release registry: one JSON file per pipeline beside the model directories.

It records every published release, which one is ``current`` (what Triton serves), which one was ``previous``
(what a rollback returns to), and an audit history. It is the commit point of a publish: version directories are
moved into place first, then the registry and the model-level config.pbtxt files are rewritten atomically. Every
change happens under an exclusive file lock.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from inferline.core.errors import UserError
from inferline.core.files import atomic_write_json, sha256_file
from inferline.features.spec import SPEC_FILE
from inferline.features.state import STATE_FILE
from inferline.release.manifest import MANIFEST_FILE, Manifest

__all__ = [
    "Layout",
    "Registry",
    "RegistryError",
    "choose_published",
    "published_pipelines",
    "registered_pipelines",
]

Layout = Literal["fused", "ensemble"]


def model_names(pipeline: str) -> dict[str, str]:
    """Contract: clients call ``<p>`` (key ``ensemble``). On the gpu target it is an ensemble routing
    ``<p>_preprocess`` -> ``<p>_model``; on the local target it is one fused Python-backend model, and the two inner
    directories only hold the release's artifacts (fitted state; model.onnx and reference profile)."""
    return {"ensemble": pipeline, "preprocess": f"{pipeline}_preprocess", "model": f"{pipeline}_model"}


class RegistryError(UserError, RuntimeError):
    """A model repository, a registry or a release that is not what a command needs: no repository or no published
    pipeline there, several pipelines and none chosen, no current release, an unknown version, an incomplete or
    modified release, no previous release to roll back to."""

    docs = "tutorials/bring-your-own-model.md#6-publish"


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Registry:
    repository: Path
    pipeline: str

    @property
    def path(self) -> Path:
        return Path(self.repository) / f"{self.pipeline}.registry.json"

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"pipeline": self.pipeline, "current": None, "previous": None, "releases": {}, "history": []}
        data: dict[str, Any] = json.loads(self.path.read_text())
        return data

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """Exclusive read-modify-write: yields the registry; it is written back atomically on success."""
        Path(self.repository).mkdir(parents=True, exist_ok=True)
        lock_path = Path(self.repository) / f".{self.pipeline}.registry.lock"
        with open(lock_path, "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                data = self.read()
                yield data
                atomic_write_json(self.path, data)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    @property
    def current(self) -> int | None:
        value = self.read()["current"]
        return int(value) if value is not None else None

    @property
    def previous(self) -> int | None:
        value = self.read()["previous"]
        return int(value) if value is not None else None

    def versions(self) -> list[int]:
        return sorted(int(v) for v in self.read()["releases"])

    def manifest(self, version: int | None = None) -> Manifest:
        """The release manifest of ``version`` (default: current)."""
        v = self.current if version is None else version
        if v is None:
            raise RegistryError(
                f"pipeline {self.pipeline!r} has no current release in {self.repository}; "
                "publish one with `inferline export publish`"
            )
        path = Path(self.repository) / model_names(self.pipeline)["model"] / str(v) / MANIFEST_FILE
        if not path.exists():
            raise RegistryError(f"release {self.pipeline}:{v} has no manifest at {path}; known: {self.versions()}")
        return Manifest.load(path)

    def layout(self, version: int) -> Layout:
        """How release ``version`` is served: ``fused`` (one Python-backend model ``<p>`` whose version N is
        release N: what ``--target local`` publishes) or ``ensemble`` (``<p>`` routing ``<p>_preprocess`` ->
        ``<p>_model``: ``--target gpu``, and local releases published before the fused model). The release's own
        files decide, so a release published by an older inferline keeps being served the way it was published."""
        fused = Path(self.repository) / model_names(self.pipeline)["ensemble"] / str(version) / "release.config.pbtxt"
        return "fused" if fused.is_file() else "ensemble"

    def served_models(self, version: int) -> list[str]:
        """The Triton models that serve release ``version``, in load order (inner models before the ensemble)."""
        names = model_names(self.pipeline)
        if self.layout(version) == "fused":
            return [names["ensemble"]]
        return [names["preprocess"], names["model"], names["ensemble"]]

    def release_files(self, version: int | None = None) -> dict[str, Path]:
        """The files a consumer of release ``version`` (default: current) loads: ``model`` (model.onnx),
        ``feature_state``, ``spec`` (the release's spec snapshot) and ``manifest`` (release.json), each checked to
        exist, all but the manifest byte for byte against the manifest's sha256."""
        v = self.current if version is None else version
        manifest = self.manifest(v)  # raises a clear RegistryError for an unknown version
        names = model_names(self.pipeline)
        files = {
            "model": Path(self.repository) / names["model"] / str(v) / "model.onnx",
            "feature_state": Path(self.repository) / names["preprocess"] / str(v) / STATE_FILE,
            "manifest": Path(self.repository) / names["model"] / str(v) / MANIFEST_FILE,
        }
        spec = Path(self.repository) / names["preprocess"] / str(v) / SPEC_FILE
        if spec.exists() or manifest.spec_sha256 is not None:  # releases published before snapshots have none
            files["spec"] = spec
        missing = [str(p) for p in files.values() if not p.exists()]
        if missing:
            raise RegistryError(
                f"release {self.pipeline}:{v} ({manifest.created_at}) is incomplete, missing {missing}; "
                "republish it with `inferline export publish` or pick another version"
            )
        for key, name in (("onnx_sha256", "model"), ("feature_state_sha256", "feature_state"), ("spec_sha256", "spec")):
            if name not in files:
                continue
            actual = sha256_file(files[name])
            expected = getattr(manifest, key)
            if expected != actual:
                raise RegistryError(
                    f"{files[name]} does not match release {self.pipeline}:{v}'s manifest ({key} "
                    f"{str(expected)[:12]}, file {actual[:12]}); the repository was modified after "
                    "publishing: republish the release"
                )
        return files

    def reference_profile(self, version: int | None = None) -> dict[str, Any]:
        """The drift baseline published with release ``version`` (default: current), checked against its manifest."""
        v = self.current if version is None else version
        entry = self.manifest(v).reference_profile
        path = Path(self.repository) / model_names(self.pipeline)["model"] / str(v) / (entry.file if entry else "")
        if entry is None or not entry.file or not path.is_file():
            raise RegistryError(
                f"release {self.pipeline}:{v} carries no reference profile (published before profiles were kept "
                "beside the model); drift cannot be measured for it: publish a new release"
            )
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise RegistryError(f"{path} does not match release {self.pipeline}:{v}'s manifest; republish the release")
        profile: dict[str, Any] = json.loads(data)
        return profile

    @staticmethod
    def record(data: dict[str, Any], action: str, version: int, by: str | None = None, **extra: Any) -> None:
        """Append to the audit log: when, what, which release, who (``by``, default the OS user) and why."""
        user = by or getpass.getuser()
        data["history"].append({"at": _now(), "action": action, "version": version, "user": user, **extra})

    @staticmethod
    def move_pointer(
        data: dict[str, Any], version: int, action: str, reason: str = "", by: str | None = None, **extra: Any
    ) -> None:
        """Make ``version`` current (the old current becomes previous) and record it; ``extra`` (e.g. the quality
        gate's comparison) goes into the history entry."""
        if str(version) not in data["releases"]:
            raise RegistryError(
                f"release {data['pipeline']}:{version} does not exist; published: "
                f"{sorted(map(int, data['releases']))}: name one of them, or publish a new release with `inferline "
                "export publish`"
            )
        old = data["current"]
        if old == version:
            return
        data["previous"], data["current"] = old, version
        Registry.record(data, action, version, by=by, replaced=old, reason=reason, **extra)


def registered_pipelines(repository: Path) -> list[str]:
    """Every pipeline with a registry (``<pipeline>.registry.json``) in the repository, sorted."""
    return sorted(path.name.removesuffix(".registry.json") for path in Path(repository).glob("*.registry.json"))


def published_pipelines(repository: Path) -> dict[str, int]:
    """``{pipeline: current release}`` for every registry in the repository that has a current release."""
    out = {}
    for pipeline in registered_pipelines(repository):
        current = Registry(Path(repository), pipeline).current
        if current is not None:
            out[pipeline] = current
    return out


def choose_published(repository: Path, given: str | None, flag: str = "--pipeline") -> str:
    """The pipeline a command on a model repository works on: ``given`` (``--pipeline``) if the repository has a
    registry for it, else the repository's only pipeline. A missing repository, an unknown pipeline, an empty
    repository or several pipelines without ``--pipeline`` raise a ``RegistryError`` saying what was found and how to
    fix it, naming ``flag`` (the option that picks a pipeline). The one place every CLI resolves a repository's
    pipeline."""
    repository = Path(repository)
    if not repository.is_dir():
        what = "is not a directory" if repository.exists() else "does not exist"
        raise RegistryError(
            f"model repository {str(repository)!r} {what}; pass the repository releases were published into with "
            "--repository, or publish one with `inferline export publish --repository DIR`"
        )
    known = registered_pipelines(repository)
    if given:
        if given not in known:
            raise RegistryError(
                f"pipeline {given!r} has no registry in {repository} ({given}.registry.json); published pipelines: "
                f"{known or 'none'}: pick one of them with {flag} or publish {given!r} with `inferline export "
                "publish`"
            )
        return given
    if len(known) == 1:
        return known[0]
    if not known:
        raise RegistryError(
            f"{repository} holds no published pipeline (no <pipeline>.registry.json); publish one with `inferline "
            f"export publish --repository {repository}` or pass the right --repository"
        )
    raise RegistryError(f"{repository} holds several pipelines: {known}; choose one with {flag} NAME")
