"""The model: embeddings for categorical features + an MLP, and the scoring head that ships in ONNX."""

from __future__ import annotations

import io
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from inferline.features.artifacts import atomic_write_bytes
from inferline.features.errors import UserError

__all__ = ["Architecture", "CheckpointError", "ScoringModel", "TabularNet", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class Architecture:
    cardinalities: tuple[int, ...]
    n_numeric: int
    n_classes: int
    embedding_dim: int
    hidden: tuple[int, ...]
    dropout: float

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Architecture:
        return cls(
            cardinalities=tuple(int(c) for c in d["cardinalities"]),
            n_numeric=int(d["n_numeric"]),
            n_classes=int(d["n_classes"]),
            embedding_dim=int(d["embedding_dim"]),
            hidden=tuple(int(h) for h in d["hidden"]),
            dropout=float(d["dropout"]),
        )


class TabularNet(nn.Module):
    """logits = MLP([standardized numeric features, embedding(categorical index) for each categorical])."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.embeddings = nn.ModuleList(nn.Embedding(card, arch.embedding_dim) for card in arch.cardinalities)
        width = arch.n_numeric + arch.embedding_dim * len(arch.cardinalities)
        layers: list[nn.Module] = []
        for h in arch.hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(arch.dropout)]
            width = h
        layers.append(nn.Linear(width, arch.n_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric] + [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=1))


class ScoringModel(nn.Module):
    """What serving runs: class probabilities and the predicted class.

    For two classes the decision threshold (chosen on validation data at training time) is part of the graph,
    so every runtime (PyTorch, onnxruntime in Triton, the batch job) decides identically; with more classes it is
    the argmax.
    """

    threshold: torch.Tensor

    def __init__(self, net: TabularNet, threshold: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("threshold", torch.tensor(float(threshold), dtype=torch.float32))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probabilities = torch.softmax(self.net(numeric, categorical), dim=1)
        if self.net.arch.n_classes == 2:
            predicted = (probabilities[:, 1] >= self.threshold).to(torch.int64)
        else:
            predicted = torch.argmax(probabilities, dim=1)
        return probabilities, predicted.unsqueeze(1)


def save_checkpoint(path: Path, net: TabularNet, threshold: float, pipeline: str) -> None:
    buf = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "pipeline": pipeline,
            "architecture": net.arch.as_dict(),
            "threshold": float(threshold),
            "state_dict": net.state_dict(),
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


class CheckpointError(UserError, ValueError):
    """A checkpoint inferline refuses to load (pickled code, an unknown format)."""


def load_checkpoint(path: Path) -> ScoringModel:
    """Load with ``weights_only=True``: tensors and plain values only, no pickled code. A file that needs more is
    refused with the reason, never retried another way."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} is not a weights-only checkpoint: it needs pickled code to load ({str(exc).splitlines()[0]}); "
            "inferline loads checkpoints with weights_only=True only. Retrain, or re-save the weights alone"
        ) from exc
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {payload.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    net = TabularNet(Architecture.from_dict(payload["architecture"]))
    net.load_state_dict(payload["state_dict"])
    model = ScoringModel(net, payload["threshold"])
    model.eval()
    return model
