"""Hostile model files at publish time (SECURITY.md, case 9): refused before staging, the repository untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from inferline.export.publish import publish
from inferline.export.safety import UnsafeModel
from inferline.training.train import RunResult

from .conftest import Published


def snapshot(repository: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repository)): p.read_bytes() for p in sorted(repository.rglob("*")) if p.is_file()}


@pytest.fixture
def repository(published: Published, tmp_path: Path) -> Path:
    copy = tmp_path / "triton_models"
    shutil.copytree(published.repository, copy)
    return copy


def external(source: Path, target: Path, location: str) -> Path:
    """The real model with its first initializer moved to an external-data reference at ``location``."""
    model = onnx.load(str(source))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize(
    ("location", "says"),
    [
        ("../../etc/passwd", "outside the model directory"),
        ("/etc/passwd", "an absolute path"),
        ("weights.bin", "a symlink (to /etc/passwd)"),
        ("weights.bin.missing", "external file"),
    ],
)
def test_external_data_anywhere_is_refused(
    published: Published, run: RunResult, repository: Path, tmp_path: Path, location: str, says: str
) -> None:
    source = published.repository / "fraud_model" / "2" / "model.onnx"
    hostile = external(source, tmp_path / "upload" / "model.onnx", location)
    os.symlink("/etc/passwd", tmp_path / "upload" / "weights.bin")
    before = snapshot(repository)
    with pytest.raises(UnsafeModel, match="external file") as err:
        publish(run.run_dir, repository, onnx_model=hostile)
    assert says in str(err.value)
    assert snapshot(repository) == before


def test_truncated_oversized_and_symlinked_models_are_refused(
    published: Published, run: RunResult, repository: Path, tmp_path: Path
) -> None:
    source = published.repository / "fraud_model" / "2" / "model.onnx"
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 3])
    link = tmp_path / "link.onnx"
    link.symlink_to(source)
    before = snapshot(repository)
    with pytest.raises(UnsafeModel, match=r"not a readable ONNX model|no graph nodes"):
        publish(run.run_dir, repository, onnx_model=truncated)
    with pytest.raises(UnsafeModel, match="over the 1,000-byte limit"):
        publish(run.run_dir, repository, onnx_model=source, max_model_bytes=1_000)
    with pytest.raises(UnsafeModel, match="is a symlink"):
        publish(run.run_dir, repository, onnx_model=link)
    assert snapshot(repository) == before


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_a_pickle_payload_is_refused_and_never_run(
    run: RunResult, repository: Path, tmp_path: Path
) -> None:
    hostile_run = tmp_path / "run"
    shutil.copytree(run.run_dir, hostile_run)
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "payload": _Payload(marker)}, hostile_run / "checkpoint.pt")
    before = snapshot(repository)
    with pytest.raises(ValueError, match="not a weights-only checkpoint"):
        publish(hostile_run, repository)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "inferline.export",
            "publish",
            "--repository",
            str(repository),
            "--run",
            str(hostile_run),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode != 0 and "weights-only" in cli.stdout + cli.stderr
    assert not marker.exists(), "the pickle payload ran"
    assert snapshot(repository) == before
