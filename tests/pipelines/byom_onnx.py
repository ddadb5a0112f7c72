"""The feature-vector spec again, under its own name: the pipeline of an ONNX file published with a spec."""

from __future__ import annotations

from dataclasses import replace

from tests.pipelines import byom_vector

SPEC = replace(byom_vector.SPEC, name="byom_onnx")
generate = byom_vector.generate
