"""Triton model configurations as ``ModelConfig`` messages (``tritonclient``'s ``model_config_pb2``), rendered to
config.pbtxt (protobuf text format, on disk) and JSON (protobuf JSON, ``load_model`` overrides).

Building the messages rather than text lets protobuf check every field name, enum and type as the config is made,
and every reader (``release.switch``, ``export.gate``, the benchmarks) edits them the same way: parse, set, print.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from google.protobuf import json_format, text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelDynamicBatching, ModelInput, ModelOutput

from inferline.features.contract import compile_contract
from inferline.features.spec import PipelineSpec
from inferline.features.state import FeatureState
from inferline.release.registry import model_names

__all__ = ["Target", "model_names", "pipeline_configs", "to_json", "to_pbtxt"]

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


def to_pbtxt(config: ModelConfig) -> str:
    """The config.pbtxt text of ``config`` (protobuf text format, which Triton reads from a model directory)."""
    text: str = text_format.MessageToString(config)
    return text


def to_json(config: ModelConfig) -> str:
    """The protobuf-JSON form Triton's model control accepts as a config override (proto field names)."""
    text: str = json_format.MessageToJson(config, preserving_proto_field_name=True)
    return text


def _tensor(kind: type[Any], name: str, dtype: str, dims: list[int]) -> Any:
    """A ``ModelInput`` or ``ModelOutput`` (``kind``) of one contract tensor."""
    return kind(name=name, data_type=TYPE[dtype], dims=dims)


def _batching(queue_size: int, timeout_us: int, queue_policy: bool) -> ModelDynamicBatching:
    batching = ModelDynamicBatching(max_queue_delay_microseconds=0)  # measured: a delay taxes light load, gains nothing
    if queue_policy:
        policy = batching.default_queue_policy
        policy.timeout_action = policy.REJECT
        policy.default_timeout_microseconds = timeout_us
        policy.allow_timeout_override = True
        policy.max_queue_size = queue_size
    return batching


def _pin(config: ModelConfig, version: int) -> None:
    """Load exactly release ``version`` of ``config``'s model (a specific version policy)."""
    config.version_policy.specific.versions[:] = [version]


def _string_parameters(config: ModelConfig, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value


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
) -> dict[str, ModelConfig]:
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
    raw_inputs = [_tensor(ModelInput, t.name, t.datatype, list(t.dims)) for t in contract.inputs]
    features_in = [_tensor(ModelInput, t.name, t.datatype, list(t.dims)) for t in contract.model_inputs]
    features_out = [_tensor(ModelOutput, t.name, t.datatype, list(t.dims)) for t in contract.model_inputs]
    model_out, status_out = (
        [_tensor(ModelOutput, t.name, t.datatype, list(t.dims)) for t in part]
        for part in (contract.outputs[:-2], contract.outputs[-2:])
    )
    batching = _batching(queue_size, queue_timeout_us, target == "gpu" if queue_policy is None else queue_policy)
    instances = 1
    if serving:
        instances = int(serving.get("instances", 1))
        batching.max_queue_delay_microseconds = int(serving.get("max_queue_delay_us", 0))
        if serving.get("preferred_batch_size"):
            batching.preferred_batch_size[:] = [int(b) for b in serving["preferred_batch_size"]]

    if target == "local":
        # the bundled server has no native onnxruntime backend, and each Python-backend hop costs more than the
        # feature math and the model together: validation, features and onnxruntime run in one model
        # (serving/backend/fused.py); version N reads release N's files from the two inner model directories
        fused = ModelConfig(
            name=names["ensemble"],
            backend="python",
            max_batch_size=mbs,
            input=raw_inputs,
            output=model_out + status_out,
        )
        fused.instance_group.add(count=instances, kind="KIND_CPU")
        if dynamic_batching:
            fused.dynamic_batching.CopyFrom(batching)
        _pin(fused, version)
        _string_parameters(
            fused,
            {
                "pipeline": spec.name,
                "intra_op_threads": "1",
                "feature_state_from": names["preprocess"],  # <repo>/<this>/N/feature_state.json
                "onnx_model_from": names["model"],  # <repo>/<this>/N/model.onnx
            },
        )
        return {"fused": fused}

    preprocess = ModelConfig(
        name=names["preprocess"],
        backend="python",
        max_batch_size=mbs,
        input=raw_inputs,
        output=features_out + status_out,
    )
    # string parsing and validation are CPU work on either target; the GPU runs the model
    preprocess.instance_group.add(count=1, kind="KIND_CPU")
    if dynamic_batching:
        preprocess.dynamic_batching.CopyFrom(batching)
    _pin(preprocess, version)
    _string_parameters(preprocess, {"pipeline": spec.name})

    model = ModelConfig(
        name=names["model"],
        max_batch_size=mbs,
        input=features_in,
        output=model_out,
        platform="onnxruntime_onnx",
        default_model_filename="model.onnx",
    )
    model.instance_group.add(count=instances, kind="KIND_GPU", gpus=[0])
    if tensorrt:
        accelerator = model.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters.update({"precision_mode": "FP32", "max_workspace_size_bytes": "1073741824"})
    if dynamic_batching:
        model.dynamic_batching.CopyFrom(batching)
    _pin(model, version)

    ensemble = ModelConfig(
        name=names["ensemble"],
        platform="ensemble",
        max_batch_size=mbs,
        input=raw_inputs,
        output=model_out + status_out,
    )
    steps = ensemble.ensemble_scheduling.step
    first = steps.add(model_name=names["preprocess"], model_version=version)  # pinned: features and model switch
    first.input_map.update({c.name: c.name for c in spec.input_columns})
    first.output_map.update({t: t for t in (*(i.name for i in contract.model_inputs), "status", "release")})
    second = steps.add(model_name=names["model"], model_version=version)  # together
    second.input_map.update({i.name: i.name for i in contract.model_inputs})
    second.output_map.update({t.name: t.name for t in contract.outputs[:-2]})
    return {"ensemble": ensemble, "preprocess": preprocess, "model": model}
