"""The local Triton Inference Server: the real ``tritonserver`` binary bundled in nvidia-pytriton (2.51, CPU,
Python backend), started with hardened defaults.

Hardening: every endpoint binds 127.0.0.1; the admin APIs (model repository, logging, trace, shared memory) need
the ``admin-key`` header over HTTP and gRPC; model control is explicit and the server loads exactly the current
release of each pipeline in the repository (the registry is the source of truth); queue policies in the model
configs bound waiting work. 2.51 has no request-size limit flag; production should run a current NGC image.

The admin key is never in tritonserver's argument memory, which ``/proc/PID/cmdline`` shows to every local user:
the flags carry a placeholder, and ``argv_secret.c`` (an LD_PRELOAD library built on first use with the machine's C
compiler, ``argv_secret_library``) hands the real key from the environment to Triton's argv before ``main()``.
tritonserver runs in a session (process group) of its own with its Python-backend stubs; ``TritonServer.reap``
(called by ``stop`` and by the supervisor after any exit) leaves none of the group alive and removes the stubs'
shared-memory regions from /dev/shm.

A broken release never takes the server down. Triton is started with ``--exit-on-error=false`` (by default one
model that fails to load at start aborts the whole server: "error: creating server: ... load failed for model 'p'")
and ``--strict-readiness=false`` (with strict readiness, ``/v2/health/ready`` stays 400 while any model is
unavailable, so one broken pipeline would make every other one look down to clients and to the supervisor).
Triton loads the ``--load-model`` models before it opens its HTTP port, so a 200 from ``/v2/health/ready`` means
the start's loads are over; which of them are served is read from Triton's repository index
(``POST /v2/repository/index``: state and reason per model version) and reported per pipeline as a ``LoadStatus``
(``TritonServer.status``), with Triton's own reason for each one it could not load.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from inferline.core.errors import UserError
from inferline.core.files import atomic_write_json
from inferline.core.secrets import ADMIN_HEADER, admin_key
from inferline.release.registry import Registry, published_pipelines
from inferline.serving.stub_env import USER_PATH, user_path

__all__ = [
    "LoadStatus",
    "ModelState",
    "ServerConfig",
    "ServerError",
    "TritonServer",
    "argv_secret_library",
    "die_with_parent",
    "fix_hint",
    "free_port",
    "group_pids",
    "load_status",
    "published_pipelines",
    "read_state",
    "repository_index",
    "shm_regions",
    "state_path",
]

log = logging.getLogger("inferline.serving")

RESTRICTED = "model-repository,logging,trace,shared-memory"


class ServerError(UserError, RuntimeError):
    pass


SECRET_PLACEHOLDER = "@INFERLINE_ADMIN_KEY@"  # what tritonserver's command line shows where the admin key goes
SECRET_VARIABLE = "INFERLINE_ARGV_SECRET"  # the environment variable argv_secret.c reads the key from
STUB_NAME = "triton_python_backend_stub"
SHM_PREFIX = "triton_python_backend_shm_region_"  # the Python backend's shared-memory regions in /dev/shm


_PRELOAD_SEPARATORS = {" ", ":", "\t", "\n"}


def _private_dir() -> Path:
    """``$TMPDIR/inferline-<uid>``, mode 0700 and owned by this user (refused otherwise: another user could swap
    the library the server preloads)."""
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"inferline-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ServerError(
            f"{folder} is not a private folder of this user's (owner uid {st.st_uid}, mode {oct(st.st_mode & 0o777)}); "
            "expected a directory with mode 0700 owned by you: remove it, or use a --workdir without spaces or colons"
        )
    if set(str(folder)) & _PRELOAD_SEPARATORS:
        raise ServerError(f"the temporary folder {folder} holds a space or a colon; set TMPDIR to one that does not")
    return folder


LIBRARY_VARIABLE = "INFERLINE_ARGV_LIBRARY"  # a prebuilt argv_secret library (images without a compiler)


def _trusted_library(path: Path) -> Path:
    """``path`` as the library to preload: a regular file that only its owner (this user or root) can write."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ServerError(
            f"{LIBRARY_VARIABLE} names {path}, which cannot be read ({exc.strerror}); expected the library built from "
            "serving/argv_secret.c (`gcc -shared -fPIC -O2 -o argv_secret.so serving/argv_secret.c`), or unset it "
            "to build one on first use"
        ) from exc
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o022 or st.st_uid not in (0, os.getuid()):
        raise ServerError(
            f"{LIBRARY_VARIABLE} names {path} (owner uid {st.st_uid}, mode {oct(st.st_mode & 0o777)}); expected a "
            "regular file that only its owner (root or you) can write: tritonserver preloads it with its admin key"
        )
    return path


