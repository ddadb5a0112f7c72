"""inferline export: ONNX export, parity gate, Triton configs, atomic publish and the release registry.

Names are imported on first use (PEP 562), so a reader of releases (the batch workers, the monitor) does not pay
for torch, which only exporting needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inferline.export.config import model_names, pipeline_configs, to_json, to_pbtxt
    from inferline.export.loadcheck import LoadCheckReport, ReleaseUnloadable, check_release_loads
    from inferline.export.parity import ParityGateFailed, ParityReport, run_parity_gate
    from inferline.export.publish import PublishResult, activate, export_onnx, publish, set_current
    from inferline.export.registry import Registry, RegistryError
    from inferline.export.runtime import choose_providers, onnx_session

_MODULES = {
    "inferline.export.config": ("model_names", "pipeline_configs", "to_json", "to_pbtxt"),
    "inferline.export.loadcheck": ("LoadCheckReport", "ReleaseUnloadable", "check_release_loads"),
    "inferline.export.parity": ("ParityGateFailed", "ParityReport", "run_parity_gate"),
    "inferline.export.publish": ("PublishResult", "activate", "export_onnx", "publish", "set_current"),
    "inferline.export.registry": ("Registry", "RegistryError"),
    "inferline.export.runtime": ("choose_providers", "onnx_session"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'export' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


__all__ = [
    "LoadCheckReport",
    "ParityGateFailed",
    "ParityReport",
    "PublishResult",
    "Registry",
    "RegistryError",
    "ReleaseUnloadable",
    "activate",
    "check_release_loads",
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
