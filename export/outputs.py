"""The output contract, checked at publish before the parity gate: the release's ``model.onnx`` (exported, or a
user's file with inferline's head attached) must take a batch of any size and answer what the spec declares.

1. Every graph input has a dynamic first (batch) axis: a fixed one (an export without ``dynamic_shapes`` /
   ``dynamic_axes``) would serve only that batch size. Read from the graph (``onnx``), before anything runs.
2. A probe (onnxruntime, CPU) on 1 and 3 rows of the gate's own examples must answer, per row, exactly the spec's
   outputs (``features.contract.model_outputs``): ``probabilities`` FP32 ``[n_classes]`` and ``predicted_class``
   INT64 ``[1]`` for a classifier, ``prediction`` FP32 ``[1]`` (one value per row) for regression.

A file that breaks either is refused with ``OutputContractError`` (a ``UserError``: one line, what was received,
what the spec expects, how to fix it), so it never reaches the parity gate, the server or a caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from inferline.core.errors import UserError
from inferline.features.spec import TENSOR_DTYPES, PipelineSpec

__all__ = ["OutputContractError", "check_batch_axis", "check_outputs"]


class OutputContractError(UserError, ValueError):
    """A model whose inputs or outputs do not fit the pipeline spec."""

    docs = "tutorials/bring-your-own-model.md#the-forward-contract"


def check_batch_axis(onnx_path: Path, what: str | None = None) -> None:
    """Refuse a graph input whose first axis is a fixed size (it must be symbolic: any batch size)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            raise OutputContractError(
                f"{what or onnx_path}: input {inp.name!r} has shape {shape}, a fixed batch size of "
                f"{dims[0].dim_value}; inferline serves batches of any size, so the first axis must be dynamic: "
                "export it again with a dynamic batch axis (torch.onnx.export(..., dynamic_shapes=({0: "
                "torch.export.Dim('batch')},)) or dynamic_axes={'" + inp.name + "': {0: 'batch'}})"
            )


def _expected(spec: PipelineSpec) -> dict[str, tuple[str, tuple[int, ...]]]:
    from inferline.features.contract import model_outputs

    return {t.name: (t.datatype, t.dims) for t in model_outputs(spec)}


def check_outputs(onnx_path: Path, spec: PipelineSpec, feeds: Mapping[str, np.ndarray], what: str = "") -> None:
    """Steps 1 and 2 of the module docstring on ``onnx_path``; ``feeds`` are model inputs by name (the gate's
    examples), of which the first 1 and 3 rows are the probes; ``what`` names the model in messages."""
    from inferline.release.runtime import onnx_session

    name = what or str(onnx_path)
    check_batch_axis(onnx_path, name)
    session = onnx_session(onnx_path, device="cpu")
    outputs = [o.name for o in session.get_outputs()]
    expected = _expected(spec)
    declared = ", ".join(f"{k} {dt} {list(dims)}" for k, (dt, dims) in expected.items())
    task = f"{spec.task} pipeline {spec.name!r}" + (f" with classes {list(spec.classes)}" if spec.classes else "")
    missing = [k for k in expected if k not in outputs]
    if missing:
        raise OutputContractError(
            f"{name}: outputs {outputs}, but the {task} expects {declared} per row (missing {missing}); export the "
            "model with the task's outputs (inferline's head names them)"
        )
    n = len(next(iter(feeds.values())))
    for rows in sorted({1, min(3, n)}):
        probe = {k: np.ascontiguousarray(v[:rows]) for k, v in feeds.items()}
        try:
            got = dict(zip(outputs, session.run(outputs, probe), strict=True))
        except Exception as exc:  # onnxruntime's own errors (InvalidArgument, Fail...) carry the reason
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            inputs = {k: f"{v.dtype} {list(v.shape)}" for k, v in probe.items()}
            raise OutputContractError(
                f"{name}: onnxruntime could not run the model on {rows} row(s) of the spec's inputs {inputs}: "
                f"{first}; export the model for the spec's inputs (names, dtypes, per-row shapes) with a dynamic "
                "batch axis"
            ) from exc
        for key, (datatype, dims) in expected.items():
            value = got[key]
            want_dtype = np.dtype(TENSOR_DTYPES[datatype])
            if value.dtype != want_dtype or tuple(value.shape) != (rows, *dims):
                per_row = list(value.shape[1:])
                hint = (
                    f"the model answers {per_row[0]} values per row for {len(spec.classes)} classes: give it "
                    f"{len(spec.classes)} outputs, or declare its classes in the spec"
                    if key == "probabilities" and len(per_row) == 1 and value.shape[0] == rows
                    else "export the model so that it answers the spec's outputs, one per row"
                )
                raise OutputContractError(
                    f"{name}: output {key!r} is {value.dtype} {list(value.shape)} for {rows} row(s), but the {task} "
                    f"expects {datatype} {[rows, *dims]} ({declared} per row); {hint}"
                )