def argv_secret_library(workdir: Path) -> Path:
    """The LD_PRELOAD library that puts the admin key into tritonserver's argv without it ever being in the
    argument memory ``/proc/PID/cmdline`` shows (``serving/argv_secret.c``), compiled on first use with the
    machine's C compiler (``$CC``, else ``gcc``, else ``cc``) into ``<workdir>/serving/``, named by its source's
    hash; or the prebuilt one named by ``INFERLINE_ARGV_LIBRARY`` (the container image builds it at build
    time: its runtime stage has no compiler). No compiler, or a failed build, is a ``ServerError`` saying what to
    install: the server is not started with its key readable by other users instead."""
    import hashlib
    import shutil

    prebuilt = os.environ.get(LIBRARY_VARIABLE)
    if prebuilt:  # built once where a compiler was (a container image's build stage): never rebuilt here
        return _trusted_library(Path(prebuilt))
    source = Path(__file__).with_name("argv_secret.c")
    code = source.read_bytes()
    name = f"argv_secret-{hashlib.sha256(code).hexdigest()[:12]}.so"
    target = Path(workdir).resolve() / "serving" / name
    if set(str(target)) & _PRELOAD_SEPARATORS:
        # LD_PRELOAD splits on spaces and colons and has no quoting: a work directory holding one would preload
        # fragments (found by a benchmark's workdir). Then the library lives in a private folder of this user's.
        target = _private_dir() / name
    if target.is_file():
        return target
    compilers = [c for c in (os.environ.get("CC"), "gcc", "cc") if c]
    compiler = next((shutil.which(c) for c in compilers if shutil.which(c)), None)
    if compiler is None:
        raise ServerError(
            f"no C compiler found (tried {compilers}); inferline builds {source.name}, a small library that hands "
            "tritonserver its admin key without putting it on the command line other users can read. Install one "
            "(Debian: apt-get install gcc) or set CC to a compiler, then start the server again"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(staged), str(source)], capture_output=True, text=True
    )
    if done.returncode != 0:
        staged.unlink(missing_ok=True)
        raise ServerError(
            f"{compiler} could not build {source} (exit {done.returncode}): {done.stderr.strip()[-800:]}; expected "
            "a shared library for this Linux/glibc machine. Check the compiler works (`gcc --version`), or set CC "
            "to one that does"
        )
    os.replace(staged, target)
    return target


