"""The PyTorch module, built by a factory inferline calls as ``build(layout, **factory_args)``.

The spec has one tensor column and no tabular features, so ``forward`` takes one tensor: ``image`` float32
[n, 3, 32, 32] (the column's ``model_dtype``, after ``leaf_images.preprocess:scale``). A classifier returns logits
[n, classes]; inferline adds the softmax and the decision. Rows must not interact (no batch statistics in eval)."""

from __future__ import annotations

import torch
from torch import nn

from inferline.training.model import ModelLayout


class LeafNet(nn.Module):
    """Two convolution blocks, global average pooling, a linear head."""

    def __init__(self, channels: int, classes: int, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image).mean(dim=(2, 3)))


def build(layout: ModelLayout, width: int = 16) -> nn.Module:
    """``layout.input("image")`` is (name, datatype, per-row dims): here ("image", "FP32", (3, 32, 32))."""
    _, _, (channels, _, _) = layout.input("image")
    return LeafNet(channels, layout.n_outputs, width)
