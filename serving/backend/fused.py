"""Triton Python-backend model ``<pipeline>`` for the local target: validation, features and the ONNX model in one
``execute``.

Copied by ``inferline export publish --target local`` into every release as ``<pipeline>/N/model.py``. Clients call
it exactly as they call the gpu target's ensemble: one tensor per raw column in (a tensor column as
[n, *shape]), the task's outputs (``probabilities`` and ``predicted_class``, or ``prediction``), ``status`` and
``release`` out, same dtypes and dims.

Why one model and not the ensemble (``preprocess.py`` -> onnxruntime) the gpu target serves: on the bundled
tritonserver each Python-backend hop and the ensemble scheduler cost more per request than the feature math and
onnxruntime together (ENVIRONMENT.md, measured). Here every request of a dynamic batch is read, validated and
featurized with one call of the release's compiled contract (``features.contract``: its own spec snapshot and
fitted state, compiled once at load, as ``preprocess.py``, the batch job and training use it) and scored with one
``session.run``. A row that breaks a rule gets ``status`` = its reason (for
example ``amount:negative``) and neutral features, and the rows beside it are scored normally; so does a row the
column's ``preprocess`` function raises on (``<column>:preprocess``) and a row onnxruntime raises on, found alone
(``model:failed``, ``serving.batches.run_model``). A request that cannot be read gets an error response while the
other requests of the batch are answered.

Layout: version N of this model is release N (``version_policy specific``), so Triton's own version handling does a
switch (both versions loaded, then the old one unloaded: nothing in flight is dropped, and features and model can
never come from two releases). Its version directory holds only this file and the release's config: the fitted
state and the model are read where every other reader of release N finds them, named by the config's parameters::

    <repository>/<feature_state_from>/N/feature_state.json     (feature_state_from = <pipeline>_preprocess)
    <repository>/<feature_state_from>/N/spec.json              the release's spec snapshot, beside it
    <repository>/<onnx_model_from>/N/model.onnx                (onnx_model_from = <pipeline>_model)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend

from inferline.features.contract import TensorSpec, compile_contract
from inferline.features.spec import spec_beside
from inferline.features.state import STATE_FILE, FeatureState
from inferline.release.runtime import onnx_session
from inferline.serving.batches import answer_batch, read_inputs, run_model
from inferline.serving.stub_env import add_user_path

ANSWERS = ("status", "release")  # outputs this model writes itself; every other output comes from the ONNX model


def _sibling(model_dir: str, name: str) -> str:
    """``<repository>/<name>``: a model directory beside this one, named by a plain directory name only."""
    if not name or os.path.basename(name) != name or name in (".", ".."):
        raise ValueError(f"expected the name of a model directory beside {model_dir!r}, got {name!r}")
    return os.path.join(os.path.dirname(os.path.abspath(model_dir)), name)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        add_user_path()  # the user's modules on the server's PYTHONPATH (the stub's interpreter ignores it)
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version = args["model_version"]
        self.name = config["name"]
        state_dir = _sibling(args["model_repository"], params["feature_state_from"])
        state_path = os.path.join(state_dir, version, STATE_FILE)
        self.spec = spec_beside(state_path, params["pipeline"])  # the release's snapshot, never the live module
        # this instance's own compiled contract (it remembers categorical verdicts: never shared between models)
        self.contract = compile_contract(self.spec, FeatureState.load(state_path))
        model_dir = _sibling(args["model_repository"], params["onnx_model_from"])
        threads = int(params.get("intra_op_threads", "1"))
        self.session = onnx_session(os.path.join(model_dir, version, "model.onnx"), device="cpu", threads=threads)
        self.outputs = [o["name"] for o in config["output"] if o["name"] not in ANSWERS]
        by_name = {t.name: t for t in self.contract.outputs}
        self.model_outputs = [by_name.get(name, TensorSpec(name, "FP32", (1,))) for name in self.outputs]
        self.release = f"{self.spec.name}:{version}".encode()
        self.columns = [c.name for c in self.spec.input_columns]
        self.tensor_columns = {c.name for c in self.spec.tensor_columns}  # read as [n, *shape], never flattened

    def _score(self, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Raw columns of n rows -> the outputs of n rows, in the order of ``self.outputs`` + ``ANSWERS``."""
        m, status = self.contract.featurize(arrays)
        n = len(status)
        # rows the model raises on (alone) get a reason and zeros; the rows beside them are scored
        scored = run_model(
            lambda feeds: self.session.run(self.outputs, feeds),
            self.contract.feeds(m),
            status,
            self.model_outputs,
            f"model {self.name!r}",
        )
        status_out = np.array([s.encode() for s in status], dtype=object).reshape(n, 1)
        release_out = np.full((n, 1), self.release, dtype=object)
        return [*scored, status_out, release_out]

    def _response(self, outputs: list[np.ndarray]) -> Any:
        names = (*self.outputs, *ANSWERS)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(k, v) for k, v in zip(names, outputs, strict=True)]
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        per_request = read_inputs(requests, self.columns, pb_utils.get_input_tensor_by_name, self.tensor_columns)
        return answer_batch(
            per_request,
            self.columns,
            self._score,
            self._response,
            lambda exc: pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"{self.name} could not read the request: {exc}")
            ),
        )
