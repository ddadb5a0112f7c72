"""The pipeline: what a row is (columns and their rules), the model's features, the model (our own module, by import
path), and ``generate(n_rows, seed)``, the synthetic rows ``inferline generate`` and ``inferline check`` use."""

from __future__ import annotations

import numpy as np
import pandas as pd

from inferline.features.rules import between, ge, one_of
from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec

SOILS = ("clay", "loam", "sand")

SPEC = PipelineSpec(
    name="crop_yield",
    version=1,
    columns=(
        Column("plot_id", "id", unique=True),
        Column("rain_mm", "numeric", rules=(ge(0, name="negative"),)),
        Column("temperature_c", "numeric", rules=(between(-10.0, 45.0, name="implausible"),)),
        Column("fertilizer_kg", "numeric", rules=(ge(0, name="negative"),)),
        Column("soil", "categorical", rules=(one_of(SOILS, name="unknown_soil"),)),
        Column("tonnes_per_ha", "label"),
    ),
    features=(
        FeatureDef("rain_z", "standardize", "rain_mm"),
        FeatureDef("temperature_z", "standardize", "temperature_c"),
        FeatureDef("fertilizer_sqrt", "crop_yield.kernels:SQRT", "fertilizer_kg"),  # our own kernel
        FeatureDef("soil_idx", "vocabulary", "soil", output="categorical"),
    ),
    label="tonnes_per_ha",
    classes=(),  # no classes: regression
    model=ModelParams(
        factory="crop_yield.model:build",  # our own module
        factory_args={"hidden": 32},
        epochs=40,
        batch_size=128,
        learning_rate=2e-2,
        max_batch_size=64,
    ),
)


def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Seeded synthetic plots: the same seed gives the same rows."""
    rng = np.random.default_rng(seed)
    rain = rng.gamma(8.0, 60.0, n_rows)
    temperature = rng.normal(18.0, 4.0, n_rows)
    fertilizer = rng.uniform(0.0, 200.0, n_rows)
    soil = rng.choice(SOILS, n_rows, p=[0.3, 0.5, 0.2])
    soil_effect = np.select([soil == "clay", soil == "loam"], [0.3, 0.6], 0.0)
    tonnes = (
        2.0
        + 0.004 * rain
        - 0.02 * (temperature - 20.0) ** 2
        + 0.15 * np.sqrt(fertilizer)
        + soil_effect
        + rng.normal(0.0, 0.2, n_rows)
    )
    frame = pd.DataFrame(
        {
            "plot_id": [f"plot-{seed}-{i}" for i in range(n_rows)],
            "rain_mm": rain,
            "temperature_c": temperature,
            "fertilizer_kg": fertilizer,
            "soil": soil,
            "tonnes_per_ha": tonnes,
        }
    )
    return frame.astype({c.name: c.raw_dtype for c in SPEC.columns})
