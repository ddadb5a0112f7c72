from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from inferline.export.config import pipeline_configs, to_json, to_pbtxt
from inferline.features.pipelines import fraud
from inferline.features.state import FeatureState
from inferline.release.runtime import choose_providers
from inferline.training.train import RunResult
from tests.export_cases import _parse


@pytest.mark.parametrize("target", ["local", "gpu"])
def test_configs_are_valid_triton_model_configs(run: RunResult, target: str) -> None:
    state = FeatureState.load(run.run_dir / "feature_state.json")
    configs = pipeline_configs(fraud.SPEC, state, 5, target, tensorrt=True)  # type: ignore[arg-type]
    parsed = {k: _parse(to_pbtxt(c)) for k, c in configs.items()}
    for key, cfg in configs.items():  # the JSON form (model-control overrides) says the same thing
        same = json_format.Parse(to_json(cfg), model_config_pb2.ModelConfig())
        assert same == parsed[key]
    if target == "local":  # one fused Python-backend model, called by the pipeline's name
        assert set(parsed) == {"fused"}
        model = parsed["fused"]
        assert model.name == "fraud" and model.backend == "python" and not model.platform
        assert [i.name for i in model.input] == [c.name for c in fraud.SPEC.input_columns]
        assert [o.name for o in model.output] == ["probabilities", "predicted_class", "status", "release"]
        assert model.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert model.instance_group[0].count == 1
        params = {k: v.string_value for k, v in model.parameters.items()}
        assert params == {
            "pipeline": "fraud",
            "intra_op_threads": "1",
            "feature_state_from": "fraud_preprocess",
            "onnx_model_from": "fraud_model",
        }
        assert not model.dynamic_batching.HasField("default_queue_policy"), "stalls the 2.51 batcher (measured)"
    else:
        model = parsed["model"]
        queue = model.dynamic_batching.default_queue_policy
        assert queue.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT and queue.max_queue_size == 2048
        assert model.platform == "onnxruntime_onnx"
        assert model.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert model.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
        ensemble = parsed["ensemble"]
        steps = [s.model_name for s in ensemble.ensemble_scheduling.step]
        assert steps == ["fraud_preprocess", "fraud_model"]
        assert all(s.model_version == 5 for s in ensemble.ensemble_scheduling.step)  # release 5's pair, never mixed
        assert [i.name for i in ensemble.input] == [c.name for c in fraud.SPEC.input_columns]
        assert {o.name for o in ensemble.output} == {"probabilities", "predicted_class", "status", "release"}
    assert model.max_batch_size == fraud.SPEC.model.max_batch_size
    assert list(model.version_policy.specific.versions) == [5]
    assert model.HasField("dynamic_batching") and model.dynamic_batching.max_queue_delay_microseconds == 0


def test_provider_choice() -> None:
    assert choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    auto = choose_providers(
        "auto", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], tensorrt=True
    )
    assert [p[0] if isinstance(p, tuple) else p for p in auto] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="install the GPU extra"):
        choose_providers("cuda", ["CPUExecutionProvider"])


def test_an_onnx_file_whose_inputs_are_named_otherwise_is_refused_saying_both_fixes(tmp_path: Path) -> None:
    """A ready-made file's input names differ from the spec's tensor columns: the one-line error names both and the
    two ways out (rename the spec's columns, which needs no export, or export again), and the tutorial's page."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from inferline.core.errors import user_message
    from inferline.export.head import HeadError, attach_head

    weights = numpy_helper.from_array(np.zeros((16, 3), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])],
        "given",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [weights],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "given.onnx")
    with pytest.raises(HeadError) as refused:
        attach_head(tmp_path / "given.onnx", tmp_path / "out.onnx", "multiclass", 3, input_names=["spectrum"])
    message = user_message(refused.value)
    assert "inputs are ['x'], but the spec's model inputs are ['spectrum']" in message
    assert "name the spec's tensor columns as the graph's inputs (['x'])" in message
    assert message.endswith("(docs: docs/tutorials/onnx-file.md#2-what-the-file-must-be)")
