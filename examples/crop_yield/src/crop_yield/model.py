"""The PyTorch module, built by a factory inferline calls as ``build(layout, **factory_args)``.

``forward`` takes one tensor per model input, in the order of ``layout.inputs``: here ``numeric`` float32 [n, k]
(the spec's numeric features) then ``categorical`` int64 [n, j] (vocabulary indices, 0 = unknown). A regression
model returns one value per row, [n] or [n, 1]; rows must not interact (no batch norm in training mode across rows,
no pooling over the batch)."""

from __future__ import annotations

import torch
from torch import nn

from inferline.training.model import ModelLayout


class YieldNet(nn.Module):
    """The soil type's embedding beside the numeric features, then a small MLP with one output."""

    def __init__(self, n_numeric: int, soil_vocabulary: int, hidden: int, soil_dim: int) -> None:
        super().__init__()
        self.soil = nn.Embedding(soil_vocabulary, soil_dim)
        self.mlp = nn.Sequential(nn.Linear(n_numeric + soil_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        x = torch.cat([numeric, self.soil(categorical[:, 0])], dim=1)
        return self.mlp(x).squeeze(1)


def build(layout: ModelLayout, hidden: int = 32, soil_dim: int = 3) -> nn.Module:
    """``layout.n_numeric`` numeric features; ``layout.cardinalities`` one embedding size per categorical feature."""
    return YieldNet(layout.n_numeric, layout.cardinalities[0], hidden, soil_dim)
