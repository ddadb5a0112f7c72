"""What tests/unit/test_fuzz.py (the tests that start no process) and tests/system/test_fuzz.py (those that do) both
use: helpers and case tables kept in one place."""

from __future__ import annotations

import math
from importlib import resources

from hypothesis import strategies as st

from inferline.features.pipelines import fraud

SPEC = fraud.SPEC
API_DESCRIPTION = resources.files("inferline.serving") / "openapi" / "kserve-v2.yaml"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
WIRE_DATATYPE = {c.name: c.triton_dtype for c in SPEC.input_columns}


# ---------------------------------------------------------------------------------------------------------------
# requests shaped like the served model's: two thirds well-formed with hostile values (they reach the served
# model), a third with structural damage (names, datatypes, shapes, element counts, framing)

HOSTILE_FLOAT = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, -1e308, 5e-324])
HOSTILE_INT = st.integers(INT64_MIN, INT64_MAX) | st.sampled_from([INT64_MIN, INT64_MAX, INT64_MIN + 1, 0, -1])
