"""A second pipeline is a new spec module and nothing else: every stage runs it unchanged."""

from __future__ import annotations

import sys
import textwrap
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

LOANS = textwrap.dedent('''
    """Loan default scoring: a second pipeline, written as a spec only."""
    import numpy as np
    import pandas as pd

    from inferline.features.spec import Column, FeatureDef, ModelParams, PipelineSpec, Rule

    SPEC = PipelineSpec(
        name="loans",
        version=1,
        columns=(
            Column("loan_id", "id", unique=True),
            Column("applied_at", "timestamp"),
            Column("income", "numeric", rules=(Rule("negative", lambda s: s >= 0, ">= 0"),)),
            Column("purpose", "categorical"),
            Column("defaulted", "label"),
        ),
        features=(
            FeatureDef("log_income", "log1p", "income"),
            FeatureDef("month_sin", "cyclic_weekday_sin", "applied_at"),
            FeatureDef("purpose_idx", "vocabulary", "purpose", output="categorical"),
        ),
        label="defaulted",
        classes=("repaid", "defaulted"),
        model=ModelParams(hidden=(16,), epochs=2, max_batch_size=64),
    )


    def generate(n_rows: int, seed: int = 0) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        purpose = rng.choice(["car", "home", "study", "travel"], n_rows)
        income = rng.lognormal(10, 0.5, n_rows)
        risk = (purpose == "travel") * 1.5 - (np.log(income) - 10) * 2
        defaulted = (rng.random(n_rows) < 1 / (1 + np.exp(-(risk - 2.5)))).astype("int64")
        frame = pd.DataFrame({
            "loan_id": [f"L{seed}-{i}" for i in range(n_rows)],
            "applied_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 10**7, n_rows), "s"),
            "income": income, "purpose": purpose, "defaulted": defaulted,
        })
        return frame.astype({c.name: c.raw_dtype for c in SPEC.columns})
''')


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
    released = publish(result.run_dir, tmp_path / "repo")
    assert released.parity.passed and released.version == 1
    served = text_format.Parse(
        (tmp_path / "repo" / "loans" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    assert [i.name for i in served.input] == ["loan_id", "applied_at", "income", "purpose"]
    assert served.backend == "python" and list(served.version_policy.specific.versions) == [1]  # fused (local)
    assert served.parameters["feature_state_from"].string_value == "loans_preprocess"
    assert served.max_batch_size == 64
