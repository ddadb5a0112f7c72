"""The models a user brings, named by import path from the BYOM test pipelines (tests/system/test_byom.py); their kernel
and preprocessing function are in byom_functions.py (torch-free: what a server stub imports). Random weights are
fine: the tests check that every stage answers like PyTorch."""

from __future__ import annotations

import math

import torch
from torch import nn

from inferline.benchmarks.cnn_bench import ResidualBlock  # a ResNet basic block
from inferline.training.model import ModelLayout


# ---------------------------------------------------------------------------------------------- models
class SmallResNet(nn.Module):
    """A ResNet-style CNN: a strided stem, two residual blocks, global average pooling, a linear head."""

    def __init__(self, channels: int, classes: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(ResidualBlock(width), nn.MaxPool2d(2), ResidualBlock(width))
        self.head = nn.Linear(width, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(image)).mean(dim=(2, 3)))


def small_resnet(layout: ModelLayout, width: int = 8) -> nn.Module:
    _, _, dims = layout.input("image")
    return SmallResNet(dims[0], layout.n_outputs, width)


class TinyTransformer(nn.Module):
    """Token embedding + position embedding, one self-attention block with a padding mask, masked mean pooling."""

    def __init__(self, vocab: int, classes: int, dim: int, max_len: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(max_len, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        h = self.tokens(tokens) + self.positions(torch.arange(length, device=tokens.device)).unsqueeze(0)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        keep = mask.to(h.dtype)
        scores = torch.matmul(q, k.transpose(1, 2)) * self.scale + (1.0 - keep).unsqueeze(1) * -1e4
        h = self.norm1(h + torch.matmul(torch.softmax(scores, dim=-1), v))
        h = self.norm2(h + self.ff(h))
        pooled = (h * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
        return self.head(pooled)


def tiny_transformer(layout: ModelLayout, vocab: int = 64, dim: int = 16, max_len: int = 64) -> nn.Module:
    return TinyTransformer(vocab, layout.n_outputs, dim, max_len)


class RegressionMLP(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, numeric: torch.Tensor) -> torch.Tensor:
        return self.net(numeric).squeeze(1)


def regression_mlp(layout: ModelLayout, hidden: int = 16) -> nn.Module:
    return RegressionMLP(layout.n_numeric, hidden)


class VectorMLP(nn.Module):
    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, 16), nn.ReLU(), nn.Linear(16, classes))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding)


def vector_mlp(layout: ModelLayout) -> nn.Module:
    _, _, dims = layout.input("embedding")
    return VectorMLP(dims[0], layout.n_outputs)


def fixed_width(layout: ModelLayout, outputs: int = 5) -> nn.Module:
    """A factory that ignores the layout's class count (a user's mistake): ``outputs`` logits whatever the spec."""
    _, _, dims = layout.input("embedding")
    return VectorMLP(dims[0], outputs)
