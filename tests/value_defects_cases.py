"""What tests/unit/test_value_defects.py (the tests that start no process) and tests/system/test_value_defects_system.py
(those that do) both use: helpers and case tables kept in one place."""

from __future__ import annotations

from inferline.features.pipelines import fraud

SPEC = fraud.SPEC
