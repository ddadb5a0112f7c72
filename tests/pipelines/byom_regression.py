"""A regression pipeline with signed numeric inputs (identity kept raw, a standardized one, a pipeline kernel)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from inferline.features.rules import between, finite
from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec

SPEC = PipelineSpec(
    name="byom_regression",
    version=1,
    columns=(
        Column("reading_id", "id", unique=True),
        Column("temperature", "numeric", rules=(finite(), between(-60.0, 60.0, name="implausible"))),
        Column("balance_change", "numeric", rules=(finite(),)),
        Column("target", "label"),
    ),
    features=(
        FeatureDef("temperature", "identity", "temperature", scale="none"),
        FeatureDef("temperature_z", "standardize", "temperature"),
        FeatureDef("balance_root", "tests.pipelines.byom_functions:SIGNED_SQRT", "balance_change"),
    ),
    label="target",
    classes=(),
    model=ModelParams(
        factory="tests.pipelines.byom_models:regression_mlp",
        factory_args={"hidden": 16},
        epochs=4,
        batch_size=64,
        learning_rate=1e-2,
        max_batch_size=64,
    ),
)


def generate(n_rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    temperature = rng.uniform(-20, 35, n_rows)
    balance = rng.normal(0, 100, n_rows)
    target = 0.05 * temperature - 0.1 * np.sign(balance) * np.sqrt(np.abs(balance)) + rng.normal(0, 0.1, n_rows)
    return pd.DataFrame(
        {
            "reading_id": [f"r{seed}-{i}" for i in range(n_rows)],
            "temperature": temperature,
            "balance_change": balance,
            "target": target,
        }
    )
