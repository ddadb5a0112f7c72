"""What tests/unit/test_publish_contract.py (the tests that start no process) and tests/system/test_publish_contract.py
(those that do) both use: helpers and case tables kept in one place."""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from tests.pipelines import byom_vector

THREE = replace(byom_vector.SPEC, name="three", classes=("a", "b", "c"))  # a 3-class feature-vector spec


def _export(module: torch.nn.Module, path: Path, dynamic: bool = True) -> None:
    """A user's own ONNX export of ``module`` (logits only), with or without a dynamic batch axis."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    shapes = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1, max=4096)},)} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(), (torch.zeros(4, 8),), input_names=["embedding"], output_names=["logits"], dynamo=True,
            **shapes,
        )  # fmt: skip
    assert program is not None
    program.save(str(path))
