"""A release carries its own contract: after the spec changes, a rollback serves and batch-scores the old one.

Release 1 of the ``loans`` test pipeline accepts any income >= 0. Its spec then changes (a new cap on income, a
feature replaced) and release 2 is trained and published from the new spec, which exists only in this test
process: no module on the server's or the workers' path defines it, and ``loans`` is no pipeline of
``inferline.features.pipelines`` either. So whatever serves or scores a release can only have read the release's
own ``spec.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from inferline.batch import JobConfig, run_job
from inferline.core.files import atomic_write_parquet
from inferline.export.publish import publish
from inferline.features.contract import compile_contract
from inferline.features.rules import ge, le
from inferline.features.spec import FeatureDef, SpecError, load_pipeline, read_spec
from inferline.features.state import FeatureState
from inferline.release.registry import Registry
from inferline.release.switch import switch_release
from inferline.serving.client import InferlineClient
from inferline.serving.server import ServerConfig, TritonServer
from inferline.training.model import load_checkpoint
from inferline.training.train import train
from tests.pipelines import loans
from tests.system.conftest import DaskCluster

CAPPED = dataclasses.replace(
    loans.SPEC,
    version=2,
    columns=tuple(
        dataclasses.replace(c, rules=(ge(0, name="negative"), le(60_000, name="above_cap")))
        if c.name == "income"
        else c
        for c in loans.SPEC.columns
    ),
    features=(
        FeatureDef("log_income", "log1p", "income"),
        FeatureDef("weekday_cos", "cyclic_weekday_cos", "applied_at"),
        FeatureDef("purpose_idx", "vocabulary", "purpose", output="categorical"),
    ),
)


def _rows() -> pd.DataFrame:
    rows = loans.generate(4, seed=99).drop(columns=[loans.SPEC.label])
    rows["income"] = [90_000.0, 20_000.0, 35_000.0, 61_000.0]  # rows 0 and 3 break release 2's cap
    return rows


def _in_process(repository: Path, runs: Path, version: int, rows: pd.DataFrame) -> np.ndarray:
    """Release ``version``'s probabilities for ``rows``, computed here from its own files and its run's weights."""
    registry = Registry(repository, "loans")
    files = registry.release_files(version)
    contract = compile_contract(read_spec(files["spec"]), FeatureState.load(files["feature_state"]))
    run_id = registry.manifest(version).run_id
    checkpoints = [p for p in runs.rglob("checkpoint.pt") if p.parent.name == run_id]
    assert len(checkpoints) == 1, checkpoints
    m = contract.features(rows)
    with torch.no_grad():
        probabilities, _ = load_checkpoint(checkpoints[0])(torch.from_numpy(m.numeric), torch.from_numpy(m.categorical))
    return probabilities.numpy()


def test_rollback_across_a_spec_change_serves_the_old_contract(tmp_path: Path, dask_cluster: DaskCluster) -> None:
    with pytest.raises(SpecError):
        load_pipeline("loans")  # nothing on the path defines it: the releases must carry it
    data = tmp_path / "data" / "loans.parquet"
    atomic_write_parquet(data, loans.generate(3000, seed=1))
    repository = tmp_path / "triton_models"
    first = train([data], loans.SPEC, tmp_path / "runs" / "v1", seed=0, epochs=1, progress=False)
    publish(first.run_dir, repository, load_check=False)
    second = train([data], CAPPED, tmp_path / "runs" / "v2", seed=0, epochs=1, progress=False)
    # one epoch each: the capped release may score below the first on its holdout; this test is about the contract
    publish(second.run_dir, repository, load_check=False, accept_worse="a spec change under test, not a better model")
    registry = Registry(repository, "loans")
    assert registry.current == 2
    specs = {v: read_spec(registry.release_files(v)["spec"]) for v in (1, 2)}
    assert specs[1].feature_hash() == loans.SPEC.feature_hash() != specs[2].feature_hash() == CAPPED.feature_hash()

    rows = _rows()
    server = TritonServer(ServerConfig.on_free_ports(repository, tmp_path / "work")).start(timeout_s=120)
    try:
        url = server.config.http_url
        with InferlineClient(url, pipeline="loans", spec=specs[2]) as client:
            served = client.predict(rows)
        assert set(served.release) == {"loans:2"}
        assert served.status == ["income:above_cap", "ok", "ok", "income:above_cap"]
        np.testing.assert_allclose(
            served.probabilities[1:3], _in_process(repository, tmp_path / "runs", 2, rows)[1:3], atol=1e-5
        )

        switch_release(url, server.admin_key, repository, "loans", 1)  # the rollback, on the live server
        with InferlineClient(url, pipeline="loans", spec=specs[1]) as client:
            served = client.predict(rows)
        assert set(served.release) == {"loans:1"}
        assert served.status == ["ok"] * 4, "release 1's contract has no cap"
        np.testing.assert_allclose(served.probabilities, _in_process(repository, tmp_path / "runs", 1, rows), atol=1e-5)
    finally:
        server.stop()

    batch_in = tmp_path / "batch_in" / "rows.parquet"
    atomic_write_parquet(batch_in, rows)
    reports = {}
    for version in (1, 2):
        config = JobConfig(
            inputs=[str(batch_in)],
            output=tmp_path / f"batch_out_{version}",
            model=f"loans:{version}",
            repository=repository,
            scheduler=dask_cluster.address,
            progress=False,
            max_invalid_share=1.0,
            gate=None,
        )
        reports[version] = run_job(config)
    assert (reports[1].rows_predicted, reports[1].rows_quarantined) == (4, 0)
    assert (reports[2].rows_predicted, reports[2].rows_quarantined) == (2, 2)
