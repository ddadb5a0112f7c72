"""The scoring head appended to an ONNX model published without its PyTorch source (``export publish --onnx FILE
--spec S``): the same outputs ``training.model.ScoringModel`` exports, built with ``onnx.helper`` so that every
runtime (Triton, the batch job, the parity gate) reads one graph.

The user's graph answers logits [n, classes] (classification) or values [n] / [n, 1] (regression) as its first
output (or the one named). Appended: ``Softmax`` -> ``probabilities`` and the decision (``GreaterOrEqual`` against
the threshold for two classes, ``ArgMax`` for more) -> ``predicted_class`` int64 [n, 1]; or ``Reshape`` ->
``prediction`` float32 [n, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inferline.core.errors import UserError

__all__ = ["HeadError", "attach_head"]

MIN_OPSET = 13  # Softmax over one axis and Unsqueeze with an axes input


class HeadError(UserError, ValueError):
    """An ONNX file the scoring head cannot be attached to."""

    docs = "tutorials/onnx-file.md#2-what-the-file-must-be"


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def attach_head(
    source: Path,
    target: Path,
    task: str,
    n_outputs: int,
    threshold: float = 0.5,
    input_names: list[str] | None = None,
    output: str | None = None,
) -> None:
    """Write ``source`` with the head of ``task`` appended to ``target``. ``input_names`` (the spec's model inputs)
    must be the graph's inputs; ``output`` names the logits output (default: the first)."""
    model = onnx.load(str(source))
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    if input_names is not None and sorted(inputs) != sorted(input_names):
        raise HeadError(
            f"{source}: the ONNX graph's inputs are {inputs}, but the spec's model inputs are {input_names}; name "
            f"the spec's tensor columns as the graph's inputs ({inputs}), or export the graph again with the spec's "
            "names (numeric/categorical for tabular features)"
        )
    if _opset(model) < MIN_OPSET:
        raise HeadError(f"{source}: opset {_opset(model)}; inferline needs opset >= {MIN_OPSET}: export it again")
    outputs = [o.name for o in graph.output]
    logits = output or (outputs[0] if outputs else "")
    if logits not in outputs:
        raise HeadError(f"{source}: no output {logits!r}; its outputs are {outputs}")
    if any(name in outputs for name in ("probabilities", "predicted_class", "prediction")):
        raise HeadError(
            f"{source}: outputs {outputs} already use a name of inferline's head; export the model with its "
            "logits (or values) as the output, e.g. named 'logits'"
        )
    nodes = [helper.make_node("Cast", [logits], ["_head_logits"], to=TensorProto.FLOAT)]
    new_outputs = []
    if task == "regression":
        graph.initializer.append(numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "_head_shape"))
        nodes.append(helper.make_node("Reshape", ["_head_logits", "_head_shape"], ["prediction"]))
        new_outputs.append(helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch", 1]))
    else:
        nodes.append(helper.make_node("Softmax", ["_head_logits"], ["probabilities"], axis=1))
        if task == "binary":
            graph.initializer.extend(
                [
                    numpy_helper.from_array(np.array(1, dtype=np.int64), "_head_positive"),
                    numpy_helper.from_array(np.array(threshold, dtype=np.float32), "_head_threshold"),
                    numpy_helper.from_array(np.array([1], dtype=np.int64), "_head_axes"),
                ]
            )
            nodes += [
                helper.make_node("Gather", ["probabilities", "_head_positive"], ["_head_score"], axis=1),
                helper.make_node("GreaterOrEqual", ["_head_score", "_head_threshold"], ["_head_decision"]),
                helper.make_node("Cast", ["_head_decision"], ["_head_class"], to=TensorProto.INT64),
                helper.make_node("Unsqueeze", ["_head_class", "_head_axes"], ["predicted_class"]),
            ]
        else:
            nodes.append(helper.make_node("ArgMax", ["probabilities"], ["predicted_class"], axis=1, keepdims=1))
        new_outputs += [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_outputs]),
            helper.make_tensor_value_info("predicted_class", TensorProto.INT64, ["batch", 1]),
        ]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(new_outputs)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise HeadError(f"{source}: the graph with inferline's head does not check: {exc}") from exc
    tmp = Path(target).with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))
    tmp.replace(target)
