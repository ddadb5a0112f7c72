"""What the monitor computes over a release's window: the release itself, loaded once from the registry (spec
snapshot, fitted feature state, tabular contract, reference profile), the drift of the window against that profile,
and a classifier's estimated and realized performance.

The functions here hold no state and take no lock: ``monitor.service.Monitor`` copies its window out under its lock
and hands it over, so a drift evaluation never blocks ingestion.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from inferline.core.reference import CategoricalReference, MissingReference, NumericReference, bin_counts
from inferline.features.contract import Contract, compile_contract
from inferline.features.spec import PipelineSpec, read_spec
from inferline.features.state import FeatureState
from inferline.monitor.drift import FeatureDrift, drift_report
from inferline.monitor.outputs import PREDICTED_CLASS, OutputReferences, SamplesError, class_names, output_references
from inferline.monitor.performance import estimated_performance, realized_enough, realized_performance
from inferline.monitor.windows import Chunk
from inferline.release.registry import Registry
from inferline.training.profile import missing_columns

__all__ = ["ReleaseReferences", "load_release", "performance_figures", "tabular_contract", "window_drift"]


def tabular_contract(spec: PipelineSpec, state: FeatureState) -> Contract | None:
    """The release's contract over its tabular columns only (None when it has no tabular features): the monitor
    featurizes what samples carry, and they carry no tensor columns. The state is checked against the release's
    full spec first; the tabular view is the same columns, rules and features, less the tensor columns."""
    state.check(spec)
    if not spec.features:
        return None
    if not spec.tensor_columns:
        return compile_contract(spec, state)
    view = replace(spec, columns=tuple(c for c in spec.columns if c.kind != "tensor"))
    return compile_contract(view, replace(state, feature_hash=view.feature_hash()))


@dataclass(frozen=True)
class ReleaseReferences:
    """A release, loaded once: its spec snapshot, fitted state and tabular contract, and the reference profile
    every drift evaluation of its window compares against."""

    spec: PipelineSpec
    state: FeatureState
    contract: Contract | None
    numeric: dict[str, NumericReference]
    categorical: dict[str, CategoricalReference]
    outputs: OutputReferences
    reference_mae: float | None  # the release's holdout MAE (regression), the baseline of its label errors
    missing: dict[str, MissingReference] = field(default_factory=dict)  # raw column -> training nulls
    calibration_error: float | None = None  # a classifier's holdout calibration error, measured at training time


def load_release(registry: Registry, watched: PipelineSpec, release: str) -> ReleaseReferences:
    """The release ``release`` (``fraud:2``) of the watched pipeline, read from the registry: its spec snapshot
    (``watched`` when the release has none), feature state, tabular contract and reference profile. A release of
    another pipeline, or not named ``<pipeline>:<version>``, is refused (``SamplesError``)."""
    pipeline, _, version = release.partition(":")
    if pipeline != watched.name or not version.isdigit():
        raise SamplesError(
            f"samples name release {release!r}, but this monitor watches pipeline {watched.name!r}; "
            f"expected '{watched.name}:<version>'"
        )
    files = registry.release_files(int(version))
    spec = read_spec(files["spec"]) if "spec" in files else watched
    state = FeatureState.load(files["feature_state"])
    contract = tabular_contract(spec, state)  # this monitor's own: it remembers categorical verdicts
    profile = registry.reference_profile(int(version))
    metrics = registry.manifest(int(version)).metrics or {}
    mae = metrics.get("mae") if spec.task == "regression" else None
    return ReleaseReferences(
        spec=spec,
        state=state,
        contract=contract,
        numeric={name: NumericReference.from_dict(profile["numeric"][name]) for name in state.numeric},
        categorical={name: CategoricalReference.from_dict(profile["categorical"][name]) for name in state.categorical},
        outputs=output_references(profile, spec),
        reference_mae=float(mae) if isinstance(mae, int | float) and mae > 0 else None,
        missing={c: MissingReference.from_dict(d) for c, d in (profile.get("missing") or {}).items()},
        calibration_error=(profile.get("calibration") or {}).get("error"),
    )


def window_drift(
    refs: ReleaseReferences,
    window: Chunk,
    nulls: np.ndarray | None,
    received: int,
    alpha: float,
    min_samples: int,
) -> tuple[list[FeatureDrift], dict[str, Any]]:
    """Drift of a release's window against its reference profile: every tabular feature, every output test
    (``monitor.outputs``) and the null share of every raw column over the ``received`` rows (``nulls`` per
    missing column), with the binned histogram of each numeric output beside the report."""
    missing = {}
    if nulls is not None:
        for j, c in enumerate(missing_columns(refs.spec)):
            if c.name in refs.missing:
                missing[c.name] = (refs.missing[c.name], int(nulls[j]), received)
    state = refs.state
    outputs: dict[str, tuple[NumericReference | CategoricalReference, Any]] = {
        name: (ref, window.values[:, column]) for name, (column, ref) in refs.outputs.numeric.items()
    }
    if refs.outputs.predicted_class is not None:
        outputs[PREDICTED_CLASS] = (refs.outputs.predicted_class, class_names(refs.spec.classes, window.predicted))
    histograms = {
        name: {
            "edges": ref.edges,
            "reference_counts": list(ref.counts),
            "current_counts": [int(c) for c in bin_counts(window.values[:, column], ref.edges)],
        }
        for name, (column, ref) in refs.outputs.numeric.items()
    }
    report = drift_report(
        numeric={name: (refs.numeric[name], window.numeric[:, i]) for i, name in enumerate(state.numeric)},
        categorical={
            name: (refs.categorical[name], window.categorical[:, j]) for j, name in enumerate(state.categorical)
        },
        outputs=outputs,
        alpha=alpha,
        min_samples=min_samples,
        missing=missing,
    )
    return report, histograms


def performance_figures(
    release: str | None,
    window: Chunk | None,
    labeled: tuple[np.ndarray, np.ndarray, np.ndarray],
    classes: int,
    calibration: float | None,
) -> dict[str, Any]:
    """A classifier's figures over the window of ``release``: the label-free estimate (``monitor.performance``,
    CBPE) of its rows, the realized figures of its ``labeled`` rows (scores, predicted classes, labels) when
    enough joined (``realized_enough``), and the calibration error the release measured at training time."""
    realized = None
    if realized_enough(labeled[2], classes):
        realized = realized_performance(*labeled)
    estimated = None
    if window is not None and len(window):
        estimated = estimated_performance(window.values, window.predicted)
    return {
        "release": release,
        "rows": len(window) if window is not None else 0,
        "estimated": estimated,
        "realized": realized,
        "realized_rows": len(labeled[2]),
        "calibration_error": float(calibration) if calibration is not None else None,
    }
