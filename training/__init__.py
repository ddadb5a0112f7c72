"""inferline training: the PyTorch model and the deterministic training loop.

The names below are imported on first use (PEP 562), so ``inferline.training.model`` loads with torch alone (the
training loop needs pandas; the GPU check runs the model where pandas is not installed). The training function is
``inferline.training.train.train``: at package level ``train`` is the submodule, as Python binds it once imported
(a lazy function of the same name would be replaced by the module the first time anything imports it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferline.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from inferline.training.model import Architecture, ScoringModel, TabularNet, load_checkpoint, save_checkpoint
    from inferline.training.train import RunResult, latest_run, load_run, load_state

__getattr__, __all__ = lazy_attributes(
    __name__,
    {
        "Architecture": "model",
        "RunResult": "train",
        "ScoringModel": "model",
        "TabularNet": "model",
        "latest_run": "train",
        "load_checkpoint": "model",
        "load_run": "train",
        "load_state": "train",
        "save_checkpoint": "model",
    },
)
