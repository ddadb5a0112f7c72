"""What tests/unit/test_edge.py (the tests that start no process) and tests/system/test_edge.py (those that do) both
use: helpers and case tables kept in one place."""

from __future__ import annotations

from typing import Any


def _wait(predicate: Any, timeout_s: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)  # polling interval of a readiness check
