"""torch -> ONNX: the export of a scoring model with a dynamic batch axis, named as the serving contract names it.

``export.publish`` calls it for a candidate that carries its PyTorch model (a training run, a user's module and
weights); an ONNX file given as the model is copied instead.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from inferline.core.errors import UserError
from inferline.features.spec import TENSOR_DTYPES
from inferline.training.model import ModelLayout, ScoringModel

__all__ = ["TORCH_DTYPES", "ExportFailed", "export_onnx"]

TORCH_DTYPES = TENSOR_DTYPES  # Triton datatype -> the torch (and numpy) dtype name


def export_onnx(
    model: ScoringModel,
    path: Path,
    max_batch_size: int,
    layout: ModelLayout | None = None,
    examples: Sequence[torch.Tensor] | None = None,
) -> None:
    """torch -> ONNX (dynamo exporter): inputs named as ``layout.inputs`` with a dynamic batch axis (and a dynamic
    axis for each declared ``-1`` dimension), outputs named as the task's (``probabilities``/``predicted_class`` or
    ``prediction``). ``examples`` (rows of real model inputs) trace the graph; zeros of the layout when absent."""
    if layout is None:
        arch = model.arch
        layout = ModelLayout(
            inputs=(("numeric", "FP32", (arch.n_numeric,)), ("categorical", "INT64", (len(arch.cardinalities),))),
            task=model.task,
            n_outputs=arch.n_classes,
        )
    if examples is None:
        examples = [
            torch.zeros((8, *(8 if d < 0 else d for d in dims)), dtype=getattr(torch, TORCH_DTYPES[dt]))
            for _, dt, dims in layout.inputs
        ]
    examples = tuple(
        t[:8] if t.shape[0] >= 8 else t.repeat((-(-8 // t.shape[0]), *[1] * (t.ndim - 1)))[:8] for t in examples
    )
    batch = torch.export.Dim("batch", min=1, max=max(max_batch_size, 65536))
    names = [name for name, _, _ in layout.inputs]
    outputs = ["prediction"] if model.task == "regression" else ["probabilities", "predicted_class"]

    def shapes(shared: bool) -> tuple[tuple[dict[int, Any], ...]]:
        spec = []
        for name, _, dims in layout.inputs:
            axes: dict[int, Any] = {0: batch}
            for i, d in enumerate(dims):
                if d < 0:
                    axes[i + 1] = torch.export.Dim(f"d{i + 1}" if shared else f"{name}_d{i + 1}", min=1, max=65536)
            spec.append(axes)
        return (tuple(spec),)

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    program = None
    for shared in (False, True):  # separate variable dims first; inputs that must agree (tokens, mask) share them
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(
                    model,
                    examples,
                    input_names=names,
                    output_names=outputs,
                    dynamo=True,
                    dynamic_shapes=shapes(shared),
                    verbose=False,
                )
            break
        except Exception as exc:
            if shared or not any(d < 0 for _, _, dims in layout.inputs for d in dims):
                raise ExportFailed(
                    f"torch.onnx.export could not export the model ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); check that forward() takes the inputs "
                    f"{names} and uses only exportable operations (see the forward contract in "
                    "inferline.training.model)"
                ) from exc
    assert program is not None
    tmp = path.with_suffix(".tmp.onnx")
    program.save(str(tmp))
    tmp.replace(path)


class ExportFailed(UserError, RuntimeError):
    """The model could not be exported to ONNX."""

    docs = "tutorials/bring-your-own-model.md#the-forward-contract"
