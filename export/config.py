"""Triton model configurations as data, rendered to config.pbtxt (on disk) and JSON (``load_model`` overrides).

One dict describes a config; ``Const`` marks enum values (bare in pbtxt) and ``PbMap`` marks protobuf map fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from inferline.features.contract import compile_contract
from inferline.features.spec import PipelineSpec
from inferline.features.state import FeatureState
from inferline.release.registry import model_names

__all__ = ["Const", "PbMap", "Target", "model_names", "pipeline_configs", "to_json", "to_pbtxt"]

Target = Literal["local", "gpu"]
TYPE = {
    "BYTES": "TYPE_STRING",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "FP16": "TYPE_FP16",
    "INT64": "TYPE_INT64",
    "INT32": "TYPE_INT32",
    "INT16": "TYPE_INT16",
    "INT8": "TYPE_INT8",
    "UINT8": "TYPE_UINT8",
    "BOOL": "TYPE_BOOL",
}


class Const(str):
    """A protobuf enum value: ``KIND_CPU`` rather than ``"KIND_CPU"``."""


class PbMap(dict[str, Any]):
    """A protobuf map field (``parameters``, ``input_map``)."""


def _scalar(v: Any) -> str:
    if isinstance(v, Const):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return json.dumps(str(v))


def to_pbtxt(cfg: dict[str, Any], indent: int = 0) -> str:
    pad = "  " * indent
    lines: list[str] = []
    for key, value in cfg.items():
        if isinstance(value, PbMap):
            for k, v in value.items():
                if isinstance(v, dict):
                    inner = to_pbtxt(v, indent + 2)
                    lines.append(
                        f"{pad}{key} {{\n{pad}  key: {json.dumps(k)}\n{pad}  value {{\n{inner}{pad}  }}\n{pad}}}"
                    )
                else:
                    lines.append(f"{pad}{key} {{ key: {json.dumps(k)} value: {_scalar(v)} }}")
        elif isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{to_pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            blocks = [f"{pad}  {{\n{to_pbtxt(v, indent + 2)}{pad}  }}" for v in value]
            lines.append(f"{pad}{key} [\n" + ",\n".join(blocks) + f"\n{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def to_json(cfg: dict[str, Any]) -> str:
    """The protobuf-JSON form Triton's model control accepts as a config override."""
    return json.dumps(cfg)


