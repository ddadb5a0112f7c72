"""inferline export: ONNX export, parity gate, Triton configs, atomic publish and the release registry."""

from export.config import model_names, pipeline_configs, to_json, to_pbtxt
from export.parity import ParityGateFailed, ParityReport, run_parity_gate
from export.publish import PublishResult, activate, export_onnx, publish, set_current
from export.registry import Registry, RegistryError
from export.runtime import choose_providers, onnx_session

__all__ = [
    "ParityGateFailed",
    "ParityReport",
    "PublishResult",
    "Registry",
    "RegistryError",
    "activate",
    "choose_providers",
    "export_onnx",
    "model_names",
    "onnx_session",
    "pipeline_configs",
    "publish",
    "run_parity_gate",
    "set_current",
    "to_json",
    "to_pbtxt",
]
