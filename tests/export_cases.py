"""What tests/unit/test_export.py (the tests that start no process) and tests/system/test_export.py (those that do) both
use: helpers and case tables kept in one place."""

from __future__ import annotations

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2


def _parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())
