"""Bring your own model: six user models, each through validate -> train (or publish as brought) -> parity gate ->
publish -> one real tritonserver over HTTP and gRPC at batch sizes 1, 7 and max -> the Dask batch job.

The models are defined in tests/pipelines/byom_models.py (random weights where nothing is trained) and named by
import path, as a user's package is: the server's Python stubs and the Dask workers import them through
PYTHONPATH, as they would import an installed package. Served answers must match the same module run in process
by PyTorch within 1e-5, and the batch job must answer as the server does.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from inferline.batch import JobConfig, run_job
from inferline.core.files import atomic_write_parquet
from inferline.export.candidate import model_candidate, release_candidate
from inferline.export.publish import publish
from inferline.features.contract import compile_contract
from inferline.features.spec import PipelineSpec, load_pipeline_module, read_spec
from inferline.features.state import FeatureState
from inferline.release.registry import Registry
from inferline.release.switch import set_current, switch_release
from inferline.serving.client import InferlineClient
from inferline.serving.server import ServerConfig, TritonServer
from inferline.training.model import ScoringModel, load_checkpoint
from inferline.training.train import train
from tests.pipelines import byom_models
from tests.system.conftest import DaskCluster, start_dask_cluster

ROOT = Path(__file__).resolve().parents[2]
TRAINED = {"byom_images": 240, "byom_text": 480, "byom_regression": 1200, "byom_species": 240}
CASES = [*TRAINED, "byom_vector", "byom_onnx"]


@dataclass
class Case:
    spec: PipelineSpec
    reference: ScoringModel  # the same module in process
    rows: pd.DataFrame  # rows to score (not seen in training)


@dataclass
class World:
    repository: Path
    server: TritonServer
    cluster: DaskCluster
    cases: dict[str, Case]
    root: Path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferline", *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def _export_logits(module: torch.nn.Module, path: Path) -> None:
    """A user's own ONNX export: logits only, input named as the spec's tensor column."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(),
            (torch.zeros(4, 8),),
            input_names=["embedding"],
            output_names=["logits"],
            dynamo=True,
            dynamic_shapes=({0: batch},),
        )
    assert program is not None
    program.save(str(path))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("byom")
    repository = root / "repo"
    cases: dict[str, Case] = {}
    with pytest.MonkeyPatch.context() as mp:
        # the user's package (here: this checkout's tests/) is importable by the server's stubs and the workers
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
        for name, n in TRAINED.items():
            module = load_pipeline_module(f"tests.pipelines.{name}")
            data = root / f"{name}.parquet"
            atomic_write_parquet(data, module.generate(n, seed=1))
            run = train([data], module.SPEC, root / "runs", seed=0, progress=False)
            publish(run.run_dir, repository, load_check=False)  # the server below loads them all
            cases[name] = Case(module.SPEC, load_checkpoint(run.run_dir / "checkpoint.pt"), module.generate(40, 2))

        # 5: a module trained elsewhere, published from its factory and weights
        vector = load_pipeline_module("tests.pipelines.byom_vector")
        torch.manual_seed(5)
        net = byom_models.VectorMLP(8, 2)
        torch.save(net.state_dict(), root / "weights.pt")
        done = _cli(
            "export",
            "publish",
            "--module",
            "tests.pipelines.byom_models:vector_mlp",
            "--checkpoint",
            str(root / "weights.pt"),
            "--spec",
            "tests.pipelines.byom_vector",
            "--repository",
            str(repository),
        )  # fmt: skip (this one is loaded in a scratch tritonserver before it is promoted)
        assert done.returncode == 0, done.stderr
        cases["byom_vector"] = Case(vector.SPEC, ScoringModel(net.eval(), 0.5, "binary").eval(), vector.generate(40, 2))

        # 6: an ONNX file with a tensor spec
        onnx_spec = load_pipeline_module("tests.pipelines.byom_onnx")
        torch.manual_seed(6)
        other = byom_models.VectorMLP(8, 2)
        _export_logits(other, root / "user.onnx")
        done = _cli(
            "export", "publish", "--onnx", str(root / "user.onnx"), "--spec", "tests.pipelines.byom_onnx",
            "--repository", str(repository), "--no-load-check",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        cases["byom_onnx"] = Case(
            onnx_spec.SPEC, ScoringModel(other.eval(), 0.5, "binary").eval(), vector.generate(40, 3)
        )

        server = TritonServer(ServerConfig.on_free_ports(repository, root / "work")).start(timeout_s=180)
        try:
            with start_dask_cluster(root / "dask") as cluster:
                yield World(repository, server, cluster, cases, root)
        finally:
            server.stop()


def _in_process(case: Case, registry: Registry) -> tuple[np.ndarray, ...]:
    """PyTorch on the release's own contract (spec snapshot, fitted state): what every runtime must answer."""
    version = registry.current
    folder = Path(registry.repository) / f"{case.spec.name}_preprocess" / str(version)
    contract = compile_contract(case.spec, FeatureState.load(folder / "feature_state.json"))
    m = contract.features(case.rows)
    with torch.no_grad():
        out = case.reference(*(torch.from_numpy(np.ascontiguousarray(v)) for v in contract.feeds(m).values()))
    return tuple(t.numpy() for t in out)


def _batch(world: World, model: str, frame: pd.DataFrame, name: str, **config: Any) -> tuple[Any, Path]:
    """``frame`` written as ``<name>.parquet`` and scored by a batch job on the world's cluster into
    ``<name>-out``: the job's report and that folder."""
    inputs = world.root / f"{name}.parquet"
    atomic_write_parquet(inputs, frame)
    output = world.root / f"{name}-out"
    config = {"repository": world.repository, "scheduler": world.cluster.address, "progress": False, **config}
    return run_job(JobConfig(inputs=[str(inputs)], output=output, model=model, **config)), output


def _served(world: World, case: Case, protocol: str, batch: int) -> Any:
    url = world.server.config.http_url if protocol == "http" else world.server.config.grpc_url
    with InferlineClient(url, protocol, pipeline=case.spec.name, spec=case.spec, max_batch_size=batch) as client:  # type: ignore[arg-type]
        return client.predict(case.rows)


@pytest.mark.parametrize("name", CASES)
def test_served_and_batch_answer_as_pytorch(world: World, name: str) -> None:
    case = world.cases[name]
    registry = Registry(world.repository, name)
    manifest = registry.manifest(registry.current).to_dict()
    assert manifest["task"] == case.spec.task and manifest["parity"]["passed"]
    assert {c["name"] for c in manifest["parity"]["checks"]} >= {
        "batch_1",
        "batch_7",
        f"batch_{case.spec.model.max_batch_size}",
    }
    expected = _in_process(case, registry)
    regression = case.spec.task == "regression"
    served = None
    for protocol in ("http", "grpc"):
        for batch in (1, 7, case.spec.model.max_batch_size):
            got = _served(world, case, protocol, batch)
            assert got.status == ["ok"] * len(case.rows), (protocol, batch, set(got.status))
            if regression:
                np.testing.assert_allclose(got.prediction, expected[0].reshape(-1), rtol=0, atol=1e-5)
            else:
                np.testing.assert_allclose(got.probabilities, expected[0], rtol=0, atol=1e-5)
                np.testing.assert_array_equal(got.predicted_class, expected[1].reshape(-1))
            served = got
    assert served is not None

    report, output = _batch(world, name, case.rows.drop(columns=[case.spec.label]), f"{name}-score", partition_rows=16)
    assert report.rows_in == report.rows_predicted == len(case.rows) and report.rows_quarantined == 0
    batch = pd.read_parquet(output)
    key = case.spec.id_column.name if case.spec.id_column else "source_row"
    assert set(batch["source_file"]) == {f"{name}-score.parquet"}  # every pipeline's rows name their file and row
    assert sorted(batch["source_row"]) == list(range(len(case.rows)))
    batch = batch.sort_values(key).reset_index(drop=True)
    order = np.argsort(case.rows[key].to_numpy()) if key != "source_row" else np.arange(len(case.rows))
    if regression:
        np.testing.assert_allclose(batch["prediction"], served.prediction[order], rtol=0, atol=1e-6)
    else:
        probs = batch[[f"probability_{c}" for c in case.spec.classes]].to_numpy()
        np.testing.assert_allclose(probs, served.probabilities[order], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(batch["predicted_class"], served.predicted_class[order])


def _bad_rows(name: str, rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    rows = rows.head(4).copy()
    if name == "byom_images":
        image = np.array(rows.at[1, "image"]).copy()
        image[5] = 255  # above the declared range
        rows.at[1, "image"] = image
        return rows, ["ok", "image:pixel_out_of_range", "ok", "ok"]
    tokens = np.array(rows.at[2, "tokens"]).copy()
    tokens[0] = 99  # outside the vocabulary
    rows.at[2, "tokens"] = tokens
    return rows, ["ok", "ok", "tokens:unknown_token", "ok"]


@pytest.mark.parametrize("name", ["byom_images", "byom_text"])
def test_a_bad_sample_gets_its_reason_served_and_is_quarantined_in_batch(world: World, name: str) -> None:
    case = world.cases[name]
    rows, expected = _bad_rows(name, case.rows)
    got = _served(world, Case(case.spec, case.reference, rows), "http", 7)
    assert got.status == expected
    report, _ = _batch(world, name, rows.drop(columns=[case.spec.label]), f"{name}-bad", max_invalid_share=0.5)
    assert report.rows_in == report.rows_predicted + report.rows_quarantined == 4 and report.rows_quarantined == 1
    quarantine = pd.read_parquet(world.root / f"{name}-bad-out" / "_quarantine")
    assert list(quarantine["_reasons"]) == [r for r in expected if r != "ok"]
    # with or without an id column, a quarantined row names its file and its row there
    assert list(quarantine["source_file"]) == [f"{name}-bad.parquet"]
    assert list(quarantine["source_row"]) == [i for i, r in enumerate(expected) if r != "ok"]


def test_metrics_of_each_task(world: World) -> None:
    manifests: dict[str, dict[str, Any]] = {
        n: Registry(world.repository, n).manifest(Registry(world.repository, n).current).to_dict() for n in TRAINED
    }
    species = manifests["byom_species"]["metrics"]
    assert set(species) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix"}
    assert np.asarray(species["confusion_matrix"]).sum() == species["rows"]
    assert set(species["per_class"]) == {"setosa", "versicolor", "virginica"}
    assert set(manifests["byom_regression"]["metrics"]) >= {"mae", "rmse", "r2"}
    assert manifests["byom_text"]["metrics"]["roc_auc"] == manifests["byom_text"]["metrics"]["roc_auc"]  # not NaN
    model = manifests["byom_images"]["model"]
    assert model["factory"] == "tests.pipelines.byom_models:small_resnet" and model["args"] == {"width": 8}
    assert len(model["source_sha256"]) == 64
    assert manifests["byom_species"]["model"]["factory"] == "inferline.training.model:tabular_net"


def test_serve_predict_prints_a_regression_pipelines_values(world: World) -> None:
    """``inferline serve predict`` on a regression pipeline (``classes=()``) prints one ``prediction`` per row, the
    served value (it raised IndexError on the empty classes before; found following the bring-your-own-model
    tutorial), and ``null`` with the reason for a refused row."""
    case = world.cases["byom_regression"]
    rows = case.rows.head(4).drop(columns=["target"]).reset_index(drop=True)
    rows.at[2, "temperature"] = 99.0  # implausible
    atomic_write_parquet(world.root / "regression-rows.parquet", rows)
    done = _cli(
        "serve", "predict", "--pipeline", "byom_regression", "--url", world.server.config.http_url,
        "--repository", str(world.repository), "--file", str(world.root / "regression-rows.parquet"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["status"] for a in answers] == ["ok", "ok", "temperature:implausible", "ok"]
    assert answers[2]["prediction"] is None and "probabilities" not in answers[0]
    served = _served(world, Case(case.spec, case.reference, rows), "http", 7)
    np.testing.assert_allclose([answers[i]["prediction"] for i in (0, 1, 3)], served.prediction[[0, 1, 3]], atol=1e-5)


def test_a_published_onnx_file_rolls_back_like_any_release(world: World) -> None:
    """A second ONNX file for the same spec is published and served; rolling back serves the first again, and the
    batch job scores whichever release it is told to. The server ends where it started (release 1)."""
    case = world.cases["byom_onnx"]
    url, key = world.server.config.http_url, world.server.admin_key
    torch.manual_seed(66)
    second = byom_models.VectorMLP(8, 2)
    _export_logits(second, world.root / "second.onnx")
    spec = case.spec
    released = publish(
        None, world.repository, candidate=model_candidate(spec, onnx_model=world.root / "second.onnx"), load_check=True
    )
    first_version = released.version - 1
    rows = case.rows.head(9)
    try:
        switch_release(url, key, world.repository, spec.name, released.version)
        got = _served(world, Case(spec, case.reference, rows), "grpc", 7)
        assert set(got.release) == {f"{spec.name}:{released.version}"}
        new = Case(spec, ScoringModel(second.eval(), 0.5, "binary").eval(), rows)
        np.testing.assert_allclose(
            got.probabilities, _in_process(new, Registry(world.repository, spec.name))[0], atol=1e-5
        )
    finally:
        set_current(world.repository, spec.name, action="rollback", reason="test")
        switch_release(url, key, world.repository, spec.name, first_version)
    back = _served(world, Case(spec, case.reference, rows), "http", 7)
    assert set(back.release) == {f"{spec.name}:{first_version}"}
    np.testing.assert_allclose(
        back.probabilities,
        _in_process(Case(spec, case.reference, rows), Registry(world.repository, spec.name))[0],
        atol=1e-5,
    )
    history = Registry(world.repository, spec.name).read()["history"]
    assert [h["action"] for h in history[-2:]] == ["promote", "rollback"]


def test_a_module_release_is_published_again_with_tuned_serving_settings(world: World, tmp_path: Path) -> None:
    """``bench tune --publish`` for a model with no training run: the tuned release's own artifacts become a new
    release with the chosen settings in its config, the same ONNX model, its lineage, and not promoted."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from inferline.core.errors import UserError
    from inferline.release.registry import model_names

    repository = tmp_path / "repo"
    shutil.copytree(world.repository, repository)
    name = world.cases["byom_vector"].spec.name
    current = Registry(repository, name).current
    assert current is not None
    candidate, released = release_candidate(repository, name, current)
    manifest = released.to_dict()
    settings = {"instances": 2, "max_queue_delay_us": 100, "preferred_batch_size": (4, 8)}
    new = publish(
        None, repository, promote=False, candidate=candidate, max_batch_size=manifest["max_batch_size"],
        serving=settings, load_check=False,
    )  # fmt: skip
    got = Registry(repository, name).manifest(new.version).to_dict()
    assert new.version == current + 1 and Registry(repository, name).current == current
    assert got["onnx_sha256"] == manifest["onnx_sha256"] and got["derived_from"] == current
    assert got["source"] == "module" and got["model"] == manifest["model"]
    assert got["serving_settings"] == {**settings, "preferred_batch_size": [4, 8]}
    config = model_config_pb2.ModelConfig()
    text_format.Parse((repository / name / str(new.version) / "release.config.pbtxt").read_text(), config)
    assert config.instance_group[0].count == 2 and config.dynamic_batching.max_queue_delay_microseconds == 100
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    tabular = next(n for n, c in world.cases.items() if c.spec.features)
    with pytest.raises(UserError, match="tabular features"):
        release_candidate(repository, world.cases[tabular].spec.name, 1)
    assert (repository / model_names(name)["model"] / str(new.version) / "model.onnx").is_file()


def test_batch_reads_fixed_size_list_tensor_columns(world: World) -> None:
    """A tensor column stored as a Parquet fixed_size_list (what pyarrow writes for a fixed shape) scores as the
    same rows stored as variable-size lists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    case = world.cases["byom_vector"]
    rows = case.rows.head(12)
    flat = np.stack(rows["embedding"].to_numpy()).astype(np.float32).reshape(-1)
    table = pa.table(
        {
            "item_id": pa.array(rows["item_id"].tolist()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat), 8),
        }
    )
    fixed, variable = world.root / "fixed.parquet", world.root / "variable.parquet"
    pq.write_table(table, fixed)
    atomic_write_parquet(variable, rows.drop(columns=["label"]))
    answers = []
    for path in (fixed, variable):
        output = world.root / f"{path.stem}-out"
        report = run_job(
            JobConfig(
                inputs=[str(path)],
                output=output,
                model="byom_vector",
                repository=world.repository,
                scheduler=world.cluster.address,
                progress=False,
            )
        )
        assert report.rows_predicted == len(rows) and report.rows_quarantined == 0
        answer = pd.read_parquet(output).sort_values("item_id").reset_index(drop=True)
        assert set(answer["source_file"]) == {path.name}
        answers.append(answer.drop(columns=["source_file"]))
    pd.testing.assert_frame_equal(answers[0], answers[1])


def test_a_release_the_server_cannot_load_is_refused_before_promotion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spec names its preprocessing function in a package this process can import and the server cannot (here:
    a folder on this process's sys.path only). The release passes the gate here, fails to load in the scratch
    tritonserver, and nothing is promoted or left behind."""
    from dataclasses import replace

    from inferline.export.loadcheck import ReleaseUnloadable

    package = tmp_path / "only_here"
    package.mkdir()
    (package / "publisher_only_functions.py").write_text(
        "def scale_pixels(xp, batch):\n    return batch.astype('float32') / 127.5 - 1.0\n"
    )
    monkeypatch.syspath_prepend(str(package))
    images = load_pipeline_module("tests.pipelines.byom_images").SPEC
    column = replace(images.column("image"), preprocess="publisher_only_functions:scale_pixels")
    spec = replace(images, name="byom_unloadable", columns=(column, images.column("label")))
    torch.manual_seed(1)
    torch.save(byom_models.SmallResNet(3, 3, 8).state_dict(), tmp_path / "weights.pt")
    candidate = model_candidate(
        spec, module="tests.pipelines.byom_models:small_resnet", checkpoint=tmp_path / "weights.pt"
    )
    repository = tmp_path / "repo"
    with pytest.raises(ReleaseUnloadable, match="byom_unloadable") as refused:
        publish(None, repository, candidate=candidate)
    assert "publisher_only_functions" in str(refused.value)  # Triton's reason names what the stub could not import
    assert Registry(repository, spec.name).read()["releases"] == {}
    assert not (repository / spec.name).exists() and not any((repository / ".staging").glob("*"))


def test_batch_scores_rows_of_different_lengths_in_groups_of_one_shape(world: World) -> None:
    """Token ids of variable length ([-1]) stored at their own lengths: the batch job scores them in groups of one
    shape and puts every answer back on its row; each equals the model run on that row alone."""
    case = world.cases["byom_text"]
    rows = case.rows.head(10).copy()
    for i in range(0, 10, 2):  # every other row shortened to 12 tokens
        rows.at[i, "tokens"] = np.asarray(rows.at[i, "tokens"])[:12]
        rows.at[i, "mask"] = np.asarray(rows.at[i, "mask"])[:12]
    report, output = _batch(world, "byom_text", rows.drop(columns=["label"]), "lengths")
    assert report.rows_predicted == 10
    batch = pd.read_parquet(output).set_index("doc_id").loc[rows["doc_id"]]
    registry = Registry(world.repository, "byom_text")
    for i in range(10):
        alone = _in_process(Case(case.spec, case.reference, rows.iloc[[i]].reset_index(drop=True)), registry)
        got = batch[[f"probability_{c}" for c in case.spec.classes]].to_numpy()[i]
        np.testing.assert_allclose(got, alone[0][0], rtol=0, atol=1e-5)


def test_the_client_sends_rows_of_different_lengths_in_requests_of_one_shape(world: World) -> None:
    """Token ids of three lengths in one ``predict`` call (what ``serve predict`` makes of a JSON-lines file of
    reviews): the client sends one request per shape (a Triton request holds one) and every row answers, in its
    place, as the model run on that row alone. It refused the call before ("rows of 3 shapes in one call")."""
    case = world.cases["byom_text"]
    rows = case.rows.head(6).drop(columns=["label"]).reset_index(drop=True)
    for i, length in enumerate([16, 9, 16, 5, 9, 12]):
        rows.at[i, "tokens"] = np.asarray(rows.at[i, "tokens"])[:length]
        rows.at[i, "mask"] = np.asarray(rows.at[i, "mask"])[:length]
    with InferlineClient(world.server.config.http_url, "http", pipeline="byom_text", spec=case.spec) as client:
        together = client.predict(rows)
    assert together.status == ["ok"] * 6 and len(together.latencies_s) == 4  # lengths 16, 9, 5, 12
    registry = Registry(world.repository, "byom_text")
    for i in range(6):
        alone = _in_process(Case(case.spec, case.reference, rows.iloc[[i]].reset_index(drop=True)), registry)
        np.testing.assert_allclose(together.probabilities[i], alone[0][0], rtol=0, atol=1e-5)


def test_a_tabular_module_publishes_with_its_state_fitted_on_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--module with a spec that has tabular features: --data fits their statistics, and the module (here the
    built-in TabularNet by import path, its weights from a training run's checkpoint) is gated against itself."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the spec's package, for the command
    species = load_pipeline_module("tests.pipelines.byom_species")
    data = tmp_path / "species.parquet"
    atomic_write_parquet(data, species.generate(240, seed=4))
    run = train([data], species.SPEC, tmp_path / "runs", seed=0, progress=False)
    repository = tmp_path / "repo"
    done = _cli(
        "export", "publish", "--module", "inferline.training.model:tabular_net", "--checkpoint",
        str(run.run_dir / "checkpoint.pt"), "--spec", "tests.pipelines.byom_species", "--data", str(data),
        "--repository", str(repository), "--no-load-check",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = Registry(repository, "byom_species").manifest().to_dict()
    assert manifest["source"] == "module" and manifest["parity"]["passed"] and manifest["data_fingerprint"]
    state = FeatureState.load(repository / "byom_species_preprocess" / "1" / "feature_state.json")
    assert len(state.mean) == 4 and all(abs(m) > 0.1 for m in state.mean)  # fitted on --data, not zeros
    refused = _cli("export", "publish", "--module", "inferline.training.model:tabular_net", "--checkpoint",
                   str(run.run_dir / "checkpoint.pt"), "--spec", "tests.pipelines.byom_species",
                   "--repository", str(repository))  # fmt: skip
    assert refused.returncode == 1 and "--data" in refused.stderr and "Traceback" not in refused.stderr


def test_the_hang_probe_is_a_real_inference_for_every_kind_of_pipeline(world: World) -> None:
    """The supervisor's hang probe (serving.probe) is built from each release's own contract: for tensor, text,
    regression and multi-class pipelines alike it is an inference the served model answers (200, one row with a
    status), not a refusal of the request."""
    import json
    import urllib.request

    from inferline.serving.probe import probe_for

    for name in CASES:
        probe = probe_for(world.repository, name, Registry(world.repository, name).current)
        assert probe.inference, probe.why
        with urllib.request.urlopen(probe.request(world.server.config.http_url), timeout=10) as answer:
            assert answer.status == 200, name
            outputs = {o["name"]: o for o in json.loads(answer.read())["outputs"]}
        assert len(outputs["status"]["data"]) == 1, (name, outputs)


def _raw_infer(world: World, protocol: str, arrays: dict[str, np.ndarray]) -> list[str]:
    """One request straight to Triton (no client-side encoding): the statuses it answers."""
    if protocol == "http":
        import tritonclient.http as client_module
    else:
        import tritonclient.grpc as client_module  # type: ignore[no-redef]
    url = world.server.config.http_url if protocol == "http" else world.server.config.grpc_url
    client = client_module.InferenceServerClient(url)
    inputs = []
    for name, value in arrays.items():
        inp = client_module.InferInput(name, list(value.shape), "BYTES" if value.dtype == object else "INT64")
        inp.set_data_from_numpy(value)
        inputs.append(inp)
    result = client.infer("byom_text", inputs, outputs=[client_module.InferRequestedOutput("status")])
    return [s.decode() for s in result.as_numpy("status").reshape(-1)]


def test_an_empty_or_unscorable_row_costs_only_itself_served_and_in_batch(world: World) -> None:
    """One empty token row, and one longer than the model's positions (onnxruntime raises on it): served, each
    answers its reason as status, not an error (HTTP and gRPC); in batch each is quarantined with its reason and
    the rows beside them are scored as the model scores them alone."""
    case = world.cases["byom_text"]
    for protocol in ("http", "grpc"):
        empty = {
            "doc_id": np.array([[b"e1"], [b"e2"]], dtype=object),
            "tokens": np.zeros((2, 0), np.int64),
            "mask": np.zeros((2, 0), np.int64),
        }
        assert _raw_infer(world, protocol, empty) == ["tokens:empty"] * 2
        too_long = {
            "doc_id": np.array([[b"l1"]], dtype=object),
            "tokens": np.full((1, 100), 9, np.int64),  # 100 positions; the model has 64
            "mask": np.ones((1, 100), np.int64),
        }
        assert _raw_infer(world, protocol, too_long) == ["model:failed"]

    rows = case.rows.head(5).copy().reset_index(drop=True)
    rows.at[1, "tokens"], rows.at[1, "mask"] = np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows.at[3, "tokens"], rows.at[3, "mask"] = np.full(100, 9, np.int64), np.ones(100, np.int64)
    served = _served(world, Case(case.spec, case.reference, rows.drop(index=[3])), "http", 7)  # one call, one shape
    assert served.status == ["ok", "tokens:empty", "ok", "ok"]

    report, output = _batch(world, "byom_text", rows.drop(columns=["label"]), "unscorable", max_invalid_share=0.5)
    assert report.rows_in == 5 and report.rows_predicted == 3 and report.rows_quarantined == 2
    quarantine = pd.read_parquet(output / "_quarantine").set_index("doc_id")
    assert quarantine.loc[rows.at[1, "doc_id"], "_reasons"] == "mask:empty;tokens:empty"
    assert quarantine.loc[rows.at[3, "doc_id"], "_reasons"] == "model:failed"
    batch = pd.read_parquet(output).set_index("doc_id")
    registry = Registry(world.repository, "byom_text")
    for i in (0, 2, 4):
        alone = _in_process(Case(case.spec, case.reference, rows.iloc[[i]].reset_index(drop=True)), registry)
        got = batch.loc[rows.at[i, "doc_id"], [f"probability_{c}" for c in case.spec.classes]].to_numpy(float)
        np.testing.assert_allclose(got, alone[0][0], rtol=0, atol=1e-5)


def test_a_preprocess_function_that_raises_costs_only_its_rows(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """A user's preprocess that raises on some rows (a blank image): on the request path those rows answer
    ``image:preprocess`` and the others are preprocessed as usual (its error logged once); the batch scorer
    records them with that reason and scores the rest with the release's own model; a data set's features (the
    training path) refuse with one line naming the rows."""
    from dataclasses import replace

    from inferline.batch import score_frame
    from inferline.features.tensors import PreprocessFailed
    from inferline.release.runtime import onnx_session

    case = world.cases["byom_images"]
    spec = replace(
        case.spec,
        columns=tuple(
            replace(c, preprocess="tests.pipelines.byom_functions:scale_pixels_refusing_blank")
            if c.name == "image"
            else c
            for c in case.spec.columns
        ),
    )
    version = Registry(world.repository, spec.name).current
    state = FeatureState.load(world.repository / f"{spec.name}_preprocess" / str(version) / "feature_state.json")
    state = replace(state, feature_hash=spec.feature_hash())
    contract = compile_contract(spec, state)
    rows = case.rows.head(6).reset_index(drop=True)
    images = np.stack([np.asarray(v) for v in rows["image"]]).reshape(6, 3, 64, 64).astype(np.uint8)
    images[[2, 4]] = 0  # two blank frames
    with caplog.at_level(logging.WARNING, logger="inferline.features.tensors"):
        m, status = contract.featurize({"image": images})
        contract.featurize({"image": images})
    assert list(status) == ["ok", "ok", "image:preprocess", "ok", "image:preprocess", "ok"]
    good = [0, 1, 3, 5]
    np.testing.assert_array_equal(m.tensors["image"][good], images[good].astype("float32") / 127.5 - 1.0)
    assert not m.tensors["image"][[2, 4]].any()
    logged = [r for r in caplog.records if "scale_pixels_refusing_blank" in r.getMessage()]
    assert len(logged) == 1 and "blank image" in logged[0].getMessage()

    frame = pd.DataFrame({"image": list(images.reshape(6, -1))})
    model = world.repository / f"{spec.name}_model" / str(version) / "model.onnx"
    session = onnx_session(str(model), device="cpu", threads=1)
    failed: dict[int, str] = {}
    outputs = score_frame(frame, spec, state, session, "pandas", contract, failed=failed)
    assert failed == {2: "image:preprocess", 4: "image:preprocess"}
    alone = score_frame(frame.iloc[good].reset_index(drop=True), spec, state, session, "pandas", contract)
    np.testing.assert_allclose(outputs["probabilities"][good], alone["probabilities"], rtol=0, atol=1e-6)
    with pytest.raises(PreprocessFailed, match=r"raised on 2 of 6 rows .*blank image.*'image:preprocess'"):
        contract.features(frame)


OUTSIDE_SPEC = """
from inferline.features.rules import between, finite
from inferline.features.spec import Column, ModelParams, PipelineSpec

SPEC = PipelineSpec(
    name="outside",
    version=1,
    columns=(
        Column("item_id", "id", unique=True),
        Column(
            "embedding", "tensor", dtype="FP32", shape=(8,), rules=(finite(), between(-10.0, 10.0)),
            preprocess="outside_pkg.functions:halve",
        ),
        Column("label", "label", required=False),
    ),
    features=(),
    label="label",
    classes=("no", "yes"),
    model=ModelParams(max_batch_size=8),
)
"""
OUTSIDE_FUNCTIONS = """
def halve(xp, batch):
    if bool((batch[:, 0] == 9.0).any()):  # a user's function that fails on some rows
        raise ValueError("9.0 is a sentinel, not a measurement")
    return batch * 0.5
"""


def test_a_pipeline_outside_inferline_is_served_through_pythonpath_and_predicted_from_its_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's pipeline and preprocessing function in a folder of their own (not inferline's, not the working
    directory): with that folder on PYTHONPATH where the server starts, real Triton's stubs import them (the
    documented route: serving/stub_env.py) and answer as PyTorch does; ``serve predict`` calls it from the
    release's spec snapshot, from another folder and without PYTHONPATH."""
    user = tmp_path / "user_code"
    (user / "outside_pkg").mkdir(parents=True)
    (user / "outside_pkg" / "__init__.py").write_text("")
    (user / "outside_pkg" / "pipeline.py").write_text(OUTSIDE_SPEC)
    (user / "outside_pkg" / "functions.py").write_text(OUTSIDE_FUNCTIONS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join((str(user), str(ROOT))))
    torch.manual_seed(7)
    net = byom_models.VectorMLP(8, 2)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    repository = tmp_path / "repo"
    done = _cli(
        "export", "publish", "--module", "tests.pipelines.byom_models:vector_mlp", "--checkpoint",
        str(tmp_path / "weights.pt"), "--spec", "outside_pkg.pipeline", "--repository", str(repository),
        "--no-load-check",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    elsewhere = tmp_path / "elsewhere"  # the server's working directory: nothing importable there
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PYTHONPATH", str(user))  # the user's folder only: the documented route
    rows = load_pipeline_module("tests.pipelines.byom_vector").generate(5, seed=3).drop(columns=["label"])
    embedding = np.stack(rows["embedding"].to_list()).astype(np.float32)
    with torch.no_grad():
        reference = ScoringModel(net.eval(), 0.5, "binary").eval()(torch.from_numpy(embedding * 0.5))[0].numpy()
    server = TritonServer(ServerConfig.on_free_ports(repository, tmp_path / "work")).start(timeout_s=120)
    try:
        assert server.status()["outside"].state == "READY", server.log_tail()
        spec = read_spec(repository / "outside_preprocess" / "1" / "spec.json")
        for protocol, url in (("http", server.config.http_url), ("grpc", server.config.grpc_url)):
            with InferlineClient(url, protocol, pipeline="outside", spec=spec) as client:  # type: ignore[arg-type]
                served = client.predict(rows)
                assert served.status == ["ok"] * 5
                np.testing.assert_allclose(served.probabilities, reference, rtol=0, atol=1e-5)
                # the user's function raises on one row of a request: that row answers its reason, not the request
                sentinel = rows.copy()
                sentinel.at[2, "embedding"] = np.array([9.0, *embedding[2, 1:]], np.float32)
                served = client.predict(sentinel)
                assert served.status == ["ok", "ok", "embedding:preprocess", "ok", "ok"]
                np.testing.assert_allclose(served.probabilities[[0, 1, 3, 4]], reference[[0, 1, 3, 4]], atol=1e-5)

        monkeypatch.delenv("PYTHONPATH")
        atomic_write_parquet(tmp_path / "rows.parquet", rows)
        predicted = subprocess.run(
            [sys.executable, "-m", "inferline", "serve", "predict", "--pipeline", "outside", "--url",
             server.config.http_url, "--repository", str(repository), "--file", str(tmp_path / "rows.parquet")],
            capture_output=True, text=True, timeout=120, cwd=elsewhere,
        )  # fmt: skip
        assert predicted.returncode == 0, predicted.stderr
        answers = [json.loads(line) for line in predicted.stdout.splitlines()]
        assert [a["status"] for a in answers] == ["ok"] * 5 and [a["release"] for a in answers] == ["outside:1"] * 5
        np.testing.assert_allclose([a["probabilities"] for a in answers], reference, rtol=0, atol=1e-5)
    finally:
        server.stop()
