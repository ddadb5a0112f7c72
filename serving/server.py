"""The local Triton Inference Server: the real ``tritonserver`` binary bundled in nvidia-pytriton (2.51, CPU,
Python backend), started with hardened defaults.

Hardening: every endpoint binds 127.0.0.1; the admin APIs (model repository, logging, trace, shared memory) need
the ``admin-key`` header over HTTP and gRPC; model control is explicit and the server loads exactly the current
release of each pipeline in the repository (the registry is the source of truth); queue policies in the model
configs bound waiting work. 2.51 has no request-size limit flag; production should run a current NGC image.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferline.export.registry import Registry, published_pipelines
from inferline.features.artifacts import atomic_write_json
from inferline.features.errors import UserError
from inferline.serving.secrets import ADMIN_HEADER, admin_key

__all__ = [
    "ServerConfig",
    "ServerError",
    "TritonServer",
    "die_with_parent",
    "free_port",
    "published_pipelines",
    "read_state",
    "state_path",
]

RESTRICTED = "model-repository,logging,trace,shared-memory"


class ServerError(UserError, RuntimeError):
    pass


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
    """Start, wait for, and stop one tritonserver process. Usable as a context manager."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.admin_key = admin_key(config.workdir)
        self.log_path = Path(config.workdir) / "serving" / f"tritonserver-{config.http_port}.log"

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
        return env

    def command(self) -> list[str]:
        c = self.config
        repository = Path(c.repository).resolve()
        restricted = f"{RESTRICTED}:{ADMIN_HEADER}={self.admin_key}"
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
            "--strict-readiness=true",
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
        for pipeline, version in published_pipelines(repository).items():  # local: the fused model only
            cmd += [f"--load-model={name}" for name in Registry(repository, pipeline).served_models(version)]
        return cmd + list(c.extra_args)

    def start(self, wait: bool = True, timeout_s: float = 60.0, detach: bool = False) -> TritonServer:
        """Start the server. By default it dies with this process; ``detach=True`` (``inferline serve up``)
        lets it outlive the command that started it."""
        if self.process is not None and self.process.poll() is None:
            raise ServerError(f"server already running (pid {self.process.pid})")
        repository = Path(self.config.repository)
        pipelines = published_pipelines(repository)
        if not pipelines:
            raise ServerError(f"no published release in {repository}: run `inferline export publish` first")
        from inferline.export.publish import activate  # here: publish imports torch, a server start needs it once

        for pipeline, version in pipelines.items():  # configs on disk follow the registry (restart = current release)
            activate(repository, pipeline, version)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env(),
            start_new_session=True,
            preexec_fn=None if detach else die_with_parent,  # one prctl call before exec
        )
        log.close()
        if wait:
            self.wait_ready(timeout_s)
        return self

    def record(self) -> dict[str, Any]:
        """pid, endpoints, repository, log and the releases it serves."""
        if self.process is None:
            raise ServerError("the server has not been started")
        c = self.config
        return {
            "pid": self.process.pid,
            "http": c.http_url,
            "grpc": c.grpc_url,
            "metrics": c.metrics_url,
            "repository": str(Path(c.repository).resolve()),
            "log": str(self.log_path.resolve()),
            "trace_dir": str(Path(c.trace_dir).resolve()) if c.trace_dir is not None else None,
            "releases": published_pipelines(Path(c.repository)),
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

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode} before becoming ready; "
                    f"last log lines:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.1)  # polling interval of the readiness check, not a wait for an event
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f}s; last log lines:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM (Triton drains in-flight requests up to --exit-timeout-secs), then SIGKILL."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s if timeout_s is not None else self.config.exit_timeout_s + 5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
