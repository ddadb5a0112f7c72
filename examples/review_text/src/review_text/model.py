"""The PyTorch module, built by a factory inferline calls as ``build(layout, **factory_args)``.

The spec has one tensor column and no tabular features, so ``forward`` takes one tensor: ``tokens`` int64
[n, length], where ``length`` is whatever the request carries (the column's shape is ``(-1,)``). A classifier returns
logits [n, classes]; inferline adds the softmax and the decision. Padding (id 0) must not change a row's answer, and
rows must not interact."""

from __future__ import annotations

import torch
from torch import nn

from inferline.training.model import ModelLayout

PAD = 0


class ReviewNet(nn.Module):
    """Token embeddings, a convolution over neighbouring words, the mean over the real tokens, a linear head."""

    def __init__(self, vocabulary: int, classes: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, dim, padding_idx=PAD)
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, padding=1)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        real = (tokens != PAD).unsqueeze(-1).to(torch.float32)  # [n, length, 1]
        h = self.embed(tokens) * real
        h = torch.relu(self.conv(h.transpose(1, 2))).transpose(1, 2) * real
        return self.head(h.sum(dim=1) / real.sum(dim=1).clamp(min=1.0))


def build(layout: ModelLayout, vocabulary: int = 64, dim: int = 16) -> nn.Module:
    """``layout.n_outputs`` is the number of classes (here 2)."""
    return ReviewNet(vocabulary, layout.n_outputs, dim)
