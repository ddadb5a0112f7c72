"""inferline features: pipeline specs, declarative rules, the compiled feature contract and the wire codec shared
by training, serving, batch and the monitor.

The names below are imported on first use (PEP 562), so ``inferline.features.kernels`` and ``.rules`` load with
numpy alone (the GPU check runs them where pandas is not installed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inferline.features.backend import FrameBackend, backend_for, get_backend
    from inferline.features.contract import Contract, compile_contract
    from inferline.features.rules import Rule
    from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec, SpecError, load_pipeline
    from inferline.features.state import FeatureMatrix, FeatureState, compute_features, fit_state
    from inferline.features.validation import FileLevelError, ValidationResult, build_schema, validate_frame

_WHERE = {
    "Column": "spec",
    "Contract": "contract",
    "FeatureDef": "spec",
    "FeatureMatrix": "state",
    "FeatureState": "state",
    "FileLevelError": "validation",
    "FrameBackend": "backend",
    "ModelParams": "spec",
    "PipelineSpec": "spec",
    "Rule": "rules",
    "SpecError": "spec",
    "ValidationResult": "validation",
    "backend_for": "backend",
    "build_schema": "validation",
    "compile_contract": "contract",
    "compute_features": "state",
    "fit_state": "state",
    "get_backend": "backend",
    "load_pipeline": "spec",
    "validate_frame": "validation",
}

__all__ = [
    "Column",
    "Contract",
    "FeatureDef",
    "FeatureMatrix",
    "FeatureState",
    "FileLevelError",
    "FrameBackend",
    "ModelParams",
    "PipelineSpec",
    "Rule",
    "SpecError",
    "ValidationResult",
    "backend_for",
    "build_schema",
    "compile_contract",
    "compute_features",
    "fit_state",
    "get_backend",
    "load_pipeline",
    "validate_frame",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'inferline.features' has no attribute {name!r}")
    return getattr(importlib.import_module(f"inferline.features.{_WHERE[name]}"), name)
