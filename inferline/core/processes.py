"""Processes and ports, written once: a free loopback port, a readiness wait that names what it waited for, and the
ways a child process or a whole process group is ended and reaped.

Why here: the server, its supervisor, the CLI's detached start, the demo, the benchmarks and the tests all start
children and wait for them; each had its own copy of these loops, with different messages and different ways to
leave a straggler behind. The standard library (``os``, ``signal``, ``socket``, ``subprocess``) and psutil (process
states: a zombie counts as gone) are all this needs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil

__all__ = [
    "NotReady",
    "alive",
    "die_with_parent",
    "end_group",
    "free_port",
    "group_pids",
    "kill_group",
    "port_or_free",
    "stop_group",
    "stop_process",
    "wait_gone",
    "wait_until_ready",
]

POLL_S = 0.1  # how often a readiness check or a process look is repeated


class NotReady(RuntimeError):
    """What ``wait_until_ready`` waited for did not come: the time ran out, or the process that was to provide it
    exited first. The message names what was awaited."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` now (the kernel's pick for port 0). Another process may take it
    before the caller binds it: fine for tests and local servers, which bind it at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_or_free(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when it can be bound at ``host`` now, else a free port (``free_port``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, preferred))
            return preferred
        except OSError:
            return free_port(host)


def wait_until_ready(
    check: Callable[[], object],
    timeout_s: float,
    what: str,
    *,
    process: subprocess.Popen[Any] | None = None,
    interval_s: float = POLL_S,
) -> None:
    """Call ``check`` every ``interval_s`` until it returns something true. ``NotReady`` naming ``what`` when
    ``timeout_s`` passes first, or when ``process`` (the child that is to become ready) exits before it does: a
    dead child never becomes ready, so the wait does not run out its time."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise NotReady(f"{what} exited with code {process.returncode} before it was ready")
        if check():
            return
        if time.monotonic() >= deadline:
            raise NotReady(f"{what} not ready within {timeout_s:g} s")
        time.sleep(interval_s)  # polling interval of the readiness check, not a wait for an event


def die_with_parent() -> None:
    """In the child before exec (``preexec_fn``): ask Linux to send SIGTERM when the parent dies (PR_SET_PDEATHSIG),
    so a server owned by a test run or a benchmark never outlives it, even when that process is killed with
    SIGKILL."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1


def alive(pid: int) -> bool:
    """The process exists and has not exited. A zombie (exited, not yet reaped: a detached process killed with
    SIGKILL stays one where PID 1 does not reap) is dead, although ``kill(pid, 0)`` still succeeds on it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pids: Iterable[int], timeout_s: float) -> bool:
    """Wait until none of ``pids`` is alive; True if they all went within the timeout."""
    pids = list(pids)
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)  # polling for the processes to exit
    return True


def group_pids(pgid: int) -> list[int]:
    """The live processes of process group ``pgid`` (zombies, already exited, are not counted)."""
    pids = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid and alive(pid):
                pids.append(pid)
        except (OSError, psutil.Error):  # exited meanwhile
            continue
    return pids


def kill_group(pgid: int, sig: signal.Signals = signal.SIGKILL) -> bool:
    """Send ``sig`` (SIGKILL by default) to every process of group ``pgid``; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_process(process: subprocess.Popen[Any], grace_s: float = 30.0) -> int:
    """SIGTERM ``process`` (it may drain), SIGKILL it if it is still running ``grace_s`` later, and reap it; its exit
    status. Only the process itself is signalled: children that follow their parent (PR_SET_PDEATHSIG, a server's
    stubs) are left to do so, or to ``end_group``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


def end_group(
    pgid: int, grace_s: float, timeout_s: float, on_poll: Callable[[list[int]], object] | None = None
) -> list[int]:
    """What is left of process group ``pgid`` (its leader already exited) gets ``grace_s`` to exit by itself, then
    SIGKILL until none of it remains. Returns the pids still alive ``timeout_s`` after the first SIGKILL (a process
    stuck in the kernel); empty when the group is gone. ``on_poll`` sees the live pids at each look (e.g. to note
    what they hold before they go)."""
    deadline = time.monotonic() + grace_s
    while group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the group to exit by itself
    deadline = time.monotonic() + timeout_s
    while left := group_pids(pgid):
        if on_poll is not None:
            on_poll(left)
        if not kill_group(pgid):
            break  # gone between the look and the kill
        if time.monotonic() > deadline:
            return left
        time.sleep(0.05)  # polling for the killed group to be gone
    return []


def stop_group(process: subprocess.Popen[Any], grace_s: float, timeout_s: float = 30.0) -> list[int]:
    """End a process started in a session of its own (``start_new_session=True``, so its group id is its pid) with
    everything it started: SIGTERM to the whole group, SIGKILL to it ``grace_s`` later if the leader still runs,
    the leader reaped, then ``end_group`` for any member left. Returns the pids still alive after ``timeout_s``
    (empty when the group is gone)."""
    pgid = process.pid
    if process.poll() is None:
        kill_group(pgid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            kill_group(pgid)
            process.wait()
    return end_group(pgid, 0.0, timeout_s)
