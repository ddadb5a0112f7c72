"""A word-level tokenizer: a review -> token ids. numpy only; callers run it (the server receives token ids).

Id 0 is padding and 1 an unknown word. ``encode`` pads every review of one call to the longest of them (or to
``length``): a request holds one shape, and the model ignores the padding."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

PAD, UNKNOWN = 0, 1
POSITIVE = ("great", "love", "excellent", "perfect", "comfortable", "sturdy", "recommend", "happy", "fast", "works")
NEGATIVE = ("broken", "terrible", "slow", "returned", "waste", "poor", "disappointed", "cheap", "refund", "stopped")
FILLER = (
    "the", "a", "it", "this", "product", "arrived", "i", "was", "and", "very", "after", "one", "week", "my", "with",
    "is", "for", "kids", "price", "box", "battery", "size", "color", "quality", "shipping",
)  # fmt: skip
VOCABULARY = ("<pad>", "<unk>", *sorted({*POSITIVE, *NEGATIVE, *FILLER}))
IDS = {word: i for i, word in enumerate(VOCABULARY)}
MAX_TOKENS = 32  # longer reviews are cut


def token_ids(text: str) -> list[int]:
    """One review's token ids, unpadded (at most ``MAX_TOKENS``)."""
    return [IDS.get(word, UNKNOWN) for word in re.findall(r"[a-z']+", text.lower())][:MAX_TOKENS]


def encode(texts: Sequence[str], length: int | None = None) -> np.ndarray:
    """Reviews -> int64 [n, length] token ids, padded with ``PAD`` to ``length`` (default: the longest)."""
    ids = [token_ids(t) for t in texts]
    width = length if length is not None else max((len(i) for i in ids), default=1)
    out = np.full((len(ids), width), PAD, dtype=np.int64)
    for row, i in enumerate(ids):
        out[row, : min(len(i), width)] = i[:width]
    return out