def group_pids(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies, already exited, are not counted)."""
    pids = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                pids.append(pid)
        except (OSError, psutil.Error):  # exited meanwhile
            continue
    return pids


def shm_regions(pids: list[int]) -> set[str]:
    """The Python backend's shared-memory regions (``/dev/shm/triton_python_backend_shm_region_*``) that
    processes ``pids`` map or name on their command line (a stub is started with its region's name)."""
    found: set[str] = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text(errors="replace")
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for line in maps.splitlines():
            name = line.rsplit("/", 1)[-1].removesuffix(" (deleted)")
            if "/dev/shm/" in line and name.startswith(SHM_PREFIX):
                found.add(name)
        found.update(a for a in args if a.startswith(SHM_PREFIX) and "/" not in a)
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """In the child before exec: ask Linux to send SIGTERM when the parent dies (PR_SET_PDEATHSIG), so a server
    owned by a test run or a benchmark never outlives it, even when that process is killed with SIGKILL."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def state_path(workdir: Path) -> Path:
    """Where a running server's record (pid, endpoints, releases) is kept for `serve status|down|predict`."""
    return Path(workdir) / "serving" / "server.json"


def read_state(workdir: Path, fix: str) -> dict[str, Any] | None:
    """The server record in ``workdir`` (None: no server was started from it). A file that is not one is a
    ``UserError`` whose message ends with ``fix``, what the calling command's user should do."""
    path = state_path(workdir)
    if not path.exists():
        return None
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is not a server record (invalid JSON: {exc}); expected the file `inferline serve up` writes: "
            + fix
        ) from exc
    return state


@dataclass(frozen=True)
class ModelState:
    """One row of Triton's repository index (``POST /v2/repository/index``): a model directory, one version of it
    and the state Triton holds it in (``READY``, ``LOADING``, ``UNLOADING``, ``UNAVAILABLE``), with Triton's own
    ``reason`` when it is not ready (the error its load failed with, ``unloaded``, ...). ``version`` and ``state``
    are empty for a directory Triton was never asked to load."""

    name: str
    version: str = ""
    state: str = ""
    reason: str = ""


UnitState = Literal["READY", "LOADING", "UNAVAILABLE"]


@dataclass(frozen=True)
class LoadStatus:
    """Whether one thing the server was asked to load is served: a pipeline (the models of its current release) or,
    for a server started with ``ServerConfig.models``, one model. ``reason`` is empty when ``READY``; else it says
    why not, in Triton's own words for each model that is not ready (or why the release never reached Triton).
    ``release``: the pipeline's release asked for; once READY, the one served (the highest ready version of its
    first model)."""

    name: str
    models: tuple[str, ...]
    state: UnitState
    reason: str = ""
    release: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "state": self.state,
            "models": list(self.models),
            **({"reason": self.reason} if self.reason else {}),
        }


