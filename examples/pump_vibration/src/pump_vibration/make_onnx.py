"""Write the ONNX file the tutorial publishes: ``python -m pump_vibration.make_onnx pump.onnx``.

It stands in for a file you were given: a small PyTorch classifier, trained here for a second on synthetic spectra,
exported with one input ``spectrum`` float32 [batch, 16] (the batch axis dynamic) and one output ``logits``
float32 [batch, 3]: no softmax (inferline adds it)."""

from __future__ import annotations

import logging
import sys
import warnings

import torch
from torch import nn

from pump_vibration.spec import BANDS, CLASSES, spectra


def train(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(BANDS, 32), nn.ReLU(), nn.Linear(32, len(CLASSES)))
    values, labels = spectra(2000, seed)
    x, y = torch.from_numpy(values), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def export(model: nn.Module, path: str) -> None:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(
            model,
            (torch.zeros(4, BANDS),),
            input_names=["spectrum"],
            output_names=["logits"],
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),  # any batch size
            verbose=False,
        )
    assert program is not None
    program.save(path)


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "pump.onnx"
    export(train(), target)
    print(f"wrote {target}")
