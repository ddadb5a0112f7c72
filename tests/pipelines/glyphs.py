"""Hand-drawn glyphs: a binary test pipeline with a tensor column (the pixels, a fixed 4 x 4 image), one tabular
numeric feature, and no id or timestamp column (labels cannot be joined; a stratified split)."""

import numpy as np
import pandas as pd

from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec

SPEC = PipelineSpec(
    name="glyphs",
    version=1,
    columns=(
        Column("pixels", "tensor", dtype="FP32", shape=(4, 4)),
        Column("ink", "numeric"),
        Column("marked", "label"),
    ),
    features=(FeatureDef("ink_z", "standardize", "ink"),),
    label="marked",
    classes=("blank", "mark"),
    model=ModelParams(hidden=(16,), epochs=4, batch_size=256, max_batch_size=64),
)


def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    marked = (rng.random(n_rows) < 0.4).astype("int64")
    images = rng.normal(0.0, 1.0, (n_rows, 4, 4)).astype("float32")
    images[marked == 1, 1:3, 1:3] += 2.0
    frame = pd.DataFrame(
        {
            "pixels": list(images.reshape(n_rows, 16)),  # Parquet: one flat list of 16 values per row
            "ink": images.reshape(n_rows, -1).clip(0).sum(axis=1).astype("float64"),
            "marked": marked,
        }
    )
    return frame.astype({c.name: c.raw_dtype for c in SPEC.columns})
