"""Feature kernels: one definition, used by training, the Triton preprocess model and the batch job.

A kernel maps one raw column to one feature column through a ``FrameBackend`` (numpy or cupy arrays). Fitted
values (vocabularies, statistics) come from ``FeatureState``, never from the data being scored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from inferline.features.backend import FrameBackend

__all__ = ["KERNELS", "Kernel"]

Kernel = Callable[[FrameBackend, Any, Mapping[str, Any]], Any]
TWO_PI = 2.0 * math.pi


def log1p(b: FrameBackend, s: Any, params: Mapping[str, Any]) -> Any:
    xp = b.xp
    return xp.log1p(xp.maximum(b.values(s, "float64"), 0.0))


def cyclic_hour_sin(b: FrameBackend, s: Any, params: Mapping[str, Any]) -> Any:
    return b.xp.sin(TWO_PI * b.hour_of_day(s) / 24.0)


def cyclic_hour_cos(b: FrameBackend, s: Any, params: Mapping[str, Any]) -> Any:
    return b.xp.cos(TWO_PI * b.hour_of_day(s) / 24.0)


def cyclic_weekday_sin(b: FrameBackend, s: Any, params: Mapping[str, Any]) -> Any:
    return b.xp.sin(TWO_PI * b.weekday(s) / 7.0)


def cyclic_weekday_cos(b: FrameBackend, s: Any, params: Mapping[str, Any]) -> Any:
    return b.xp.cos(TWO_PI * b.weekday(s) / 7.0)


def text_length(b: FrameBackend, s: Any, params: Mapping[str, Any]) -> Any:
    """log1p of the number of characters (0 for a null text)."""
    return b.xp.log1p(b.str_len(s))


def non_ascii_share(b: FrameBackend, s: Any, params: Mapping[str, Any]) -> Any:
    """Share of characters outside ASCII (0 for a null or empty text)."""
    n = b.str_len(s)
    return b.non_ascii_count(s) / b.xp.maximum(n, 1.0)


def vocabulary(b: FrameBackend, s: Any, params: Mapping[str, Any]) -> Any:
    """Vocabulary index with 0 as the unknown bucket; ``params['vocabulary']`` is fitted at training time."""
    return b.vocabulary_codes(s, list(params["vocabulary"]))


KERNELS: dict[str, Kernel] = {
    "log1p": log1p,
    "cyclic_hour_sin": cyclic_hour_sin,
    "cyclic_hour_cos": cyclic_hour_cos,
    "cyclic_weekday_sin": cyclic_weekday_sin,
    "cyclic_weekday_cos": cyclic_weekday_cos,
    "text_length": text_length,
    "non_ascii_share": non_ascii_share,
    "vocabulary": vocabulary,
}
