"""What publish checks before a release exists, and how it fails: the parity gate's tolerance (absolute and
relative, numpy ``allclose`` semantics), the output contract (the model's outputs against the spec, a dynamic batch
axis), a model factory that ignores the class count, and a full disk. Real models, real ONNX files, a real tmpfs;
one real tritonserver for the unscaled regression."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch

from inferline.core.errors import UserError
from inferline.core.files import atomic_write_parquet, sha256_file
from inferline.export.publish import PublishFailed, publish
from inferline.features.contract import compile_contract
from inferline.features.spec import write_spec
from inferline.features.state import FeatureState
from inferline.release.registry import Registry
from inferline.serving.client import InferlineClient
from inferline.serving.server import ServerConfig, TritonServer
from inferline.training.model import load_checkpoint
from inferline.training.train import RunResult, train
from tests.pipelines import byom_models, loans, yields
from tests.publish_contract_cases import THREE, _export


def test_an_onnx_file_with_five_logits_for_three_classes_is_refused_before_the_gate(tmp_path: Path) -> None:
    torch.manual_seed(0)
    _export(byom_models.VectorMLP(8, 5), tmp_path / "five.onnx")
    write_spec(THREE, tmp_path / "spec.json")
    repository = tmp_path / "repo"
    done = subprocess.run(
        [sys.executable, "-m", "inferline.export", "publish", "--onnx", str(tmp_path / "five.onnx"), "--spec",
         str(tmp_path / "spec.json"), "--repository", str(repository), "--no-load-check"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "output 'probabilities' is float32 [1, 5]" in done.stderr and "expects FP32 [1, 3]" in done.stderr
    assert "5 values per row for 3 classes" in done.stderr, done.stderr
    assert Registry(repository, "three").read()["releases"] == {}  # nothing published


def test_a_regression_on_an_unscaled_target_passes_the_gate_and_serves_within_its_tolerance(tmp_path: Path) -> None:
    """Yields in kilograms (values in the hundreds): one float32 step there is ~3e-5 to 6e-5, above any useful
    absolute tolerance, so only atol + rtol*|value| lets a correct export through."""
    rows = yields.generate(1500, seed=3)
    rows["tonnes"] *= 100
    atomic_write_parquet(tmp_path / "kg.parquet", rows)
    run = train([tmp_path / "kg.parquet"], yields.SPEC, tmp_path / "runs", seed=0, epochs=30, progress=False)
    repository = tmp_path / "repo"
    released = publish(run.run_dir, repository, load_check=False)  # served for real below
    parity = released.parity
    assert parity.passed and parity.atol == 1e-5 and parity.rtol == 1e-5 and parity.outside_tolerance == 0
    assert parity.max_abs_error > parity.atol, "this target must need the relative tolerance to pass"

    score = yields.generate(64, seed=4)
    folder = repository / "yields_preprocess" / str(released.version)
    contract = compile_contract(yields.SPEC, FeatureState.load(folder / "feature_state.json"))
    m = contract.features(score)
    with torch.no_grad():
        (expected,) = load_checkpoint(run.run_dir / "checkpoint.pt")(*map(torch.from_numpy, contract.feeds(m).values()))
    expected = expected.numpy().reshape(-1)
    assert np.abs(expected).min() > 100, "values in the hundreds"
    server = TritonServer(ServerConfig.on_free_ports(repository, tmp_path / "work")).start(timeout_s=180)
    try:
        with InferlineClient(server.config.http_url, "http", pipeline="yields", spec=yields.SPEC) as client:
            served = client.predict(score)
    finally:
        server.stop()
    assert served.status == ["ok"] * len(score)
    np.testing.assert_allclose(served.prediction, expected, rtol=parity.rtol, atol=parity.atol)


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")


def _fill(mount: Path, leave: int) -> None:
    """Fill the tmpfs, then free ``leave`` bytes."""
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    os.close(fd)
    os.truncate(mount / "filler", max(os.path.getsize(mount / "filler") - leave, 0))


def _files(repository: Path) -> dict[str, str]:
    return {str(p.relative_to(repository)): sha256_file(p) for p in sorted(repository.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def loans_run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    root = tmp_path_factory.mktemp("loans")
    atomic_write_parquet(root / "rows.parquet", loans.generate(1500, seed=1))
    return train([root / "rows.parquet"], loans.SPEC, root / "runs", seed=0, epochs=1, progress=False)


def test_a_parity_refusal_names_the_evidence_and_claims_no_current_release_when_there_is_none(
    loans_run: RunResult, tmp_path: Path
) -> None:
    """A model.onnx that is not the run's module (weights shifted) into an empty repository: the refusal reports
    the values outside atol + rtol*|b| with both tolerances, and the alert does not claim a current release."""
    exported = tmp_path / "exported"
    publish(loans_run.run_dir, exported, load_check=False)
    model = onnx.load(str(exported / "loans_model" / "1" / "model.onnx"))
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weights) + 0.05, weights.name))
    onnx.save(model, str(tmp_path / "shifted.onnx"))
    alerts = tmp_path / "alerts.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "inferline.export", "publish", "--run", str(loans_run.run_dir), "--onnx",
         str(tmp_path / "shifted.onnx"), "--repository", str(tmp_path / "repo"), "--alerts", str(alerts)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "output values outside |a-b| <= atol + rtol*|b| (atol 1e-05, rtol 1e-05" in done.stderr, done.stderr
    assert "against its PyTorch module" in done.stderr and "Nothing was published" in done.stderr
    alert = json.loads(alerts.read_text().splitlines()[-1])
    assert alert["reason"] == "parity_gate_failed" and "stays served" not in alert["message"], alert
    assert "no release was current" in alert["message"] and alert["details"]["current_release"] is None
    assert alert["details"]["rtol"] == 1e-5 and alert["details"]["outside_tolerance"] > 0


def test_a_full_disk_during_publish_leaves_nothing_half_published(loans_run: RunResult, tmp_path: Path) -> None:
    """Disks full at different points of a publish (from the first staged file to the configs written after the
    rename): each attempt either publishes completely or fails with one line naming the full disk, with the
    repository exactly as before (the current release stays)."""
    run = loans_run
    first = tmp_path / "first"
    publish(run.run_dir, first, load_check=False)  # release 1, copied onto each small disk
    # what release 1's folders take on a tmpfs (whole pages): a disk left with about that much fills up late, after
    # the release moved into place; with nothing left, at the first staged file
    need = sum(-(-p.stat().st_size // 4096) * 4096 for p in first.glob("*/1/*") if p.is_file())
    failed, where = 0, set()  # functions the disk filled up in
    for i, leave in enumerate((0, need - 4096, need, need + 4096, 2 * need)):
        mount = tmp_path / f"disk{i}"
        _mount_tmpfs(mount, "4m")
        try:
            repository = mount / "repo"
            shutil.copytree(first, repository)
            _fill(mount, leave)
            before = _files(repository)
            try:
                publish(run.run_dir, repository, load_check=False)
            except PublishFailed as exc:
                failed += 1
                assert exc.__cause__ is not None
                where.update(f.name for f in traceback.extract_tb(exc.__cause__.__traceback__))
                message = str(exc)
                assert "no space left on the device" in message and "release 1 stays current" in message
                assert "\n" not in message and isinstance(exc, UserError)
                assert _files(repository) == before, f"leave={leave}: the repository changed"
                assert not list((repository / ".staging").glob("*")) if (repository / ".staging").exists() else True
                continue
            assert Registry(repository, "loans").current == 2, f"leave={leave}"  # it fitted: published whole
            Registry(repository, "loans").release_files(2)  # complete and matching its manifest
        finally:
            subprocess.run(["umount", str(mount)], check=True)
    assert failed >= 2, "the disk sizes must make some publishes fail"
    assert "activate" in where, f"one disk must fill after the release moved into place (failed in {where})"