def _tensor(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    return {"name": name, "data_type": Const(TYPE[dtype]), "dims": dims}


def _batching(queue_size: int, timeout_us: int, queue_policy: bool) -> dict[str, Any]:
    batching: dict[str, Any] = {"max_queue_delay_microseconds": 0}  # measured: a delay taxes light load, gains nothing
    if queue_policy:
        batching["default_queue_policy"] = {
            "timeout_action": Const("REJECT"),
            "default_timeout_microseconds": timeout_us,
            "allow_timeout_override": True,
            "max_queue_size": queue_size,
        }
    return batching


def _version_policy(version: int) -> dict[str, Any]:
    return {"specific": {"versions": [version]}}


def pipeline_configs(
    spec: PipelineSpec,
    state: FeatureState,
    version: int,
    target: Target = "local",
    max_batch_size: int | None = None,
    queue_size: int = 2048,
    queue_timeout_us: int = 5_000_000,
    tensorrt: bool = False,
    dynamic_batching: bool = True,
    queue_policy: bool | None = None,
    serving: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The configs of a pipeline's served models, loading exactly ``version``: ``{"fused": ...}`` for the local
    target (one Python-backend model ``<p>``), ``{"ensemble", "preprocess", "model"}`` for gpu.

    ``dynamic_batching=False`` serves each request on its own (the benchmark's comparison point).
    ``queue_policy`` (bounded queue, reject after a timeout) defaults to on for the ``gpu`` target and off for
    ``local``: on the bundled Triton 2.51 any ``default_queue_policy``, even ``max_queue_size`` alone, made the
    dynamic batcher stall requests for up to ~500 ms under concurrency (measured; see benchmarks/README.md).
    ``serving``: settings measured by ``inferline bench tune`` for the served model (``instances``,
    ``max_queue_delay_us``, ``preferred_batch_size``), instead of one instance and no queue delay."""
    if target not in ("local", "gpu"):
        raise ValueError(f"target must be 'local' or 'gpu', got {target!r}")
    names = model_names(spec.name)
    mbs = max_batch_size or spec.model.max_batch_size
    contract = compile_contract(spec, state)  # the tensor names, datatypes and shapes every stage uses
    raw_inputs = [_tensor(t.name, t.datatype, list(t.dims)) for t in contract.inputs]
    features_out = [_tensor(t.name, t.datatype, list(t.dims)) for t in contract.model_inputs]
    model_out, status_out = (
        [_tensor(t.name, t.datatype, list(t.dims)) for t in part]
        for part in (contract.outputs[:-2], contract.outputs[-2:])
    )
    batching = _batching(queue_size, queue_timeout_us, target == "gpu" if queue_policy is None else queue_policy)
    instances = 1
    if serving:
        instances = int(serving.get("instances", 1))
        batching["max_queue_delay_microseconds"] = int(serving.get("max_queue_delay_us", 0))
        if serving.get("preferred_batch_size"):
            batching["preferred_batch_size"] = [int(b) for b in serving["preferred_batch_size"]]

    if target == "local":
        # the bundled server has no native onnxruntime backend, and each Python-backend hop costs more than the
        # feature math and the model together: validation, features and onnxruntime run in one model
        # (serving/backend/fused.py); version N reads release N's files from the two inner model directories
        fused = {
            "name": names["ensemble"],
            "backend": "python",
            "max_batch_size": mbs,
            "input": raw_inputs,
            "output": model_out + status_out,
            "instance_group": [{"count": instances, "kind": Const("KIND_CPU")}],
            **({"dynamic_batching": batching} if dynamic_batching else {}),
            "version_policy": _version_policy(version),
            "parameters": PbMap(
                {
                    "pipeline": {"string_value": spec.name},
                    "intra_op_threads": {"string_value": "1"},
                    "feature_state_from": {"string_value": names["preprocess"]},  # <repo>/<this>/N/feature_state.json
                    "onnx_model_from": {"string_value": names["model"]},  # <repo>/<this>/N/model.onnx
                }
            ),
        }
        return {"fused": fused}

    preprocess = {
        "name": names["preprocess"],
        "backend": "python",
        "max_batch_size": mbs,
        "input": raw_inputs,
        "output": features_out + status_out,
        # string parsing and validation are CPU work on either target; the GPU runs the model
        "instance_group": [{"count": 1, "kind": Const("KIND_CPU")}],
        **({"dynamic_batching": batching} if dynamic_batching else {}),
        "version_policy": _version_policy(version),
        "parameters": PbMap({"pipeline": {"string_value": spec.name}}),
    }
    model: dict[str, Any] = {
        "name": names["model"],
        "max_batch_size": mbs,
        "input": features_out,
        "output": model_out,
        "platform": "onnxruntime_onnx",
        "default_model_filename": "model.onnx",
        "instance_group": [{"count": instances, "kind": Const("KIND_GPU"), "gpus": [0]}],
    }
    if tensorrt:
        model["optimization"] = {
            "execution_accelerators": {
                "gpu_execution_accelerator": [
                    {
                        "name": "tensorrt",
                        "parameters": PbMap({"precision_mode": "FP32", "max_workspace_size_bytes": "1073741824"}),
                    }
                ]
            }
        }
    if dynamic_batching:
        model["dynamic_batching"] = batching
    model["version_policy"] = _version_policy(version)

    ensemble = {
        "name": names["ensemble"],
        "platform": "ensemble",
        "max_batch_size": mbs,
        "input": raw_inputs,
        "output": model_out + status_out,
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": names["preprocess"],
                    "model_version": version,  # pinned: features and model switch together
                    "input_map": PbMap({c.name: c.name for c in spec.input_columns}),
                    "output_map": PbMap(
                        {t: t for t in (*(i.name for i in contract.model_inputs), "status", "release")}
                    ),
                },
                {
                    "model_name": names["model"],
                    "model_version": version,  # pinned: features and model switch together
                    "input_map": PbMap({i.name: i.name for i in contract.model_inputs}),
                    "output_map": PbMap({t.name: t.name for t in contract.outputs[:-2]}),
                },
            ]
        },
    }
    return {"ensemble": ensemble, "preprocess": preprocess, "model": model}
