"""inferline features: pipeline specs, validation, and the feature kernels shared by training, serving and batch."""

from inferline.features.backend import FrameBackend, backend_for, get_backend
from inferline.features.contract import Contract, compile_contract
from inferline.features.rules import Rule
from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec, SpecError, load_pipeline
from inferline.features.state import FeatureMatrix, FeatureState, compute_features, fit_state
from inferline.features.validation import FileLevelError, ValidationResult, build_schema, validate_frame

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
