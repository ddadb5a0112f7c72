"""``inferline serve status`` after its owner died: exited processes that nobody reaped (zombies) count as dead."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from inferline.core.processes import alive as _alive


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:  # exited, not reaped: what a killed owner is
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)  # polling the child's state
    try:
        assert not _alive(child.pid)
    finally:
        child.wait()
    assert not _alive(child.pid)  # reaped: gone


def test_a_running_process_is_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert _alive(child.pid)
    finally:
        child.communicate(b"")
    assert not _alive(child.pid)
