"""inferline training: the PyTorch model and the deterministic training loop."""

from inferline.training.model import Architecture, ScoringModel, TabularNet, load_checkpoint, save_checkpoint
from inferline.training.train import RunResult, latest_run, load_run, load_state, train

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
    "train",
]
