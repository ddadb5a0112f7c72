"""inferline training: the PyTorch model and the deterministic training loop.

The names below are imported on first use (PEP 562), so ``inferline.training.model`` loads with torch alone (the
training loop needs pandas; the GPU check runs the model where pandas is not installed). The training function is
``inferline.training.train.train``: at package level ``train`` is the submodule, as Python binds it once imported
(a lazy function of the same name would be replaced by the module the first time anything imports it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inferline.training.model import Architecture, ScoringModel, TabularNet, load_checkpoint, save_checkpoint
    from inferline.training.train import RunResult, latest_run, load_run, load_state

_WHERE = {
    "Architecture": "model",
    "RunResult": "train",
    "ScoringModel": "model",
    "TabularNet": "model",
    "latest_run": "train",
    "load_checkpoint": "model",
    "load_run": "train",
    "load_state": "train",
    "save_checkpoint": "model",
}

__all__ = [
    "Architecture",
    "RunResult",
    "ScoringModel",
    "TabularNet",
    "latest_run",
    "load_checkpoint",
    "load_run",
    "load_state",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'inferline.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"inferline.training.{_WHERE[name]}"), name)
