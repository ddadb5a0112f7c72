"""Validation throughput: inferline's dataset validation (policy normalization, pandera for the structure, the
compiled contract's evaluator for the rows, quarantine split) against plain pandera lazy validation of the same
schema (every rule as a pandera check: ``Contract.schema()``), on the same rows."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pandera.errors import SchemaErrors

from inferline.features.pipelines import fraud
from inferline.features.validation import build_schema, validate_frame

__all__ = ["bench_validation"]


def bench_validation(rows: int, reps: int, defect_share: float = 0.01) -> dict[str, Any]:
    frame = fraud.generate(rows, seed=21)
    rng = np.random.default_rng(0)
    bad = rng.choice(rows, size=int(rows * defect_share), replace=False)
    frame.loc[bad[0::3], "amount"] = -1.0
    frame.loc[bad[1::3], "channel"] = "fax"
    frame.loc[bad[2::3], "country"] = None
    schema = build_schema(fraud.SPEC)

    def plain() -> None:
        try:
            schema.validate(frame, lazy=True)
        except SchemaErrors:
            pass  # failures found, as expected: this side stops at pandera's report

    def inferline() -> None:
        result = validate_frame(frame, fraud.SPEC, source="bench")
        assert result.rows_quarantined == len(bad)

    times: dict[str, list[float]] = {"inferline_validate_frame": [], "pandera_lazy": []}
    for _ in range(reps):  # interleaved
        for name, fn in (("inferline_validate_frame", inferline), ("pandera_lazy", plain)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {
        "rows": rows,
        "defect_share": defect_share,
        "rows_per_s": {k: [rows / t for t in v] for k, v in times.items()},
        "ratio_inferline_over_pandera": [
            (rows / a) / (rows / b)
            for a, b in zip(times["inferline_validate_frame"], times["pandera_lazy"], strict=True)
        ],
    }
