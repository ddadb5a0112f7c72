"""Loan default scoring: a second pipeline, written as a spec only."""

import numpy as np
import pandas as pd

from inferline.features.rules import ge
from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec

SPEC = PipelineSpec(
    name="loans",
    version=1,
    columns=(
        Column("loan_id", "id", unique=True),
        Column("applied_at", "timestamp"),
        Column("income", "numeric", rules=(ge(0, name="negative"),)),
        Column("purpose", "categorical"),
        Column("defaulted", "label"),
    ),
    features=(
        FeatureDef("log_income", "log1p", "income"),
        FeatureDef("month_sin", "cyclic_weekday_sin", "applied_at"),
        FeatureDef("purpose_idx", "vocabulary", "purpose", output="categorical"),
    ),
    label="defaulted",
    classes=("repaid", "defaulted"),
    model=ModelParams(hidden=(16,), epochs=2, max_batch_size=64),
)


def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    purpose = rng.choice(["car", "home", "study", "travel"], n_rows)
    income = rng.lognormal(10, 0.5, n_rows)
    risk = (purpose == "travel") * 1.5 - (np.log(income) - 10) * 2
    defaulted = (rng.random(n_rows) < 1 / (1 + np.exp(-(risk - 2.5)))).astype("int64")
    frame = pd.DataFrame(
        {
            "loan_id": [f"L{seed}-{i}" for i in range(n_rows)],
            "applied_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 10**7, n_rows), "s"),
            "income": income,
            "purpose": purpose,
            "defaulted": defaulted,
        }
    )
    return frame.astype({c.name: c.raw_dtype for c in SPEC.columns})
