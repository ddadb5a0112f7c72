"""The image column's preprocessing function, named in the spec by import path ("leaf_images.preprocess:scale").

numpy only (no torch): the server imports this module to turn each request's raw pixels into the model's input, so
it is kept light. inferline calls it as ``fn(xp, batch)`` on the valid rows of a batch, ``batch`` being the raw
pixels [n, 3, 32, 32] uint8 and ``xp`` the array namespace (numpy, or cupy on a GPU); what it returns is cast to
the column's ``model_dtype`` and handed to the model."""

from __future__ import annotations

from typing import Any


def scale(xp: Any, batch: Any) -> Any:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1]."""
    return batch.astype("float32") / 127.5 - 1.0