def repository_index(url: str, key: str, timeout_s: float = 10.0) -> list[ModelState]:
    """Triton's repository index at ``url`` (HTTP ``host:port``), an admin API (``key`` is the admin key), read with
    urllib: every model directory, each version Triton was asked to load with its state and reason. A server that
    does not answer, or answers something else, is a ``ServerError``."""
    request = urllib.request.Request(
        f"http://{url}/v2/repository/index", data=b"{}", headers={ADMIN_HEADER: key}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as r:
            rows = json.loads(r.read())
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise ServerError(
            f"tritonserver at {url} did not return its repository index ({type(exc).__name__}: {exc}); expected the "
            "JSON list Triton answers on POST /v2/repository/index: is the server up, and is the admin key its own?"
        ) from exc
    if not isinstance(rows, list):
        raise ServerError(f"tritonserver at {url} answered its repository index with {str(rows)[:200]}, not a list")
    return [
        ModelState(
            name=str(row.get("name", "")),
            version=str(row.get("version", "")),
            state=str(row.get("state", "")),
            reason=str(row.get("reason", "")),
        )
        for row in rows
        if isinstance(row, dict)
    ]


def _model_state(name: str, index: list[ModelState]) -> tuple[UnitState, str]:
    """One model: READY when one of its versions is (a release switch holds two), LOADING while one loads, else
    UNAVAILABLE with Triton's reason for each version."""
    rows = [m for m in index if m.name == name]
    if any(m.state == "READY" for m in rows):
        return "READY", ""
    if any(m.state == "LOADING" for m in rows):
        return "LOADING", ""
    why = [(f"version {m.version}: " if m.version else "") + (m.reason or m.state) for m in rows if m.state or m.reason]
    if not why:
        why = [
            "not loaded, and Triton's repository index gives no reason (is there a model directory of that name "
            "with a config.pbtxt? The server log has Triton's error)"
        ]
    return "UNAVAILABLE", f"model {name!r} " + "; ".join(why)


def load_status(
    index: list[ModelState],
    plan: dict[str, list[str]],
    releases: dict[str, int] | None = None,
    refused: dict[str, str] | None = None,
) -> dict[str, LoadStatus]:
    """``{name: LoadStatus}`` for each entry of ``plan`` (``{pipeline or model: the models that serve it}``) from
    Triton's repository ``index``: READY when all its models are, LOADING while one still loads, else UNAVAILABLE
    with the reasons. ``refused`` (``{name: why}``) were never handed to Triton; ``releases`` names their releases."""
    releases, refused = releases or {}, refused or {}
    out: dict[str, LoadStatus] = {}
    for name, models in plan.items():
        release = releases.get(name)
        if name in refused:
            out[name] = LoadStatus(name, tuple(models), "UNAVAILABLE", refused[name], release)
            continue
        states = [_model_state(m, index) for m in models]
        reasons = [why for state, why in states if state == "UNAVAILABLE"]
        if reasons:
            out[name] = LoadStatus(name, tuple(models), "UNAVAILABLE", "; ".join(reasons), release)
        elif any(state == "LOADING" for state, _ in states):
            out[name] = LoadStatus(name, tuple(models), "LOADING", "", release)
        else:  # the served release: the highest ready version of its first model (fused: <p>; ensemble: <p>_preprocess)
            served = [
                int(m.version) for m in index if m.name == models[0] and m.state == "READY" and m.version.isdigit()
            ]
            out[name] = LoadStatus(name, tuple(models), "READY", "", max(served, default=release))
    return out


def fix_hint(pipeline: str) -> str:
    """What to do about a pipeline whose current release does not load."""
    return (
        f"Fix {pipeline!r}: publish a corrected release (`inferline export publish`), or roll back to the previous "
        f"one (`inferline export rollback --pipeline {pipeline}`), then `inferline serve apply --pipeline {pipeline}`"
        " (or restart the server)."
    )


def _pytriton_dir() -> Path:
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


@dataclass
class ServerConfig:
    repository: Path
    workdir: Path = Path(".inferline")
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    exit_timeout_s: int = 10
    # per-request server timings for the monitor: Triton writes JSON traces (TIMESTAMPS level) into
    # trace_dir/trace.json.<n>, trace_log_frequency traces per file, one request in trace_rate traced
    trace_dir: Path | None = None
    trace_rate: int = 1
    trace_log_frequency: int = 100
    extra_args: list[str] = field(default_factory=list)
    # the model directories to load, in order, for a server that serves no registry (a release's load check);
    # None: the current release of every pipeline published in the repository
    models: list[str] | None = None

    @classmethod
    def on_free_ports(cls, repository: Path, workdir: Path, **options: Any) -> ServerConfig:
        """127.0.0.1 with free HTTP, gRPC and metrics ports: servers side by side (tests, benchmarks)."""
        return cls(
            repository=repository,
            workdir=workdir,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            **options,
        )

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


class TritonServer:
    """Start, wait for, and stop one tritonserver process. Usable as a context manager.

    ``start`` asks Triton to load the plan (``load_plan``: each pipeline's current release, or
    ``ServerConfig.models``); what it could not load stays out of service while the rest is served, and ``status``
    says which is which. A pipeline whose release cannot even be activated (its configs are missing or broken on
    disk) is not handed to Triton and is reported the same way."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None  # tritonserver's process group (a session of its own): it and its stubs
        self.regions: set[str] = set()  # the Python backend's /dev/shm regions seen in that group
        self.admin_key = admin_key(config.workdir)
        self.log_path = Path(config.workdir) / "serving" / f"tritonserver-{config.http_port}.log"
        self.plan: dict[str, list[str]] = {}  # what the last start asked for: {pipeline or model: its models}
        self.releases: dict[str, int] = {}  # the release of each pipeline in the plan
        self.refused: dict[str, str] = {}  # pipelines of the plan never handed to Triton, and why
        self.last_status: dict[str, LoadStatus] = {}  # the latest `status()`

    def _backend_dir(self) -> Path:
        """Symlinks (not copies: the stub finds its bundled libraries relative to its real location)."""
        src = _pytriton_dir()
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        links = {
            "libtriton_python.so": src / "backends" / "python" / "libtriton_python.so",
            "triton_python_backend_utils.py": src / "backends" / "python" / "triton_python_backend_utils.py",
            "triton_python_backend_stub": src / "python_backend_stubs" / py / "triton_python_backend_stub",
        }
        root = Path(self.config.workdir).resolve() / "serving" / "backends"
        (root / "python").mkdir(parents=True, exist_ok=True)
        for name, target in links.items():
            if not target.exists():
                raise ServerError(
                    f"nvidia-pytriton is missing {target}; reinstall it (pip install nvidia-pytriton==0.7.0)"
                )
            link = root / "python" / name
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
            link.unlink(missing_ok=True)
            link.symlink_to(target)
        return root

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        # the stub must load this interpreter's libpython, and find this environment's packages via `python3`
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        env["OMP_NUM_THREADS"] = "1"
        # the stubs' interpreter ignores PYTHONPATH: its entries reach them explicitly (serving.stub_env)
        env[USER_PATH] = user_path(env)
        # the admin key reaches tritonserver's argv through argv_secret.c, never its argument memory (command())
        preload = str(argv_secret_library(self.config.workdir))
        env["LD_PRELOAD"] = os.pathsep.join(p for p in (preload, env.get("LD_PRELOAD", "")) if p)
        env[SECRET_VARIABLE] = self.admin_key
        return env

    def command(self) -> list[str]:
        c = self.config
        repository = Path(c.repository).resolve()
        # a placeholder: argv_secret.c (preloaded, _env) points argv at the real key before main() runs, so
        # /proc/PID/cmdline, which every local user can read, only ever shows the placeholder
        restricted = f"{RESTRICTED}:{ADMIN_HEADER}={SECRET_PLACEHOLDER}"
        cmd = [
            str(_pytriton_dir() / "bin" / "tritonserver"),
            f"--model-repository={repository}",
            f"--backend-directory={self._backend_dir()}",
            f"--http-address={c.host}",
            f"--grpc-address={c.host}",
            f"--metrics-address={c.host}",
            f"--http-port={c.http_port}",
            f"--grpc-port={c.grpc_port}",
            f"--metrics-port={c.metrics_port}",
            "--metrics-config=summary_latencies=true",
            "--model-control-mode=explicit",
            f"--http-restricted-api={restricted}",
            f"--grpc-restricted-protocol={restricted}",
            "--allow-sagemaker=false",
            "--allow-vertex-ai=false",
            "--strict-readiness=false",  # ready = answering, start's loads over (see the module docstring)
            "--exit-on-error=false",  # a model that fails to load leaves the others served
            f"--exit-timeout-secs={c.exit_timeout_s}",
            "--log-verbose=0",
        ]
        if c.trace_dir is not None:
            trace_dir = Path(c.trace_dir).resolve()
            trace_dir.mkdir(parents=True, exist_ok=True)
            cmd += [
                f"--trace-config=triton,file={trace_dir / 'trace.json'}",
                f"--trace-config=triton,log-frequency={c.trace_log_frequency}",
                f"--trace-config=rate={c.trace_rate}",
                "--trace-config=level=TIMESTAMPS",
            ]
        plan = self.plan or self.load_plan()
        for unit, models in plan.items():  # a pipeline of the local target: its fused model only
            if unit not in self.refused:
                cmd += [f"--load-model={name}" for name in models]
        return cmd + list(c.extra_args)

    def load_plan(self) -> dict[str, list[str]]:
        """What a start asks Triton to load, by what it serves: ``{model: [model]}`` for each of
        ``ServerConfig.models``, else ``{pipeline: the models of its current release, in load order}`` for every
        pipeline published in the repository (the registry decides)."""
        if self.config.models is not None:
            return {name: [name] for name in self.config.models}
        repository = Path(self.config.repository)
        releases = self.releases or published_pipelines(repository)
        return {p: Registry(repository, p).served_models(v) for p, v in releases.items()}

    def start(self, wait: bool = True, timeout_s: float = 60.0, detach: bool = False) -> TritonServer:
        """Start the server. By default it dies with this process; ``detach=True`` (``inferline serve up``)
        lets it outlive the command that started it."""
        if self.process is not None and self.process.poll() is None:
            raise ServerError(f"server already running (pid {self.process.pid})")
        self.plan, self.releases, self.refused, self.last_status = {}, {}, {}, {}
        if self.config.models is not None:
            if not self.config.models:
                raise ServerError("ServerConfig.models is empty; name the model directories to load")
        else:
            self._activate_releases()
        self.plan = self.load_plan()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command, env = self.command(), self._env()
        self.regions = set()
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a process group of its own: stop() and reap() end it whole
                preexec_fn=None if detach else die_with_parent,  # one prctl call before exec
            )
        self.pgid = self.process.pid
        if wait:
            self.wait_ready(timeout_s)
        return self

    def _activate_releases(self) -> None:
        """Point each pipeline's model-level configs at its current release (so a restart serves the current
        release). A release that cannot be activated is left out of the start and named in ``refused``; when none
        can be, there is nothing to serve: ``ServerError``."""
        repository = Path(self.config.repository)
        self.releases = published_pipelines(repository)
        if not self.releases:
            raise ServerError(f"no published release in {repository}: run `inferline export publish` first")
        from inferline.release.switch import activate  # here: publish imports torch, a server start needs it once

        for pipeline, version in self.releases.items():
            try:
                activate(repository, pipeline, version)
            except (OSError, UserError) as exc:  # its files on disk: the other pipelines are still served
                self.refused[pipeline] = (
                    f"release {pipeline}:{version} could not be prepared for loading ({type(exc).__name__}: {exc})"
                )
        if len(self.refused) == len(self.releases):
            raise ServerError(
                f"no pipeline of {repository} can be served: {'; '.join(self.refused.values())}; "
                + " ".join(fix_hint(p) for p in self.refused)
            )

    def record(self) -> dict[str, Any]:
        """pid, endpoints, repository, log, the releases it serves and, once known, each pipeline's load status
        (``unavailable``: the pipelines it could not load, with the reason)."""
        if self.process is None:
            raise ServerError("the server has not been started")
        c = self.config
        unavailable = {name: st.reason for name, st in self.last_status.items() if st.state == "UNAVAILABLE"}
        return {
            "pid": self.process.pid,
            "http": c.http_url,
            "grpc": c.grpc_url,
            "metrics": c.metrics_url,
            "repository": str(Path(c.repository).resolve()),
            "log": str(self.log_path.resolve()),
            "admin_key_hidden": True,  # never on the command line (argv_secret.c)
            "trace_dir": str(Path(c.trace_dir).resolve()) if c.trace_dir is not None else None,
            "trace_rate": c.trace_rate if c.trace_dir is not None else None,
            "releases": published_pipelines(Path(c.repository)),
            "pipelines": {name: st.as_dict() for name, st in self.last_status.items()},
            "unavailable": unavailable if self.last_status else dict(self.refused),
        }

    def save_record(self) -> dict[str, Any]:
        """Write ``record()`` atomically to ``state_path(workdir)`` so later commands can find this server."""
        record = self.record()
        atomic_write_json(state_path(self.config.workdir), record)
        return record

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.config.http_url}/v2/health/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def status(self, timeout_s: float = 10.0) -> dict[str, LoadStatus]:
        """Each entry of the plan of the last start, READY, LOADING or UNAVAILABLE (with Triton's reason), read from
        the repository index now; kept in ``last_status`` for ``record``."""
        index = repository_index(self.config.http_url, self.admin_key, timeout_s)
        self.last_status = load_status(index, self.plan or self.load_plan(), self.releases, self.refused)
        self.note_regions()  # the stubs of what loaded (reap() removes their regions even if they die first)
        return self.last_status

    def loads_settled(self) -> bool:
        """The server answers ready (``--strict-readiness=false``: it answers, its start's loads are over) and no
        model of the plan is still loading; ``last_status`` then says what is served."""
        if not self.is_ready():
            return False
        try:
            status = self.status()
        except ServerError:
            return False  # the index is not answering yet: poll again
        return all(st.state != "LOADING" for st in status.values())

    def wait_ready(self, timeout_s: float = 60.0) -> dict[str, LoadStatus]:
        """Wait until the server is ready and its start's loads are settled; their status (a pipeline it could not
        load is UNAVAILABLE with the reason, and the rest is served)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode} before becoming ready; "
                    f"last log lines:\n{self.log_tail()}"
                )
            if self.loads_settled():
                return self.last_status
            time.sleep(0.1)  # polling interval of the readiness check, not a wait for an event
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f}s; last log lines:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def group(self) -> list[int]:
        """The live processes of tritonserver's process group: the server and its Python-backend stubs (and a stub
        that outlived the server: after a crash one survives with parent 1)."""
        return group_pids(self.pgid) if self.pgid is not None else []

    def note_regions(self) -> set[str]:
        """Record the shared-memory regions the group holds now (``reap`` removes them once the group is gone)."""
        self.regions |= shm_regions(self.group())
        return self.regions

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM (Triton drains in-flight requests up to --exit-timeout-secs), then SIGKILL; then ``reap``: the
        whole process group, stubs included, is gone and their shared memory removed when this returns."""
        if self.process is None:
            return None
        self.note_regions()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s if timeout_s is not None else self.config.exit_timeout_s + 5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reap()
        return self.process.returncode

    def reap(self, grace_s: float = 2.0, timeout_s: float = 30.0) -> list[str]:
        """After tritonserver exited (any way: a crash, SIGKILL, a kill for hanging, a stop): give what is left of
        its process group ``grace_s`` to exit by itself (a stub leaves when its parent is gone), SIGKILL the group
        (a stub that outlived a SIGFPE crash ignores SIGTERM), wait until no process of it remains, then remove
        its shared-memory regions from /dev/shm. Returns the regions removed. A group still there after
        ``timeout_s`` (a process stuck in the kernel) is a ``ServerError`` naming its pids."""
        if self.pgid is None:
            return []
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.note_regions()
        deadline = time.monotonic() + grace_s
        while self.group() and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the stubs to exit by themselves
        deadline = time.monotonic() + timeout_s
        while left := self.group():
            self.note_regions()
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                break  # gone between the look and the kill
            if time.monotonic() > deadline:
                raise ServerError(
                    f"tritonserver's process group {self.pgid} still has processes {left} {timeout_s:.0f}s after "
                    "SIGKILL; expected none (a process stuck in the kernel?). Check them with `ps -o pid,stat,wchan "
                    f"-g {self.pgid}`"
                )
            time.sleep(0.05)  # polling for the killed group to be gone
        removed = []
        for name in sorted(self.regions):
            try:
                (Path("/dev/shm") / name).unlink()
                removed.append(name)
            except FileNotFoundError:
                pass  # removed by its owner on a clean exit
            except OSError as exc:
                log.warning("could not remove shared memory /dev/shm/%s of a stopped tritonserver: %s", name, exc)
        self.regions = set()
        return removed

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
