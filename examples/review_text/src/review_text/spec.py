"""The pipeline: a row is one review's token ids (a tensor column of any length) with its id and label; the model
is our own text classifier (by import path); ``generate(n_rows, seed)`` writes synthetic reviews, tokenized."""

from __future__ import annotations

import numpy as np
import pandas as pd

from inferline.features.rules import between
from inferline.features.spec import Column, ModelParams, PipelineSpec
from review_text.tokenizer import FILLER, MAX_TOKENS, NEGATIVE, POSITIVE, VOCABULARY, encode

SPEC = PipelineSpec(
    name="review_text",
    version=1,
    columns=(
        Column("review_id", "id", unique=True),
        Column(
            "tokens",
            "tensor",
            dtype="INT64",  # token ids, what the model's embedding takes as they are
            shape=(-1,),  # per row: any number of tokens
            rules=(between(0, len(VOCABULARY) - 1, name="unknown_token"),),  # ids of our vocabulary only
        ),
        Column("sentiment", "label"),
    ),
    features=(),  # no tabular features: the tensor column is the model's input
    label="sentiment",
    classes=("negative", "positive"),
    model=ModelParams(
        factory="review_text.model:build",  # our own module
        factory_args={"vocabulary": len(VOCABULARY), "dim": 16},
        epochs=4,
        batch_size=64,
        learning_rate=1e-2,
        max_batch_size=64,
    ),
)


def reviews(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` synthetic reviews and their sentiment (1 positive): a few words of their sentiment, sometimes one of
    the other, among filler words."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    texts = []
    for label in labels:
        own, other = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
        words = [*rng.choice(own, rng.integers(1, 4)), *rng.choice(FILLER, rng.integers(3, 18))]
        if rng.random() < 0.3:
            words.append(rng.choice(other))
        texts.append(" ".join(rng.permutation(words)))
    return texts, labels


def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Seeded synthetic reviews, tokenized and padded to one length: the same seed gives the same rows."""
    texts, labels = reviews(n_rows, seed)
    return pd.DataFrame(
        {
            "review_id": pd.Series([f"review-{seed}-{i}" for i in range(n_rows)], dtype="string"),
            "tokens": list(encode(texts, length=MAX_TOKENS)),
            "sentiment": labels.astype("int64"),
        }
    )
