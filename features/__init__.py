"""inferline features: pipeline specs, declarative rules, the compiled feature contract and the wire codec shared
by training, serving, batch and the monitor.

The names below are imported on first use (PEP 562), so ``inferline.features.kernels`` and ``.rules`` load with
numpy alone (the GPU check runs them where pandas is not installed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from inferline.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from inferline.features.backend import FrameBackend, backend_for, get_backend
    from inferline.features.contract import Contract, compile_contract
    from inferline.features.rules import Rule
    from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec, SpecError, load_pipeline
    from inferline.features.state import FeatureMatrix, FeatureState, compute_features, fit_state
    from inferline.features.validation import FileLevelError, ValidationResult, build_schema, validate_frame

__getattr__, __all__ = lazy_attributes(
    __name__,
    {
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
    },
)
