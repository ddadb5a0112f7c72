"""The local Triton Inference Server: the real ``tritonserver`` binary bundled in nvidia-pytriton (2.51, CPU,
Python backend), started with hardened defaults.

Hardening: every endpoint binds 127.0.0.1; the admin APIs (model repository, logging, trace, shared memory) need
the ``admin-key`` header over HTTP and gRPC; model control is explicit and the server loads exactly the current
release of each pipeline in the repository (the registry is the source of truth); queue policies in the model
configs bound waiting work. 2.51 has no request-size limit flag; production should run a current NGC image.

The admin key is never in tritonserver's argument memory, which ``/proc/PID/cmdline`` shows to every local user:
the flags carry a placeholder, and ``argv_secret.c`` (an LD_PRELOAD library built on first use with the machine's C
compiler, ``serving.argv_secret``) hands the real key from the environment to Triton's argv before ``main()``.
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
(``TritonServer.status``; the index and the server record are read in ``serving.server_state``), with Triton's own
reason for each one it could not load.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferline.core.errors import UserError
from inferline.core.files import atomic_write_json
from inferline.core.http import answers_ok
from inferline.core.processes import (
    NotReady,
    die_with_parent,
    end_group,
    free_port,
    group_pids,
    stop_process,
    wait_until_ready,
)
from inferline.core.secrets import ADMIN_HEADER, admin_key
from inferline.release.registry import Registry, published_pipelines
from inferline.serving.argv_secret import SECRET_PLACEHOLDER, SECRET_VARIABLE, argv_secret_library
from inferline.serving.stub_env import USER_PATH, user_path
from inferline.serving.triton_index import (
    LoadStatus,
    ServerError,
    fix_hint,
    load_status,
    repository_index,
)

__all__ = ["NoServer", "ServerConfig", "TritonServer", "read_state", "shm_regions", "state_path"]

log = logging.getLogger("inferline.serving")

RESTRICTED = "model-repository,logging,trace,shared-memory"


STUB_NAME = "triton_python_backend_stub"
SHM_PREFIX = "triton_python_backend_shm_region_"  # the Python backend's shared-memory regions in /dev/shm


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


def state_path(workdir: Path) -> Path:
    """Where a running server's record (pid, endpoints, releases) is kept for `serve status|down|predict`."""
    return Path(workdir) / "serving" / "server.json"


class NoServer(UserError):
    """A command needs a running server and finds none: no server record in its ``--workdir`` (no
    ``inferline serve up`` was run with that work directory), and no address given with ``--url``."""

    docs = "tutorials/bring-your-own-model.md#7-serve"


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
            _end_rollout(repository, pipeline)
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
        return answers_ok(f"http://{self.config.http_url}/v2/health/ready", timeout_s=2)

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
        try:
            wait_until_ready(self.loads_settled, timeout_s, "tritonserver", process=self.process)
        except NotReady as exc:
            raise ServerError(f"{exc}; last log lines:\n{self.log_tail()}") from None
        return self.last_status

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
        stop_process(self.process, timeout_s if timeout_s is not None else self.config.exit_timeout_s + 5)
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
        left = end_group(self.pgid, grace_s, timeout_s, on_poll=lambda _: self.note_regions())
        if left:
            raise ServerError(
                f"tritonserver's process group {self.pgid} still has processes {left} {timeout_s:.0f}s after "
                "SIGKILL; expected none (a process stuck in the kernel?). Check them with `ps -o pid,stat,wchan "
                f"-g {self.pgid}`"
            )
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


def _end_rollout(repository: Path, pipeline: str) -> None:
    """A server (re)started while ``pipeline`` is rolled out serves the current release alone: a crash or hang during
    a rollout may be the candidate's doing, and a start loads the current release only. The rollout turns to
    ``rolling_back`` (the edge routes every request to the current release); the monitor finishes it with an audit
    entry and an alert (``monitor.rollout``)."""
    from inferline.release.rollout import RolloutError, read_rollout, write_rollout

    try:
        rollout = read_rollout(repository, pipeline)
    except (OSError, RolloutError):
        return
    if rollout is None or not rollout.routed or rollout.phase == "rolling_back":
        return
    rollout.reason = (
        f"the model server was (re)started during the rollout ({rollout.phase}, step {rollout.step}): the current "
        "release serves alone"
    )
    rollout.phase, rollout.outcome, rollout.decided_at = "rolling_back", "rolled_back", time.time()
    write_rollout(repository, rollout)
