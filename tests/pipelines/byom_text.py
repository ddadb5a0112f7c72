"""A text classifier's pipeline: padded token ids INT64 [-1] with an attention mask, a small transformer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from inferline.features.rules import between
from inferline.features.spec import Column, ModelParams, PipelineSpec

LENGTH = 16
MARKER = 7  # a text is positive when this token occurs in it

SPEC = PipelineSpec(
    name="byom_text",
    version=1,
    columns=(
        Column("doc_id", "id", unique=True),
        Column("tokens", "tensor", dtype="INT64", shape=(-1,), rules=(between(0, 63, name="unknown_token"),)),
        Column("mask", "tensor", dtype="INT64", shape=(-1,), rules=(between(0, 1, name="not_a_mask"),)),
        Column("label", "label"),
    ),
    features=(),
    label="label",
    classes=("other", "marked"),
    model=ModelParams(
        factory="tests.pipelines.byom_models:tiny_transformer",
        factory_args={"vocab": 64, "dim": 16, "max_len": 64},
        epochs=3,
        batch_size=64,
        max_batch_size=32,
    ),
)


def generate(n_rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, LENGTH + 1, n_rows)
    tokens = rng.integers(8, 64, (n_rows, LENGTH))
    marked = rng.random(n_rows) < 0.4
    tokens[marked, 0] = MARKER
    mask = (np.arange(LENGTH)[None, :] < lengths[:, None]).astype(np.int64)
    tokens = tokens * mask  # padding is token 0
    return pd.DataFrame(
        {
            "doc_id": pd.Series([f"d{seed}-{i}" for i in range(n_rows)], dtype="string"),
            "tokens": list(tokens),
            "mask": list(mask),
            "label": marked.astype("int64"),
        }
    )
