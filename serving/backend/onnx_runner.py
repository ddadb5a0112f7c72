"""Triton Python-backend model ``<pipeline>_model`` for the local target: runs ``model.onnx`` with onnxruntime.

The bundled tritonserver has no native onnxruntime backend; NVIDIA's Triton image runs the same ``model.onnx``
with its native ``onnxruntime`` backend (``export --target gpu``). Requests batched together run as one call.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend

from inferline.export.runtime import Device, onnx_session

OUTPUTS = ("probabilities", "predicted_class")


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        device: Device = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
        self.session = onnx_session(path, device=device, threads=int(params.get("intra_op_threads", "1")))
        self.inputs = [i.name for i in self.session.get_inputs()]

    def execute(self, requests: list[Any]) -> list[Any]:
        feeds = [{n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs} for r in requests]
        merged = {n: np.concatenate([f[n] for f in feeds]) for n in self.inputs}
        outputs = self.session.run(list(OUTPUTS), merged)
        responses = []
        start = 0
        for f in feeds:
            end = start + len(f[self.inputs[0]])
            tensors = [pb_utils.Tensor(name, out[start:end]) for name, out in zip(OUTPUTS, outputs, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = end
        return responses
