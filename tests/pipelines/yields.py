"""Crop yields per plot: a regression test pipeline (a float label, ``classes=()``) with numeric features only (no
categorical feature, no timestamp: a random split)."""

import numpy as np
import pandas as pd

from inferline.features.rules import ge
from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec

SPEC = PipelineSpec(
    name="yields",
    version=1,
    columns=(
        Column("plot_id", "id", unique=True),
        Column("rain_mm", "numeric", rules=(ge(0, name="negative"),)),
        Column("sun_h", "numeric", rules=(ge(0, name="negative"),)),
        Column("tonnes", "label"),
    ),
    features=(
        FeatureDef("rain_z", "standardize", "rain_mm"),
        FeatureDef("sun_z", "standardize", "sun_h"),
    ),
    label="tonnes",
    classes=(),
    model=ModelParams(hidden=(16,), epochs=12, batch_size=256, learning_rate=0.05, max_batch_size=64),
)


def generate(n_rows: int, seed: int = 0, rain_factor: float = 1.0) -> pd.DataFrame:
    """``rain_factor`` scales the rain (a wetter season): the yields, and the model's predictions, move with it."""
    rng = np.random.default_rng(seed)
    rain = rng.gamma(8.0, 40.0, n_rows) * rain_factor
    sun = rng.normal(1500.0, 150.0, n_rows).clip(0)
    tonnes = 2.0 + 0.006 * rain + 0.001 * sun + rng.normal(0.0, 0.3, n_rows)
    frame = pd.DataFrame(
        {"plot_id": [f"P{seed}-{i}" for i in range(n_rows)], "rain_mm": rain, "sun_h": sun, "tonnes": tonnes}
    )
    return frame.astype({c.name: c.raw_dtype for c in SPEC.columns})
