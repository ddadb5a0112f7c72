"""Fixtures of the system tier, which build real artifacts and start real components: a published Triton repository
with two releases (from the shared conftest's trained run), a live tritonserver on free loopback ports, Dask clusters
of separate processes and ``inferline serve up`` servers (all stopped at the end)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from inferline.batch import JobConfig, JobReport, run_job
from inferline.core.processes import alive, die_with_parent, free_port, stop_process, wait_until_ready
from inferline.export.publish import PublishResult, publish
from inferline.features.pipelines import fraud
from inferline.serving.daemon import UP_PORT_FLAGS
from inferline.serving.server import ServerConfig, TritonServer
from inferline.training.train import RunResult, train

from .netns import network  # noqa: F401 - the multi-host tests' fixture (a test network of hosts)

# Processes the tests start never import this checkout's folders (features/, monitor/, ...) as bare top-level
# modules through their working directory: only the installed `inferline.*` names resolve (PYTHONSAFEPATH, 3.11+).
os.environ["PYTHONSAFEPATH"] = "1"

# Every process the suite starts inherits this mark (tritonserver passes its environment on to its Python-backend
# stubs), so the session's end can find a stub the suite left behind (pytest_sessionfinish).
SESSION_MARK = f"INFERLINE_TEST_SESSION={os.getpid()}-{time.time_ns()}"
os.environ["INFERLINE_TEST_SESSION"] = SESSION_MARK.split("=", 1)[1]


def leftover_stubs() -> list[int]:
    """Live Python-backend stubs (``triton_python_backend_stub``) started by this test session."""
    import psutil

    from inferline.serving.server import STUB_NAME

    found = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE or not any(STUB_NAME in a for a in p.info["cmdline"] or []):
                continue
            if SESSION_MARK.encode() in Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0"):
                found.append(p.pid)
        except (OSError, psutil.Error):
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No Python-backend stub started by the suite outlives it: after the session's servers stopped (each stop
    reaps its server's process group), one still alive 10 s later fails the run, named, and is killed."""
    import signal

    deadline = time.monotonic() + 10
    while (left := leftover_stubs()) and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for stubs still exiting
    if not left:
        return
    described = []
    for pid in left:
        try:
            described.append(f"pid {pid}: {Path(f'/proc/{pid}/cmdline').read_bytes().replace(bytes(1), b' ')[:300]!r}")
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"{len(left)} triton_python_backend_stub process(es) started by the suite outlived it: " + "; ".join(
        described
    )
    if reporter is not None:
        reporter.write_line(f"ERROR: {message}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def group_of(pid: int) -> tuple[list[int], set[str]]:
    """The live processes of process group ``pid`` (a tritonserver's: it and its stubs) and the shared-memory
    regions they hold."""
    from inferline.core.processes import group_pids
    from inferline.serving.server import shm_regions

    pids = group_pids(pid)
    return pids, shm_regions(pids)


def reaped(pids: list[int], regions: set[str]) -> bool:
    """None of ``pids`` is alive and none of ``regions`` is left in /dev/shm."""
    return all(gone(p) for p in pids) and not any((Path("/dev/shm") / r).exists() for r in regions)


@dataclass
class Published:
    repository: Path
    releases: list[PublishResult]
    runs: list[RunResult]


@pytest.fixture(scope="session")
def published(run: RunResult, raw_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Published:
    """Two releases: v1 from a seed-1 run, v2 (current) from the session's seed-0 run."""
    repository = tmp_path_factory.mktemp("triton_models")
    first = train(raw_files, fraud.SPEC, tmp_path_factory.mktemp("runs1"), seed=1, epochs=2, progress=False)
    # load_check=False: the session publishes many releases; the scratch-server check has its own tests
    r1 = publish(first.run_dir, repository, load_check=False)
    r2 = publish(run.run_dir, repository, load_check=False)
    return Published(repository=repository, releases=[r1, r2], runs=[first, run])


def score_batch(
    published: Published, cluster: DaskCluster, inputs: list[Path], output: Path, **options: Any
) -> JobReport:
    """Run the batch job on ``inputs`` with the session's release and Dask cluster (``options``: more
    ``JobConfig`` fields) and return its report."""
    config = JobConfig(
        inputs=[str(p) for p in inputs],
        output=output,
        model=options.pop("model", "fraud"),
        repository=published.repository,
        scheduler=cluster.address,
        progress=False,
        **options,
    )
    return run_job(config)


def private_server(published: Published, root: Path, **options: Any) -> TritonServer:
    """A server of its own on a copy of the published repository, for tests that switch releases or break
    readiness, or must see only their own traffic, so the session's shared server is never disturbed.
    ``options``: more ``ServerConfig`` fields (``trace_dir``, ...). The caller stops it."""
    shutil.copytree(published.repository, root / "triton_models")
    config = ServerConfig.on_free_ports(root / "triton_models", root / "work", **options)
    return TritonServer(config).start(timeout_s=120)


@pytest.fixture(scope="session")
def triton(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    workdir = tmp_path_factory.mktemp("work")
    config = ServerConfig.on_free_ports(
        published.repository,
        workdir,
        trace_dir=workdir / "trace",  # per-request server timings for the monitor tests
        trace_log_frequency=1,  # every request's trace is written as soon as it completes
    )
    server = TritonServer(config)
    server.start(timeout_s=120)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class DaskCluster:
    """A real Dask cluster of separate processes: ``dask scheduler`` and two ``dask worker`` (nanny + worker)."""

    address: str
    processes: list[subprocess.Popen[bytes]]

    def worker_pids(self) -> dict[str, int]:
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            pids: dict[str, int] = client.run(os.getpid)
        return pids

    def wait_for_workers(self, n: int = 2, timeout_s: float = 60) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(n, timeout=timeout_s)


@contextmanager
def start_dask_cluster(logs: Path) -> Iterator[DaskCluster]:
    """``dask scheduler`` + two single-threaded ``dask worker`` processes on loopback, stopped on exit."""
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    worker = ["--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1", "--death-timeout", "60"]
    commands = [
        [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", "127.0.0.1:0"],
        *[[*dask, "worker", address, *worker, "--name", f"w{i}"] for i in range(2)],
    ]
    processes = []
    for i, command in enumerate(commands):
        with open(logs / f"{i}.log", "wb") as log:
            processes.append(
                subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
            )
    cluster = DaskCluster(address, processes)
    try:
        cluster.wait_for_workers(2)
        yield cluster
    finally:
        stop_processes(processes)


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each in turn, the last started first, each waited for before the next (Dask workers close at once
    while their scheduler is up; with it gone first they wait on it, 8-20 s); SIGKILL to one still running 20 s
    later."""
    for p in reversed(processes):
        stop_process(p, grace_s=20)


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """The shared cluster, for tests that leave it as they found it (no killed workers, no held tasks)."""
    with start_dask_cluster(tmp_path_factory.mktemp("dask")) as cluster:
        yield cluster


@pytest.fixture
def own_dask_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """A cluster of the test's own, for tests that kill its processes."""
    with start_dask_cluster(tmp_path / "dask") as cluster:
        yield cluster


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its parent to reap it counts as exited)."""
    return not alive(pid)


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll a state check until it holds; fail naming ``what`` after ``timeout_s``."""
    wait_until_ready(predicate, timeout_s, what, interval_s=0.02)


@dataclass
class Supervised:
    """A server started the way users start it: ``inferline serve up`` (supervisor, gateway, tritonserver)."""

    workdir: Path
    up_args: list[str]
    record: dict[str, Any]
    up_stderr: str = ""  # what the last successful `up` wrote to stderr (warnings)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "inferline.serving", *args[:1], "--workdir", str(self.workdir), *args[1:]]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    def up(self) -> None:
        done = self.cli("up", *self.up_args)
        assert done.returncode == 0, done.stderr
        self.record = json.loads(done.stdout)
        self.up_stderr = done.stderr

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.workdir / "serving" / "server.json").read_text()))

    def metrics(self, url: str | None = None) -> dict[str, float]:
        """``{sample name with labels: value}`` from the supervisor's (default) or another metrics endpoint."""
        import urllib.request

        with urllib.request.urlopen(url or self.record["supervisor_metrics"], timeout=10) as r:
            text = r.read().decode()
        return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")}

    def wait_until(self, predicate: Any, timeout_s: float = 120, what: str = "") -> None:
        wait_until(predicate, timeout_s, what)

    def stop(self) -> None:
        self.cli("down", timeout=60)


def supervised_server(
    published: Published, root: Path, *options: str, repository: Path | None = None, up: bool = True
) -> Supervised:
    """``inferline serve up`` on a copy of the published repository (or on ``repository``) and free ports; the
    caller stops it. ``up=False``: not started yet (the caller runs ``cli("up", *up_args)`` itself)."""
    if repository is None:
        repository = root / "triton_models"
        shutil.copytree(published.repository, repository)
    ports = {flag: str(free_port()) for flag in UP_PORT_FLAGS}
    args = ["--repository", str(repository), *(x for kv in ports.items() for x in kv), *options]
    server = Supervised(workdir=root / "work", up_args=args, record={})
    if up:
        server.up()
    return server
