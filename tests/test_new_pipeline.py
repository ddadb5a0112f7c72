"""A second pipeline is a new spec module and nothing else: every stage runs it unchanged."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import inferline.features.pipelines
from inferline.export.publish import publish
from inferline.features.artifacts import atomic_write_parquet
from inferline.features.spec import load_pipeline_module
from inferline.training.train import train

LOANS = (Path(__file__).parent / "pipelines" / "loans.py").read_text()  # the contract suite checks it too


MODULE = "inferline.features.pipelines.loans"


@pytest.fixture
def loans_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The loans spec as a plugin module of ``inferline.features.pipelines`` for this test only: at teardown the
    imported module, the package's attribute for it and the import system's cache of its folder are gone."""
    assert MODULE not in sys.modules
    plugin_dir = tmp_path / "pipelines"
    plugin_dir.mkdir()
    (plugin_dir / "loans.py").write_text(LOANS)
    monkeypatch.setattr(
        inferline.features.pipelines, "__path__", [*inferline.features.pipelines.__path__, str(plugin_dir)]
    )
    try:
        yield "loans"
    finally:
        sys.modules.pop(MODULE, None)
        vars(inferline.features.pipelines).pop("loans", None)
        sys.path_importer_cache.pop(str(plugin_dir), None)


def test_second_pipeline_trains_gates_and_publishes(loans_pipeline: str, tmp_path: Path) -> None:
    assert "loans" in inferline.features.pipelines.available()
    module = load_pipeline_module(loans_pipeline)
    data = tmp_path / "loans.parquet"
    atomic_write_parquet(data, module.generate(6000, seed=1))
    result = train([data], module.SPEC, tmp_path / "runs", seed=0, progress=False)
    assert result.metrics["holdout"]["roc_auc"] > 0.6
    released = publish(result.run_dir, tmp_path / "repo", load_check=False)
    assert released.parity.passed and released.version == 1
    served = text_format.Parse(
        (tmp_path / "repo" / "loans" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert [i.name for i in served.input] == ["loan_id", "applied_at", "income", "purpose"]
    assert served.backend == "python" and list(served.version_policy.specific.versions) == [1]  # fused (local)
    assert served.parameters["feature_state_from"].string_value == "loans_preprocess"
    assert served.max_batch_size == 64
