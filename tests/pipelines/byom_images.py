"""An image classifier's pipeline: uint8 [3, 64, 64] pixels, scaled by a declared preprocessing function, classified
by a small ResNet (tests/pipelines/byom_models.py). No id, no timestamp."""

from __future__ import annotations

import pandas as pd

from inferline.features.rules import between
from inferline.features.spec import Column, ModelParams, PipelineSpec

SPEC = PipelineSpec(
    name="byom_images",
    version=1,
    columns=(
        Column(
            "image",
            "tensor",
            dtype="UINT8",
            shape=(3, 64, 64),
            model_dtype="FP32",
            preprocess="tests.pipelines.byom_functions:scale_pixels",
            rules=(between(0, 250, name="pixel_out_of_range"),),
        ),
        Column("label", "label"),
    ),
    features=(),
    label="label",
    classes=("red", "green", "blue"),
    model=ModelParams(
        factory="tests.pipelines.byom_models:small_resnet",
        factory_args={"width": 8},
        epochs=2,
        batch_size=32,
        learning_rate=3e-3,
        max_batch_size=16,
    ),
)


def generate(n_rows: int, seed: int) -> pd.DataFrame:
    from tests.pipelines.byom_functions import images

    pixels, labels = images(n_rows, seed)
    return pd.DataFrame({"image": list(pixels.reshape(n_rows, -1)), "label": labels.astype("int64")})
