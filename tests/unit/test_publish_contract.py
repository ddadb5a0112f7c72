"""What publish checks before a release exists, and how it fails: the parity gate's tolerance (absolute and
relative, numpy ``allclose`` semantics), the output contract (the model's outputs against the spec, a dynamic batch
axis), a model factory that ignores the class count, and a full disk. Real models, real ONNX files, a real tmpfs;
one real tritonserver for the unscaled regression."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from inferline.core.errors import UserError
from inferline.core.files import atomic_write_parquet
from inferline.export.candidate import model_candidate
from inferline.export.publish import publish
from inferline.training.train import train
from tests.pipelines import byom_models, byom_vector
from tests.publish_contract_cases import THREE, _export


def test_an_onnx_file_without_a_dynamic_batch_axis_is_one_clear_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    _export(byom_models.VectorMLP(8, 3), tmp_path / "fixed.onnx", dynamic=False)
    with pytest.raises(UserError, match=r"input 'embedding' has shape \[4, 8\], a fixed batch size of 4") as info:
        publish(None, tmp_path / "repo", candidate=model_candidate(THREE, onnx_model=tmp_path / "fixed.onnx"))
    assert "dynamic batch axis" in str(info.value) and str(tmp_path / "fixed.onnx") in str(info.value)


def test_a_factory_whose_output_does_not_fit_the_classes_is_refused_when_built(tmp_path: Path) -> None:
    torch.manual_seed(0)
    torch.save(byom_models.VectorMLP(8, 5).state_dict(), tmp_path / "five.pt")
    factory = "tests.pipelines.byom_models:fixed_width"
    expected = r"answers \[2, 5\] for 2 rows, but the multiclass spec expects \[2, 3\]"
    with pytest.raises(UserError, match=expected):
        model_candidate(THREE, module=factory, checkpoint=tmp_path / "five.pt")
    # training with it: the same one-line refusal before the first step
    rows = byom_vector.generate(300, seed=1)
    rows["label"] = np.arange(len(rows)) % 3  # three classes
    atomic_write_parquet(tmp_path / "rows.parquet", rows)
    spec = replace(THREE, model=replace(THREE.model, factory=factory))
    with pytest.raises(UserError, match=expected):
        train([tmp_path / "rows.parquet"], spec, tmp_path / "runs", epochs=1, progress=False)
