"""Triton Python-backend model ``<pipeline>_preprocess``: raw rows -> validated, featurized tensors.

The first step of the gpu target's ensemble (the model runs on NVIDIA's native onnxruntime backend); the local
target serves ``fused.py`` instead, which featurizes the same way. Copied by ``inferline export publish --target
gpu`` into every published version as ``model.py``. It compiles its own release's contract (the spec snapshot
``spec.json`` and the fitted ``feature_state.json`` beside it, never the live pipeline module) once, at load, and
featurizes every request with it, as training and the batch job do. Requests that arrive together are featurized
as one batch. A row that breaks a rule gets ``status`` = its reason (for example ``amount:negative``) and neutral
features; the rows beside it are scored normally.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend

from inferline.features.contract import compile_contract
from inferline.features.spec import spec_beside
from inferline.features.state import STATE_FILE, FeatureState
from inferline.serving.batches import answer_batch, read_inputs
from inferline.serving.stub_env import add_user_path


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        add_user_path()  # the user's modules on the server's PYTHONPATH (the stub's interpreter ignores it)
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        state_path = os.path.join(version_dir, STATE_FILE)
        self.spec = spec_beside(state_path, params["pipeline"])
        # this instance's own compiled contract (it remembers categorical verdicts: never shared between models)
        self.contract = compile_contract(self.spec, FeatureState.load(state_path))
        self.release = f"{self.spec.name}:{args['model_version']}".encode()
        self.columns = [c.name for c in self.spec.input_columns]
        self.tensor_columns = {c.name for c in self.spec.tensor_columns}  # read as [n, *shape], never flattened
        self.names = (*(t.name for t in self.contract.model_inputs), "status", "release")

    def _featurize(self, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        m, status = self.contract.featurize(arrays)
        n = len(status)
        status_out = np.array([s.encode() for s in status], dtype=object).reshape(n, 1)
        release_out = np.full((n, 1), self.release, dtype=object)
        return [*self.contract.feeds(m).values(), status_out, release_out]

    def _response(self, outputs: list[np.ndarray]) -> Any:
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(k, v) for k, v in zip(self.names, outputs, strict=True)]
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        per_request = read_inputs(requests, self.columns, pb_utils.get_input_tensor_by_name, self.tensor_columns)
        return answer_batch(
            per_request,
            self.columns,
            self._featurize,
            self._response,
            lambda exc: pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"{self.spec.name}_preprocess could not read the request: {exc}")
            ),
        )
