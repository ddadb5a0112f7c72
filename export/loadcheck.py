"""Does a staged release load in a real tritonserver? Checked in a scratch server before the release is promoted.

``check_release_loads`` answers with Triton's own verdict, not a reimplementation of its config checks:

1. the given model directories (each a Triton model directory: ``config.pbtxt`` and version directories) are
   symlinked into a new temporary model repository, under the given names; nothing is copied, so a large
   ``model.onnx`` costs nothing, and a Python-backend model finds the directories beside it as it will in the real
   repository (the fused model reads ``<p>_preprocess/N`` and ``<p>_model/N``: pass them too, as data);
2. the bundled tritonserver (the 2.51 binary of nvidia-pytriton, started through ``serving.server.TritonServer``:
   the same binary, backend directory, environment and hardening as ``inferline serve up``) starts on free
   127.0.0.1 ports with explicit model control and ``--load-model`` for each model to load; it finishes those loads
   before it opens its HTTP port, and keeps running when one fails (``--exit-on-error=false``);
3. once it answers ready, each model's state and reason are read from Triton's repository index
   (``POST /v2/repository/index``): every model READY passes and returns a ``LoadCheckReport``; any other state
   raises ``ReleaseUnloadable`` with Triton's reason for each model that failed;
4. whatever happened, the server is stopped (SIGTERM; its Python-backend stubs exit with it, a straggler is killed
   by its pid) and the temporary directory is removed.

Cost, measured on the development machine (2 cores, tritonserver 2.51, one check at a time, 4 runs): a fused
Python-backend release of the ``fraud`` pipeline from the published test repository takes about 6.5 s in all
(6.3-6.5 s warm, 7.5 s for the first, cold one): about 3.5 s until the model is READY (the Python stub starts,
imports inferline and onnxruntime, compiles the contract, opens the ONNX session) and about 3 s to stop (Triton
polls its unloads once a second). A release whose config Triton refuses (an output with ``dims: [ 0 ]``) fails in
about 4 s: no stub starts and nothing needs unloading.

Only what the bundled server can load is checked here: the local target (Python backend). A ``--target gpu``
release needs NVIDIA's image (the native onnxruntime backend) and fails here with Triton's reason "unable to find
backend library for backend 'onnxruntime'".
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferline.core.errors import PathNotFound, UserError
from inferline.serving.server import ServerConfig, TritonServer
from inferline.serving.triton_index import LoadStatus, ServerError, repository_index

__all__ = ["LoadCheckReport", "ReleaseUnloadable", "ScratchStartFailed", "check_release_loads", "start_scratch_server"]


class ReleaseUnloadable(UserError, ValueError):
    """The release did not load in a scratch tritonserver. ``failures`` maps each model that did not reach READY to
    Triton's own reason from its repository index (``version N: <reason>``; empty when the server itself did not
    come up with the release); ``log_tail`` is the end of the server's log."""

    docs = "tutorials/bring-your-own-model.md#where-your-modules-must-be-importable"

    def __init__(self, message: str, failures: Mapping[str, str] | None = None, log_tail: str = "") -> None:
        super().__init__(message)
        self.failures = dict(failures or {})
        self.log_tail = log_tail


@dataclass(frozen=True)
class LoadCheckReport:
    """A release that loaded: the READY versions of each model loaded, and how long the check took."""

    loaded: dict[str, list[int]]  # model -> its READY versions
    seconds: float  # the whole check: start, loads, readiness, stop and clean-up
    ready_s: float  # from starting the server to every model READY


def _checked(models: Mapping[str, Path], load: Sequence[str] | None) -> tuple[dict[str, Path], list[str]]:
    """The model directories by name, and the names to load, in order: refused with a ``UserError`` that says
    what was given and what is expected."""
    if not models:
        raise UserError(
            "check_release_loads got no model directories; expected {model name: Triton model directory} with at "
            "least one directory holding a config.pbtxt"
        )
    dirs: dict[str, Path] = {}
    for name, path in models.items():
        if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
            raise UserError(
                f"model name {name!r} is not a plain directory name; expected the name Triton serves it under "
                "(letters, digits, '_', '-', '.'; no '/', not starting with '.')"
            )
        path = Path(path)
        if not path.is_dir():
            raise PathNotFound(
                f"model directory {str(path)!r} for model {name!r} "
                f"{'is not a directory' if path.exists() else 'does not exist'}; expected a Triton model "
                "directory (config.pbtxt and numbered version directories)"
            )
        dirs[name] = path.resolve()
    if load is None:
        to_load = [name for name, path in dirs.items() if (path / "config.pbtxt").is_file()]
        if not to_load:
            raise ReleaseUnloadable(
                f"none of the model directories {sorted(dirs)} holds a config.pbtxt, so Triton has nothing to load; "
                "write each served model's config.pbtxt into its directory (the others are only data beside it)"
            )
        return dirs, to_load
    unknown = [name for name in load if name not in dirs]
    if unknown or not load:
        raise UserError(
            f"load={list(load)!r} names {unknown or 'no model'}; expected one or more of the given models "
            f"{sorted(dirs)}, or load=None for every one with a config.pbtxt"
        )
    return dirs, list(load)


