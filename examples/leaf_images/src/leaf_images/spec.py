"""The pipeline: a row is one photo (a tensor column of raw pixels) with its id and label; the model is our own CNN
(by import path); ``generate(n_rows, seed)`` writes the synthetic rows ``inferline generate`` and ``inferline check``
use."""

from __future__ import annotations

import pandas as pd

from inferline.features.spec import Column, ModelParams, PipelineSpec
from leaf_images.photos import CLASSES, SIZE, photos

SPEC = PipelineSpec(
    name="leaf_images",
    version=1,
    columns=(
        Column("leaf_id", "id", unique=True),
        Column(
            "image",
            "tensor",
            dtype="UINT8",  # what callers send: raw pixels
            shape=(3, SIZE, SIZE),  # per row: channels, height, width
            model_dtype="FP32",  # what the model receives, after preprocess
            preprocess="leaf_images.preprocess:scale",  # our own function (numpy only)
        ),
        Column("disease", "label"),
    ),
    features=(),  # no tabular features: the tensor column is the model's input
    label="disease",
    classes=CLASSES,  # ("healthy", "rust", "blight")
    model=ModelParams(
        factory="leaf_images.model:build",  # our own module
        factory_args={"width": 16},
        epochs=4,
        batch_size=32,
        learning_rate=3e-3,
        max_batch_size=32,
    ),
)


def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Seeded synthetic photos: the same seed gives the same rows. A tensor column holds one array per row."""
    pixels, labels = photos(n_rows, seed)
    return pd.DataFrame(
        {
            "leaf_id": pd.Series([f"leaf-{seed}-{i}" for i in range(n_rows)], dtype="string"),
            "image": list(pixels),
            "disease": labels.astype("int64"),
        }
    )
