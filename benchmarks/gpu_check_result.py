"""What every check of ``make gpu-check`` (``benchmarks/gpu_check.py``) shares: its result, its exit statuses and
how it imports what it needs.

A module of its own, not the script: run as a file the script is ``__main__``, so a ``NotRun`` or ``CheckResult``
defined there would be another class than the one the checks (imported as ``inferline.benchmarks.*``) raise and
fill. Imports the standard library only, never pandas.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_RUN",
    "EXIT_OK",
    "EXIT_USAGE",
    "CheckResult",
    "NotRun",
    "Status",
    "imported",
    "inferline_module",
    "library",
    "pandas_state",
]

EXIT_OK, EXIT_FAILED, EXIT_NOT_RUN, EXIT_USAGE = 0, 1, 2, 3

Status = Literal["passed", "failed", "not_run"]


class NotRun(Exception):
    """A check cannot run here (no GPU, a library missing); the message says which and why."""


@dataclass
class CheckResult:
    """One check's outcome: its status and why, the figures for the JSON report and the lines for stdout."""

    name: str
    title: str
    status: Status = "not_run"
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # the human-readable report of the check


def inferline_module(name: str) -> ModuleType:
    """An inferline module; failing to import it is the check's failure (its imports must not need pandas)."""
    return importlib.import_module(name)


def library(name: str, hint: str) -> ModuleType:
    """A third-party library the check needs: missing means the check cannot run here."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a CUDA library that fails to load: "cannot run here"
        raise NotRun(f"{name} cannot be imported ({type(exc).__name__}: {exc}); {hint}") from exc


def imported(result: CheckResult, modules: str) -> None:
    """Record in ``result`` which inferline modules the check imported, and whether pandas came with them."""
    result.details["imported"] = modules
    result.lines.append(f"imported {modules} (pandas {pandas_state()})")


def pandas_state() -> str:
    """``hidden`` (``sys.modules['pandas']`` is None), ``imported``, ``not imported`` or ``not installed``."""
    if "pandas" in sys.modules and sys.modules["pandas"] is None:
        return "hidden"
    if sys.modules.get("pandas") is not None:
        return "imported"
    return "not imported" if importlib.util.find_spec("pandas") is not None else "not installed"