PORT_ATTEMPTS = 3  # starts of the scratch server when a port it was given is taken before it binds it


class ScratchStartFailed(ServerError):
    """A scratch tritonserver that did not become ready (for another reason than a port taken under it); it has
    been stopped, and ``log_tail`` is the end of its log."""

    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.log_tail = log_tail


def start_scratch_server(
    repository: Path, workdir: Path, models: Sequence[str], timeout_s: float = 60.0, **options: Any
) -> tuple[TritonServer, dict[str, LoadStatus]]:
    """A tritonserver of the caller's own on free loopback ports (``workdir/work<attempt>``), loading ``models``,
    and their load status once it is ready. A port picked free can be taken before Triton binds it (by an outgoing
    connection's ephemeral port, say): then it is started again on new ports, up to ``PORT_ATTEMPTS`` times. Any
    other failure raises ``ScratchStartFailed``. The caller stops the server it gets."""
    for attempt in range(PORT_ATTEMPTS):
        config = ServerConfig.on_free_ports(repository, workdir / f"work{attempt}", models=list(models), **options)
        server = TritonServer(config)
        server.start(wait=False)
        try:
            return server, server.wait_ready(timeout_s)
        except ServerError as exc:
            tail = server.log_tail()
            server.stop()
            if "already in use" in tail and attempt + 1 < PORT_ATTEMPTS:
                continue
            raise ScratchStartFailed(str(exc), tail) from exc
    raise AssertionError("unreachable: the last attempt returns or raises")


def check_release_loads(
    models: Mapping[str, Path], timeout_s: float = 60.0, load: Sequence[str] | None = None
) -> LoadCheckReport:
    """Load ``models`` (``{name: Triton model directory}``) in a scratch tritonserver and return what loaded, or
    raise ``ReleaseUnloadable`` with Triton's reason for each model that did not (see the module docstring).

    ``load`` names the models to load, in order; by default every given directory that holds a ``config.pbtxt``.
    The others are only placed beside them, as data (a fused model's ``<p>_preprocess`` and ``<p>_model``).
    ``timeout_s`` bounds the start and the loads; a release still loading then is unloadable too. A bad argument
    is a ``UserError``; a tritonserver that cannot be started at all (nvidia-pytriton missing) a ``ServerError``.
    About 6.5 s for one fused Python-backend release on 2 cores (measured; see the module docstring)."""
    started = time.monotonic()
    dirs, to_load = _checked(models, load)
    scratch = Path(tempfile.mkdtemp(prefix="inferline-loadcheck-"))
    server: TritonServer | None = None
    try:
        repository = scratch / "models"
        repository.mkdir()
        for name, path in dirs.items():
            (repository / name).symlink_to(path, target_is_directory=True)
        try:
            server, status = start_scratch_server(repository, scratch, to_load, timeout_s, exit_timeout_s=5)
        except ScratchStartFailed as exc:
            raise ReleaseUnloadable(
                f"the release {to_load} did not load in a scratch tritonserver within {timeout_s:.0f} s: {exc}. "
                "Expected every model READY; a model whose initialize() hangs or kills the server does this: fix "
                "it and stage the release again",
                log_tail=exc.log_tail,
            ) from exc
        index = repository_index(server.config.http_url, server.admin_key)
        failures = {
            name: "; ".join(
                (f"version {m.version}: " if m.version else "") + (m.reason or m.state)
                for m in index
                if m.name == name and m.state != "READY" and (m.state or m.reason)
            )
            or st.reason
            for name, st in status.items()
            if st.state != "READY"
        }
        if failures:
            raise ReleaseUnloadable(
                "the release does not load in tritonserver: "
                + "; ".join(f"model {name!r} {why.rstrip('.')}" for name, why in failures.items())
                + f". Expected every model of {to_load} READY; fix what Triton names (the model's config.pbtxt, or "
                "the files of its version directory) and stage the release again; do not promote this one",
                failures=failures,
                log_tail=server.log_tail(),
            )
        loaded = {
            name: sorted(int(m.version) for m in index if m.name == name and m.state == "READY" and m.version.isdigit())
            for name in to_load
        }
        ready_s = time.monotonic() - started
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return LoadCheckReport(loaded=loaded, seconds=time.monotonic() - started, ready_s=ready_s)
