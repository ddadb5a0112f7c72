"""Triton Python-backend model of the benchmark's ``floor`` stack: the physical ceiling of the served path.

It takes the same raw inputs as the pipeline's ensemble (one tensor per raw column, same names, datatypes and dims)
and answers outputs with the ensemble's names, datatypes and shapes, filled with constants: no parsing, no
validation, no features, no model. Everything else is what the ensemble pays once: the same tritonserver binary and
flags, HTTP/JSON decoding of every input, the dynamic batcher, the request's transfer into the Python-backend stub
and the answer's way back. The benchmark copies this file as ``model.py`` into a model repository it writes at run
time (``benchmarks/stacks.py``); it imports nothing of inferline.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.first_input = config["input"][0]["name"]
        self.outputs = []  # (name, numpy dtype, dims after the batch dimension)
        for out in config["output"]:
            dtype = pb_utils.triton_string_to_numpy(out["data_type"])
            self.outputs.append((out["name"], dtype, [int(d) for d in out["dims"]]))

    def _constant(self, name: str, dtype: Any, dims: list[int], n: int) -> np.ndarray:
        if dtype is np.object_:  # BYTES
            return np.full([n, *dims], b"ok" if name == "status" else b"floor", dtype=object)
        return np.zeros([n, *dims], dtype=dtype)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, self.first_input).as_numpy().shape[0])
            tensors = [
                pb_utils.Tensor(name, self._constant(name, dtype, dims, n)) for name, dtype, dims in self.outputs
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
