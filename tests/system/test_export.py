from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from inferline.core.files import sha256_file
from inferline.export.parity import ParityGateFailed
from inferline.export.publish import publish
from inferline.features.spec import read_spec
from inferline.release.registry import Registry, RegistryError
from inferline.release.switch import set_current
from tests.export_cases import _parse

from .conftest import Published

MANIFEST_FIELDS = {
    "data_fingerprint",
    "schema_version",
    "feature_hash",
    "checkpoint_sha256",
    "onnx_sha256",
    "parity",
    "config_sha256",
    "code_revision",
    "metrics",
    "reference_profile",
    "feature_state_sha256",
    "target",
    "release",
}


def test_two_publishes_give_two_versions_with_manifests(published: Published) -> None:
    repo = published.repository
    assert [r.version for r in published.releases] == [1, 2]
    reg = Registry(repo, "fraud").read()
    assert (reg["current"], reg["previous"]) == (2, 1)
    for v in (1, 2):
        for model in ("fraud", "fraud_preprocess", "fraud_model"):  # the local target's three version directories
            assert (repo / model / str(v)).is_dir()
        # a server that loaded the release has written __pycache__ beside model.py (the Python backend's stub
        # ignores PYTHONDONTWRITEBYTECODE, measured): a cache, not part of the release
        assert sorted(p.name for p in (repo / "fraud" / str(v)).iterdir() if p.name != "__pycache__") == [
            "model.py",
            "release.config.json",
            "release.config.pbtxt",
            "release.json",
        ]
        assert sorted(p.name for p in (repo / "fraud_preprocess" / str(v)).iterdir() if p.name != "__pycache__") == [
            "feature_state.json",
            "release.json",
            "spec.json",  # the release's own contract
        ]
        assert Registry(repo, "fraud").layout(v) == "fused"
        manifest = json.loads((repo / "fraud_model" / str(v) / "release.json").read_text())
        assert MANIFEST_FIELDS <= set(manifest)
        assert manifest["release"] == v
        assert manifest["onnx_sha256"] == sha256_file(repo / "fraud_model" / str(v) / "model.onnx")
        assert manifest["spec_sha256"] == sha256_file(repo / "fraud_preprocess" / str(v) / "spec.json")
        assert read_spec(repo / "fraud_preprocess" / str(v) / "spec.json").feature_hash() == manifest["feature_hash"]
        assert manifest["parity"]["passed"] and manifest["parity"]["max_abs_error"] <= 1e-5
        assert {c["name"] for c in manifest["parity"]["checks"]} >= {"holdout", "batch_1", "batch_7", "batch_256"}
        assert manifest["layout"] == "fused"
        for model in ("fraud", "fraud_preprocess"):
            assert manifest == json.loads((repo / model / str(v) / "release.json").read_text())
        assert reg["releases"][str(v)]["manifest_sha256"] == sha256_file(repo / "fraud_model" / str(v) / "release.json")
    registry = Registry(repo, "fraud")
    assert registry.manifest().release == 2 and registry.manifest(1).release == 1  # how later stages read releases
    with pytest.raises(RegistryError, match=r"known: \[1, 2\]"):
        registry.manifest(7)
    served = _parse((repo / "fraud" / "config.pbtxt").read_text())
    assert served.backend == "python" and list(served.version_policy.specific.versions) == [2]
    assert not (repo / ".staging").exists()


def _tamper(src: Path, dst: Path) -> None:
    """A model whose graph differs: one weight matrix of the exported graph nudged."""
    model = onnx.load(str(src))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = onnx.numpy_helper.to_array(init).copy()
    arr += 0.05
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(dst))


def _snapshot(repo: Path) -> dict[str, str]:
    return {
        str(p.relative_to(repo)): sha256_file(p)
        for p in sorted(repo.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_parity_gate_refuses_a_broken_export(published: Published, tmp_path: Path) -> None:
    repo = published.repository
    tampered = tmp_path / "tampered.onnx"
    _tamper(repo / "fraud_model" / "2" / "model.onnx", tampered)
    before = _snapshot(repo)
    with pytest.raises(ParityGateFailed, match="Nothing was published") as info:
        publish(published.runs[1].run_dir, repo, onnx_model=tampered)
    assert not info.value.report.passed
    assert info.value.report.max_abs_error > 1e-5
    assert _snapshot(repo) == before, "the previously published versions and registry are untouched"
    assert not (repo / "fraud_model" / "3").exists() and not (repo / "fraud" / "3").exists()


def test_promote_and_rollback_move_registry_and_configs(published: Published, tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "copy"
    shutil.copytree(published.repository, repo)
    reg = set_current(repo, "fraud", action="rollback", reason="test")
    assert (reg["current"], reg["previous"]) == (1, 2)
    assert list(_parse((repo / "fraud" / "config.pbtxt").read_text()).version_policy.specific.versions) == [1]
    reg = set_current(repo, "fraud", 2, action="promote")
    assert (reg["current"], reg["previous"]) == (2, 1)
    assert [h["action"] for h in reg["history"]][-2:] == ["rollback", "promote"]
    with pytest.raises(RegistryError, match="does not exist; published: \\[1, 2\\]"):
        set_current(repo, "fraud", 9)


def test_a_gpu_release_keeps_the_ensemble_layout_beside_fused_ones(published: Published, tmp_path: Path) -> None:
    """``--target gpu`` still publishes the ensemble (inner models on disk and loaded); the registry tells each
    release's layout from its own files, and the server loads what the current release needs."""
    import shutil

    from inferline.serving.server import ServerConfig, TritonServer

    repo = tmp_path / "copy"
    shutil.copytree(published.repository, repo)
    released = publish(published.runs[1].run_dir, repo, target="gpu")
    v = released.version
    registry = Registry(repo, "fraud")
    assert (registry.layout(v), registry.layout(2)) == ("ensemble", "fused")
    assert registry.served_models(v) == ["fraud_preprocess", "fraud_model", "fraud"]
    assert registry.served_models(2) == ["fraud"]
    assert not (repo / "fraud" / str(v)).exists() and (repo / "fraud_preprocess" / str(v) / "model.py").exists()
    ensemble = _parse((repo / "fraud" / "config.pbtxt").read_text())
    assert ensemble.platform == "ensemble" and {s.model_version for s in ensemble.ensemble_scheduling.step} == {v}
    model = _parse((repo / "fraud_model" / "config.pbtxt").read_text())
    assert model.platform == "onnxruntime_onnx" and list(model.version_policy.specific.versions) == [v]
    loads = [a for a in TritonServer(ServerConfig(repo, tmp_path / "work")).command() if a.startswith("--load")]
    assert loads == ["--load-model=fraud_preprocess", "--load-model=fraud_model", "--load-model=fraud"]
    set_current(repo, "fraud", 2, action="promote")  # back to a fused release: only its config moves
    assert _parse((repo / "fraud" / "config.pbtxt").read_text()).backend == "python"
    loads = [a for a in TritonServer(ServerConfig(repo, tmp_path / "work")).command() if a.startswith("--load")]
    assert loads == ["--load-model=fraud"]
