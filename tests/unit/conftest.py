"""The unit tier's guard: a test here starts no process. Starting one (``subprocess.Popen``, which ``run``,
``check_output`` and ``asyncio``'s subprocesses go through, or a ``multiprocessing`` process) fails the test naming
the command, so a test that needs a real server, a cluster or a command line is moved to tests/system instead of
slowing the tier that `make test-fast` runs."""

from __future__ import annotations

import multiprocessing.process
import subprocess

import pytest


@pytest.fixture(autouse=True)
def _no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every unit test runs with process creation refused (undone after the test by ``monkeypatch``)."""

    def refuse(self: object, *args: object, **kwargs: object) -> None:
        raise AssertionError(
            f"a unit test started a process ({args[:1]!r}): it belongs in tests/system (see tests/unit/conftest.py)"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
