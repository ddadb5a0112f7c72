"""Specimens of three species: a multi-class test pipeline with an id column and no timestamp (stratified split).

``petal`` separates setosa from the other two; ``sepal`` separates versicolor from virginica. ``virginica_share``
moves rows between versicolor and virginica only, so the probability of one class pair shifts while setosa's
rows stay as they were."""

import numpy as np
import pandas as pd

from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec

SITES = ("north", "south", "east")

SPEC = PipelineSpec(
    name="species",
    version=1,
    columns=(
        Column("specimen_id", "id", unique=True),
        Column("petal", "numeric"),
        Column("sepal", "numeric"),
        Column("site", "categorical"),
        Column("species", "label"),
    ),
    features=(
        FeatureDef("petal_z", "standardize", "petal"),
        FeatureDef("sepal_z", "standardize", "sepal"),
        FeatureDef("site_idx", "vocabulary", "site", output="categorical"),
    ),
    label="species",
    classes=("setosa", "versicolor", "virginica"),
    model=ModelParams(hidden=(16,), epochs=6, batch_size=256, max_batch_size=64),
)


def generate(n_rows: int, seed: int = 0, virginica_share: float = 0.5) -> pd.DataFrame:
    """One third setosa; the rest virginica with probability ``virginica_share``, else versicolor."""
    rng = np.random.default_rng(seed)
    setosa = rng.random(n_rows) < 1 / 3
    virginica = ~setosa & (rng.random(n_rows) < virginica_share)
    species = np.where(setosa, 0, np.where(virginica, 2, 1)).astype("int64")
    petal = np.where(setosa, rng.normal(1.5, 0.3, n_rows), rng.normal(4.5, 0.5, n_rows))
    sepal = np.where(species == 2, rng.normal(6.5, 0.4, n_rows), rng.normal(5.5, 0.4, n_rows))
    frame = pd.DataFrame(
        {
            "specimen_id": [f"S{seed}-{i}" for i in range(n_rows)],
            "petal": petal,
            "sepal": np.where(setosa, rng.normal(5.0, 0.4, n_rows), sepal),
            "site": rng.choice(SITES, n_rows),
            "species": species,
        }
    )
    return frame.astype({c.name: c.raw_dtype for c in SPEC.columns})
