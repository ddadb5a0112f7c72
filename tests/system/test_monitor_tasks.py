"""The monitor for every task, on releases trained, exported, gated and published here (no Triton: the rows are
scored with the release's own ONNX model and contract, as the batch job scores them, and posted to a running
monitor service over HTTP the way the tap and the batch job post them):

- multi-class (``tests.pipelines.species``): one drift test per class probability and one over the predicted
  classes, each verdict equal to scipy's test at the Bonferroni level, delayed labels by class index and name;
- regression (``tests.pipelines.yields``): drift of the predicted values, MAE/RMSE/mean error from delayed float
  labels on /metrics, the built-in rules on its snapshots;
- a tensor pipeline without an id column (``tests.pipelines.glyphs``): tensor values are not sent, feature drift
  covers the tabular feature, labels are refused with a clear error.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from prometheus_client.parser import text_string_to_metric_families

from inferline.core.alerts import Alerter, JsonlSink
from inferline.core.http import post_json
from inferline.core.processes import free_port
from inferline.export.publish import publish
from inferline.features.contract import compile_contract
from inferline.features.spec import PipelineSpec, read_spec
from inferline.features.state import FeatureState
from inferline.features.wire import encode_rows
from inferline.monitor.app import MonitorServer
from inferline.monitor.config import MonitorConfig
from inferline.monitor.rules import DEFAULT_RULES, RuleEngine
from inferline.monitor.service import Monitor
from inferline.release.registry import Registry
from inferline.serving.tap import sample_payload, tabular_arrays
from inferline.training.profile import missing_columns
from inferline.training.train import train
from tests.pipelines import glyphs, species, yields

WINDOW = 3_000
ALPHA = 0.01


@dataclass
class Release:
    """A published release and what scores rows with it: its spec snapshot, compiled contract and ONNX session."""

    repository: Path
    module: ModuleType
    spec: PipelineSpec
    name: str
    contract: Any
    session: Any

    def score(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The release's outputs for ``frame``'s rows, by output name (``features.contract.model_outputs``)."""
        feeds = self.contract.feeds(self.contract.features(frame))
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, feeds), strict=True))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository holding release 1 of each test pipeline, each trained on 6,000 rows."""
    root = tmp_path_factory.mktemp("tasks")
    for module in (species, yields, glyphs):
        data = root / f"{module.SPEC.name}.parquet"
        module.generate(6_000, seed=1).to_parquet(data)
        run = train([data], module.SPEC, root / "runs", seed=0, progress=False)
        publish(run.run_dir, root / "repo", load_check=False)
    return root / "repo"


def release(repository: Path, module: ModuleType) -> Release:
    import onnxruntime

    files = Registry(repository, module.SPEC.name).release_files(1)
    spec = read_spec(files["spec"])
    contract = compile_contract(spec, FeatureState.load(files["feature_state"]))
    session = onnxruntime.InferenceSession(str(files["model"]), providers=["CPUExecutionProvider"])
    return Release(repository, module, spec, f"{spec.name}:1", contract, session)


@pytest.fixture
def monitor_of(repository: Path, tmp_path: Path) -> Iterator[Any]:
    """Starts a monitor service of the test's own for a pipeline, with the built-in alert rules; stops them all."""
    started: list[MonitorServer] = []

    def start(pipeline: str) -> MonitorServer:
        config = MonitorConfig(
            repository=repository,
            pipeline=pipeline,
            port=free_port(),
            drift_window_rows=WINDOW,
            alpha=ALPHA,
            nvml=False,
        )
        rules = RuleEngine(DEFAULT_RULES, Alerter([JsonlSink(tmp_path / f"{pipeline}-alerts.jsonl")]))
        server = MonitorServer(Monitor(config, rules=rules)).start(ticking=False)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def post_samples(monitor: MonitorServer, rel: Release, frame: pd.DataFrame, arrays: dict[str, np.ndarray]) -> Any:
    """Score ``frame`` with the release and post its rows as the batch job does (``serving.tap.sample_payload``)."""
    outputs = rel.score(frame)
    n = len(frame)
    if rel.spec.task == "regression":
        payload = sample_payload(
            arrays, None, None, ["ok"] * n, rel.name, rel.spec.name, source="batch", prediction=outputs["prediction"]
        )
    else:
        payload = sample_payload(
            arrays, outputs["probabilities"], outputs["predicted_class"], ["ok"] * n, rel.name, rel.spec.name
        )
    answer = post_json(f"{monitor.url}/v1/samples", payload, key=monitor.ingest_key)
    assert answer == {"accepted": n, "scored_ok": n, "release": rel.name}
    return outputs


