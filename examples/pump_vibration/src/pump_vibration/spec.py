"""The pipeline of a model brought as an ONNX file: a row is one pump's vibration spectrum (a tensor column named
as the file's input, ``spectrum``) with its id and label; no factory, no training. ``generate(n_rows, seed)``
writes synthetic spectra for ``inferline check`` and ``inferline generate``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from inferline.features.rules import between, finite
from inferline.features.spec import Column, ModelParams, PipelineSpec

BANDS = 16
CLASSES = ("normal", "worn", "failing")

SPEC = PipelineSpec(
    name="pump_vibration",
    version=1,
    columns=(
        Column("pump_id", "id", unique=True),
        Column(
            "spectrum",  # the ONNX file's input name
            "tensor",
            dtype="FP32",  # the input's element type (tensor(float))
            shape=(BANDS,),  # its dims after the batch axis
            rules=(finite(), between(0.0, 50.0, name="out_of_range")),  # energy per band, in mm/s
        ),
        Column("state", "label"),  # the true class, in labelled data (never in requests)
    ),
    features=(),
    label="state",
    classes=CLASSES,  # the order of the file's logits
    model=ModelParams(max_batch_size=64),  # no factory: the model is the ONNX file
)


def spectra(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` spectra float32 [n, BANDS] and their class: wear lifts the high bands, a failing bearing adds a peak."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    bands = np.arange(BANDS)
    base = 4.0 * np.exp(-bands / 5.0) + 0.5
    out = base + rng.gamma(2.0, 0.15, (n, BANDS))
    out[labels >= 1] += 0.04 * bands  # worn: more energy at high frequencies
    peak = rng.integers(9, 14, n)
    failing = labels == 2
    out[failing, peak[failing]] += rng.uniform(1.0, 3.0, failing.sum())  # failing: a bearing's peak
    return out.astype(np.float32), labels


def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Seeded synthetic spectra: the same seed gives the same rows."""
    values, labels = spectra(n_rows, seed)
    return pd.DataFrame(
        {
            "pump_id": pd.Series([f"pump-{seed}-{i}" for i in range(n_rows)], dtype="string"),
            "spectrum": list(values),
            "state": labels.astype("int64"),
        }
    )
