"""A feature-vector pipeline for a model trained outside inferline (published with --module/--checkpoint, or as an
ONNX file with this spec): FP32 [8] embeddings, binary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from inferline.features.rules import between, finite
from inferline.features.spec import Column, ModelParams, PipelineSpec

SPEC = PipelineSpec(
    name="byom_vector",
    version=1,
    columns=(
        Column("item_id", "id", unique=True),
        Column("embedding", "tensor", dtype="FP32", shape=(8,), rules=(finite(), between(-10.0, 10.0))),
        Column("label", "label", required=False),
    ),
    features=(),
    label="label",
    classes=("no", "yes"),
    model=ModelParams(max_batch_size=64),
)


def generate(n_rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    embedding = rng.normal(0, 1, (n_rows, 8)).astype(np.float32)
    return pd.DataFrame(
        {
            "item_id": [f"i{seed}-{i}" for i in range(n_rows)],
            "embedding": list(embedding),
            "label": (embedding[:, 0] > 0).astype("int64"),
        }
    )
