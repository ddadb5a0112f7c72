"""Validation throughput: inferline's dataset validation (policy normalization, pandera for the structure, the
compiled contract's evaluator for the rows, quarantine split) against plain pandera lazy validation of the same
schema (every rule as a pandera check: ``Contract.schema()``), on the same rows."""

from __future__ import annotations

import time
import unicodedata
from dataclasses import replace
from typing import Any

import numpy as np
from pandera.errors import SchemaErrors

from inferline.features.pipelines import fraud
from inferline.features.spec import PipelineSpec
from inferline.features.validation import build_schema, validate_frame
from inferline.features.vocabulary import TEXT_KINDS

__all__ = ["bench_validation"]


def _without_new_rules(spec: PipelineSpec) -> PipelineSpec:
    """The spec as it was before the protective text defaults (issue 16): no default ``max_length`` or
    ``forbid_code_points`` rules, no NFC normalization; what the new rules cost is the difference."""
    defaults = {"forbid_code_points", "max_length"}
    columns = tuple(
        replace(c, rules=tuple(r for r in c.rules if r.op not in defaults), normalization="none", defaults=False)
        if c.kind in TEXT_KINDS
        else c
        for c in spec.columns
    )
    return replace(spec, columns=columns)


def bench_validation(rows: int, reps: int, defect_share: float = 0.01) -> dict[str, Any]:
    """1 % of the rows carry one defect each, five kinds in turn (a negative amount, an unknown channel, a null
    country, mojibake beside genuine non-ASCII, a zero-width character in an id), and another 1 % an NFD
    description (valid: normalized to NFC and recorded)."""
    frame = fraud.generate(rows, seed=21)
    rng = np.random.default_rng(0)
    bad = rng.choice(rows, size=int(rows * defect_share) * 2, replace=False)
    bad, nfd = bad[: len(bad) // 2], bad[len(bad) // 2 :]
    frame.loc[bad[0::5], "amount"] = -1.0
    frame.loc[bad[1::5], "channel"] = "fax"
    frame.loc[bad[2::5], "country"] = None
    frame.loc[bad[3::5], "description"] = "Café MÃ¼ller"
    frame.loc[bad[4::5], "transaction_id"] = frame.loc[bad[4::5], "transaction_id"] + "\u200b"
    frame.loc[nfd, "description"] = unicodedata.normalize("NFD", "Électricité de France")
    schema = build_schema(fraud.SPEC)
    legacy = _without_new_rules(fraud.SPEC)
    legacy_found = len(bad) - len(bad[4::5])  # without the code-point sets, the U+200B in an id passes

    def plain() -> None:
        try:
            schema.validate(frame, lazy=True)
        except SchemaErrors:
            pass  # failures found, as expected: this side stops at pandera's report

    def inferline() -> None:
        result = validate_frame(frame, fraud.SPEC, source="bench")
        assert result.rows_quarantined == len(bad)

    def before() -> None:
        result = validate_frame(frame, legacy, source="bench")
        assert result.rows_quarantined == legacy_found

    series = (
        ("inferline_validate_frame", inferline),
        ("pandera_lazy", plain),
        ("inferline_without_new_rules", before),
    )
    times: dict[str, list[float]] = {name: [] for name, _ in series}
    for _ in range(reps):  # interleaved
        for name, fn in series:
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
        "ratio_new_rules_over_before": [
            b / a for a, b in zip(times["inferline_validate_frame"], times["inferline_without_new_rules"], strict=True)
        ],
    }