def wire(rel: Release, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return encode_rows(frame.drop(columns=[rel.spec.label]), rel.spec)


def metric_samples(monitor: MonitorServer) -> dict[str, list[Any]]:
    with urllib.request.urlopen(f"{monitor.url}/metrics", timeout=10) as r:
        return {f.name: f.samples for f in text_string_to_metric_families(r.read().decode())}


def post_error(monitor: MonitorServer, route: str, payload: Any) -> tuple[int, str]:
    with pytest.raises(urllib.error.HTTPError) as err:
        post_json(f"{monitor.url}{route}", payload, key=monitor.ingest_key)
    return err.value.code, json.loads(err.value.read())["error"]


def oracle_states(
    rel: Release, features: dict[str, np.ndarray], probabilities: np.ndarray, predicted: np.ndarray
) -> dict[str, str]:
    """Every test's verdict computed here with scipy against the published profile: KS for numeric features and
    each class's probability, chi-square for the predicted classes, all at ``ALPHA`` / number of tests."""
    profile = Registry(rel.repository, rel.spec.name).reference_profile(1)
    classes = rel.spec.classes
    n_tests = len(features) + len(classes) + 1
    level = ALPHA / n_tests
    states = {}
    for name, values in features.items():
        p = scipy.stats.ks_2samp(profile["numeric"][name]["sample"], values, method="asymp").pvalue
        states[name] = "drift" if p < level else "ok"
    for k, name in enumerate(classes):
        p = scipy.stats.ks_2samp(profile["probabilities"][k]["sample"], probabilities[:, k], method="asymp").pvalue
        states[f"probability_{name}"] = "drift" if p < level else "ok"
    reference = [profile["predicted_class"]["counts"].get(str(k), 0) for k in range(len(classes))]
    current = [int((predicted == k).sum()) for k in range(len(classes))]
    table = np.array([reference, current])
    table = table[:, table.sum(axis=0) > 0]
    p = scipy.stats.chi2_contingency(table, correction=False).pvalue
    states["predicted_class"] = "drift" if p < level else "ok"
    return states


def drift_states(snapshot: dict[str, Any]) -> dict[str, str]:
    return {f["feature"]: f["state"] for f in snapshot["drift"]["features"]}


def test_multiclass_drift_per_class_and_errors_from_labels(repository: Path, monitor_of: Any) -> None:
    rel = release(repository, species)
    monitor = monitor_of("species")
    nulls = [f"nulls_{c.name}" for c in missing_columns(species.SPEC)]  # each raw column's missingness
    outputs_tests = [*(f"probability_{c}" for c in species.SPEC.classes), "predicted_class"]
    tests = ["petal_z", "sepal_z", "site_idx", *outputs_tests, *nulls]

    normal = species.generate(WINDOW, seed=11)
    post_samples(monitor, rel, normal, wire(rel, normal))
    snapshot = monitor.monitor.tick()
    assert [f["feature"] for f in snapshot["drift"]["features"]] == tests
    assert {f["feature"]: f["kind"] for f in snapshot["drift"]["features"]} == {
        **{name: "numeric" for name in tests[:2]},
        "site_idx": "categorical",
        **{name: "prediction" for name in outputs_tests},
        **{name: "missing" for name in nulls},
    }
    assert set(drift_states(snapshot).values()) == {"ok"}, drift_states(snapshot)
    assert snapshot["rules"]["states"]["prediction_drift"] == "ok"

    # an upstream with more virginica and fewer versicolor: rows move between those two classes only
    shifted = species.generate(WINDOW, seed=12, virginica_share=0.8)
    outputs = post_samples(monitor, rel, shifted, wire(rel, shifted))
    snapshot = monitor.monitor.tick()
    states = drift_states(snapshot)
    matrix = rel.contract.features(shifted)
    expected = oracle_states(
        rel,
        {"petal_z": matrix.numeric[:, 0], "sepal_z": matrix.numeric[:, 1]},
        outputs["probabilities"],
        outputs["predicted_class"].reshape(-1),
    )
    assert {k: v for k, v in states.items() if k != "site_idx" and k not in nulls} == expected
    assert {states[k] for k in nulls} == {"ok"}, states
    for name in ("probability_versicolor", "probability_virginica", "predicted_class", "sepal_z"):
        assert states[name] == "drift", states
    assert states["petal_z"] == states["site_idx"] == "ok", states
    assert all(f["alpha"] == pytest.approx(ALPHA / len(tests)) for f in snapshot["drift"]["features"])
    histograms = snapshot["drift"]["prediction_histograms"]
    assert set(histograms) == {f"probability_{c}" for c in species.SPEC.classes}
    assert all(sum(h["current_counts"]) == WINDOW for h in histograms.values())

    samples = metric_samples(monitor)
    detected = {s.labels["feature"]: (s.labels["kind"], s.value) for s in samples["inferline_drift_detected"]}
    assert detected["probability_virginica"] == ("prediction", 1.0)
    assert detected["petal_z"] == ("numeric", 0.0)
    info = samples["inferline_monitor_info"][0]
    assert info.labels == {"pipeline": "species", "task": "multiclass"}

    # delayed labels, by class name for half the rows and by class index for the rest
    y = shifted["species"].to_numpy()
    labels = [
        {"specimen_id": i, "label": species.SPEC.classes[int(v)] if n % 2 else int(v)}
        for n, (i, v) in enumerate(zip(shifted["specimen_id"], y, strict=True))
    ]
    assert post_json(f"{monitor.url}/v1/labels", {"labels": labels}, key=monitor.ingest_key) == {
        "joined": WINDOW,
        "unmatched": 0,
    }
    classes = monitor.monitor.status()["classes"]
    predicted = outputs["predicted_class"].reshape(-1)
    for k, name in enumerate(species.SPEC.classes):
        tp = int(((predicted == k) & (y == k)).sum())
        assert classes[name]["predicted"] == int((predicted == k).sum())
        assert classes[name]["precision"] == pytest.approx(tp / (predicted == k).sum())
        assert classes[name]["recall"] == pytest.approx(tp / (y == k).sum())
    snapshot = monitor.monitor.tick()
    worst = max(c["error_rate"] for c in classes.values() if c["predicted"] >= 50)
    assert snapshot["rules"]["values"]["class_error_rate"] == pytest.approx(worst)
    assert snapshot["rules"]["states"]["regression_error_ratio"] == "not_applicable"
    predicted_rows = {s.labels["cls"]: s.value for s in metric_samples(monitor)["inferline_class_predicted_rows"]}
    assert predicted_rows == {name: classes[name]["predicted"] for name in species.SPEC.classes}

    code, error = post_error(monitor, "/v1/labels", {"labels": [{"specimen_id": "S12-0", "label": 7}]})
    assert code == 400 and "not a class of pipeline 'species'" in error and "'setosa'" in error
    code, error = post_error(
        monitor,
        "/v1/samples",
        {"release": rel.name, "columns": wire_json(rel, shifted.head(1)), "status": ["ok"], "prediction": [1.0]},
    )
    assert code == 400 and "multiclass classifier" in error and "not 'prediction'" in error


def test_regression_drift_and_errors_from_delayed_labels(repository: Path, monitor_of: Any) -> None:
    rel = release(repository, yields)
    monitor = monitor_of("yields")

    normal = yields.generate(WINDOW, seed=21)
    post_samples(monitor, rel, normal, wire(rel, normal))
    snapshot = monitor.monitor.tick()
    nulls = {f"nulls_{c.name}": "ok" for c in missing_columns(yields.SPEC)}
    assert drift_states(snapshot) == {"rain_z": "ok", "sun_z": "ok", "prediction": "ok", **nulls}
    kinds = [f["kind"] for f in snapshot["drift"]["features"]]
    assert kinds == ["numeric", "numeric", "prediction", *["missing"] * len(nulls)]
    assert snapshot["classes"] == {} and snapshot["regression"]["rows"] == 0
    assert snapshot["rules"]["states"]["class_error_rate"] == "not_applicable"
    assert snapshot["rules"]["states"]["regression_error_ratio"] in ("ok", "no_data")  # no labels yet

    wet = yields.generate(WINDOW, seed=22, rain_factor=1.6)
    outputs = post_samples(monitor, rel, wet, wire(rel, wet))
    snapshot = monitor.monitor.tick()
    assert drift_states(snapshot) == {"rain_z": "drift", "sun_z": "ok", "prediction": "drift", **nulls}
    profile = Registry(repository, "yields").reference_profile(1)
    p = scipy.stats.ks_2samp(profile["prediction"]["sample"], outputs["prediction"].reshape(-1), method="asymp").pvalue
    prediction = next(f for f in snapshot["drift"]["features"] if f["feature"] == "prediction")
    assert prediction["p_value"] == pytest.approx(p, rel=1e-6, abs=1e-300)
    assert set(snapshot["drift"]["prediction_histograms"]) == {"prediction"}

    # a bad label refuses the whole payload: nothing is joined
    code, error = post_error(
        monitor, "/v1/labels", {"labels": [{"plot_id": "P22-0", "label": 3.0}, {"plot_id": "P22-1", "label": "x"}]}
    )
    assert code == 400 and "labels[1]" in error and "not a finite number" in error
    assert monitor.monitor.status()["labels"]["joined"] == 0

    # delayed float labels: two thirds of the rows, and a few ids the monitor never saw
    y = wet["tonnes"].to_numpy()
    keep = np.arange(WINDOW) % 3 != 0
    labels = [{"plot_id": i, "label": float(v)} for i, v in zip(wet["plot_id"][keep], y[keep], strict=True)]
    labels += [{"plot_id": "nowhere-1", "label": 1.0}, {"plot_id": "nowhere-2", "label": 2.0}]
    assert post_json(f"{monitor.url}/v1/labels", {"labels": labels}, key=monitor.ingest_key) == {
        "joined": int(keep.sum()),
        "unmatched": 2,
    }
    error = outputs["prediction"].reshape(-1)[keep].astype(np.float64) - y[keep]
    mae, rmse = float(np.abs(error).mean()), float(np.sqrt((error**2).mean()))
    snapshot = monitor.monitor.tick()
    errors = snapshot["regression"]
    reference = Registry(repository, "yields").manifest(1).metrics["mae"]
    assert errors["release"] == "yields:1" and errors["rows"] == keep.sum()
    assert errors["mae"] == pytest.approx(mae, rel=1e-9) and errors["rmse"] == pytest.approx(rmse, rel=1e-9)
    assert errors["mean_error"] == pytest.approx(float(error.mean()), rel=1e-9, abs=1e-12)
    assert errors["reference_mae"] == pytest.approx(reference) and errors["mae_ratio"] == pytest.approx(mae / reference)
    assert snapshot["rules"]["values"]["regression_error_ratio"] == pytest.approx(mae / reference)

    samples = metric_samples(monitor)
    by_name = {name: {s.labels.get("release"): s.value for s in found} for name, found in samples.items()}
    assert by_name["inferline_regression_mean_absolute_error"] == {"yields:1": pytest.approx(mae, rel=1e-9)}
    assert by_name["inferline_regression_root_mean_squared_error"] == {"yields:1": pytest.approx(rmse, rel=1e-9)}
    assert by_name["inferline_regression_reference_mean_absolute_error"] == {"yields:1": pytest.approx(reference)}
    assert by_name["inferline_regression_joined_rows"] == {"yields:1": float(keep.sum())}
    assert by_name["inferline_labels_unmatched"] == {None: 2.0}  # exposed as inferline_labels_unmatched_total
    assert "inferline_class_error_rate" not in samples

    code, error = post_error(
        monitor,
        "/v1/samples",
        {"release": rel.name, "columns": wire_json(rel, wet.head(1)), "status": ["ok"], "probabilities": [[1.0]]},
    )
    assert code == 400 and "is a regression" in error and "'prediction'" in error


def wire_json(rel: Release, frame: pd.DataFrame) -> dict[str, list[Any]]:
    from inferline.features.wire import to_json_columns

    return to_json_columns(wire(rel, frame))


def test_tensor_pipeline_without_id_column(repository: Path, monitor_of: Any) -> None:
    rel = release(repository, glyphs)
    monitor = monitor_of("glyphs")
    frame = glyphs.generate(WINDOW, seed=31)
    arrays = {
        "pixels": np.stack(frame["pixels"].to_list()).reshape(-1, 4, 4),  # what a client sends: [n, 4, 4]
        **encode_rows(frame, [glyphs.SPEC.column("ink")]),
    }
    assert set(tabular_arrays(arrays)) == {"ink"}  # the image never travels to the monitor
    payload = sample_payload(arrays, np.zeros((2, 2)), np.zeros(2, np.int64), ["ok", "ok"], rel.name, "glyphs")
    assert set(payload["columns"]) == {"ink"}

    post_samples(monitor, rel, frame, arrays)
    snapshot = monitor.monitor.tick()
    assert drift_states(snapshot) == {
        "ink_z": "ok",
        "probability_blank": "ok",
        "probability_mark": "ok",
        "predicted_class": "ok",
        "nulls_ink": "ok",
    }
    assert snapshot["pipeline"]["tensor_columns"] == ["pixels"] and snapshot["pipeline"]["labels"] is False
    states = snapshot["rules"]["states"]
    assert states["class_error_rate"] == states["regression_error_ratio"] == "not_applicable"
    assert states["feature_drift"] == states["prediction_drift"] == "ok"

    code, error = post_error(monitor, "/v1/labels", {"labels": [{"id": "x", "label": 1}]})
    assert code == 400 and "has no id column" in error and "cannot be joined" in error
