"""A 3-class, numeric-only pipeline with no id and no timestamp, its rows sorted by class (as exported from a
spreadsheet): the built-in TabularNet, a stratified split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from inferline.features.rules import finite, ge
from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")

SPEC = PipelineSpec(
    name="byom_species",
    version=1,
    columns=(
        *(Column(name, "numeric", rules=(finite(), ge(0.0, name="negative"))) for name in FEATURES),
        Column("species", "label"),
    ),
    features=tuple(FeatureDef(name, "standardize", name) for name in FEATURES),
    label="species",
    classes=("setosa", "versicolor", "virginica"),
    model=ModelParams(hidden=(16,), epochs=20, batch_size=32, learning_rate=1e-2, max_batch_size=32),
)


def generate(n_rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    species = np.sort(rng.integers(0, 3, n_rows))  # sorted by class
    centers = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
    values = np.abs(centers[species] + rng.normal(0, 0.3, (n_rows, 4)))
    frame = pd.DataFrame(values, columns=list(FEATURES))
    frame["species"] = species.astype("int64")
    return frame
