"""The quality gate (champion/challenger): a release becomes current only if its model is at least as good as the
current release's, on the same labelled rows, by the task's metric, within a declared tolerance.

Protocol (``export publish`` before the registry moves; ``export promote N`` before the pointer moves):

1. The labelled sets are the candidate's own: its training holdout (``holdout.parquet`` of the run, kept in the
   release beside ``model.onnx``) and the golden set the pipeline spec may declare (``PipelineSpec.golden_set``, a
   Parquet or CSV file of labelled raw rows, copied into the release); and the current release's own sets
   (``champion_sets``: named ``release N holdout`` ...), those the candidate does not carry already (by sha256). The
   current release's holdout matters: a candidate trained on damaged labels (shuffled, say) carries a holdout
   damaged the same way, on which both models look alike; on the rows the current release held out, the candidate
   (which may even have trained on them) must still match it. Neither release carrying a set leaves nothing to be
   scored on: the comparison is ``not_comparable`` and says why.
2. Each release scores every set through its OWN contract: its spec snapshot and fitted feature state validate the
   rows (``Contract.validate``) and compute the model inputs, and its ``model.onnx`` answers in process
   (onnxruntime, CPU). Only rows that both contracts accept are scored, so both figures are over the same rows; the
   count is reported.
3. The metric is the task's (``training.metrics``): ROC AUC for binary, macro F1 for multi-class (higher is
   better), RMSE for regression (lower is better). Tolerance: absolute for ROC AUC and macro F1 (default 0.01),
   relative for RMSE (default 0.02, i.e. 2 %).
4. The candidate is ``worse`` when, on any set, ``candidate < current - tol`` (ROC AUC, F1) or ``candidate > current
   * (1 + tol)`` (RMSE). A worse candidate is refused (``QualityGateRefused``: a ``UserError``, exit 1, one line with
   both figures) unless the user accepts it with a reason (``--accept-worse "why"``: status ``accepted_worse``,
   which the registry's audit history records with both figures).

Nothing to compare: ``first_release`` (no current release), ``same_release``, or ``not_comparable`` (no labelled
rows, a different task or class list, no row both contracts accept): recorded, never refused.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from inferline.core.errors import UserError
from inferline.features.spec import PipelineSpec
from inferline.features.state import FeatureState
from inferline.release.resolve import Release

if TYPE_CHECKING:
    from inferline.features.contract import Contract

__all__ = [
    "DEFAULT_TOLERANCE",
    "TASK_METRIC",
    "QualityGateRefused",
    "QualityReport",
    "ReleaseModel",
    "champion_sets",
    "compare",
    "quality_gate",
    "read_labelled",
]

TASK_METRIC = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}
DEFAULT_TOLERANCE = {"roc_auc": 0.01, "macro_f1": 0.01, "rmse": 0.02}  # rmse: relative
HIGHER_IS_BETTER = {"roc_auc": True, "macro_f1": True, "rmse": False}
log = logging.getLogger(__name__)
CHUNK = 4096  # rows per onnxruntime call

Status = Literal["first_release", "same_release", "not_comparable", "passed", "worse", "accepted_worse"]


@dataclass(frozen=True)
class ReleaseModel:
    """What scores rows: a contract (spec + fitted state) and its ONNX model. ``name`` is how messages call it."""

    name: str
    spec: PipelineSpec
    state: FeatureState
    onnx: Path

    @cached_property
    def contract(self) -> Contract:
        """Compiled once per release, whatever the number of labelled sets it scores."""
        from inferline.features.contract import compile_contract

        return compile_contract(self.spec, self.state)

    @cached_property
    def session(self) -> Any:
        """One onnxruntime session per release, loaded on first use."""
        from inferline.release.runtime import onnx_session

        return onnx_session(self.onnx)


@dataclass
class QualityReport:
    """The comparison, as the manifest (``quality``) and the registry record it.

    - ``status``: ``"first_release"`` (nothing was current), ``"same_release"``, ``"not_comparable"`` (``reason``
      says why: no labelled rows, another task, label or classes), ``"passed"``, ``"worse"`` (never made
      current) or ``"accepted_worse"`` (made current with ``--accept-worse``).
    - ``metric``: ``roc_auc`` (binary), ``macro_f1`` (multi-class) or ``rmse`` (regression).
    - ``tolerance``, ``relative``: how much worse the candidate may score (relative for RMSE).
    - ``candidate``, ``current``, ``current_version``: the two releases compared (``"release 2"``, ``"release 1"``,
      1).
    - ``sets``: per labelled set (``holdout``, ``golden``, ``release N holdout``, ...): ``rows`` (accepted by both
      contracts), ``rows_in``, each side's figure (``candidate``, ``current``) and ``worse``; or a ``note`` saying
      why it was not scored.
    - ``reason``: why the releases were not compared (empty when they were).
    - ``accepted_reason``: the ``--accept-worse`` reason, or None.
    """

    status: Status
    metric: str | None = None
    tolerance: float | None = None
    relative: bool = False
    candidate: str | None = None
    current: str | None = None
    current_version: int | None = None
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    reason: str = ""
    accepted_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> dict[str, Any]:
        """The registry's summary of a comparison: status, metric, and both figures per set."""
        sets = {n: {k: s.get(k) for k in ("rows", "candidate", "current")} for n, s in self.sets.items()}
        return {"status": self.status, "metric": self.metric, "against": self.current_version, "sets": sets}

    def figures(self) -> str:
        """``roc_auc on holdout (4500 rows): candidate release 4 0.5123, current release 3 0.9130; ...``."""
        parts = []
        for name, s in self.sets.items():
            if s.get("candidate") is None:
                parts.append(f"{name}: {s.get('note', 'not scored')}")
                continue
            parts.append(
                f"{self.metric} on {name} ({s['rows']} rows): candidate {self.candidate} {s['candidate']:.4f}, "
                f"current {self.current} {s['current']:.4f}"
            )
        return "; ".join(parts)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        if self.status == "first_release":
            return "quality gate: first release, nothing to compare with"
        if self.status == "same_release":
            return f"quality gate: {self.candidate} is already current"
        if self.status == "not_comparable":
            return f"quality gate: not compared with {self.current}: {self.reason}"
        tol = f"{self.tolerance:g}" + (" relative" if self.relative else "")
        verdict = {"passed": "passed", "worse": "WORSE", "accepted_worse": "worse, accepted"}[self.status]
        out = f"quality gate {verdict} (tolerance {tol}): {self.figures()}"
        if self.accepted_reason:
            out += f"; accepted: {self.accepted_reason!r}"
        return out


class QualityGateRefused(UserError, RuntimeError):
    """The candidate scored worse than the current release beyond the tolerance, and was not accepted."""

    docs = "quickstart.md#the-stages-one-command-line-each"

    def __init__(self, report: QualityReport, what: str) -> None:
        self.report = report
        tol = f"{report.tolerance:g}" + (" relative" if report.relative else "")
        super().__init__(
            f"quality gate refused {report.candidate}: worse than {report.current} beyond the tolerance {tol}: "
            f'{report.figures()}. {what} Improve the model, or accept it on purpose with --accept-worse "reason" '
            "(recorded in the registry's history)"
        )


def read_labelled(path: Path, spec: PipelineSpec) -> pd.DataFrame:
    """A labelled set (Parquet or CSV, read by ``features.dataset.read_raw``); refused when it has no label."""
    from inferline.features.dataset import read_raw

    frame = read_raw(Path(path), spec)
    if spec.label not in frame.columns:
        raise UserError(
            f"{path}: the labelled set has no label column {spec.label!r} (columns: {list(frame.columns)}); the "
            "quality gate scores releases on labelled rows: add the label column"
        )
    return frame


def _accepted(model: ReleaseModel, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` (with a ``_row`` number) that ``model``'s contract accepts, as it normalizes them."""
    contract = model.contract
    columns = ["_row", *[c.name for c in model.spec.columns if c.name in frame.columns]]
    return contract.validate(frame[columns], source=model.name, include_label=True, keep=("_row",)).valid


def _outputs(model: ReleaseModel, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The model's outputs (by name) for ``rows`` (valid, in the contract's raw dtypes), in row order."""
    contract, session = model.contract, model.session
    names = [o.name for o in session.get_outputs()]
    out: dict[str, np.ndarray] = {}
    for group in contract.shape_groups(rows):
        for start in range(0, len(group), CHUNK):
            idx = group[start : start + CHUNK]
            feeds = contract.feeds(contract.features(rows.iloc[idx].reset_index(drop=True)))
            got = session.run(names, {k: np.ascontiguousarray(v) for k, v in feeds.items()})
            for name, value in zip(names, got, strict=True):
                if name not in out:
                    out[name] = np.empty((len(rows), *value.shape[1:]), dtype=value.dtype)
                out[name][idx] = value
    return out


def _metric(metric: str, spec: PipelineSpec, y: np.ndarray, outputs: dict[str, np.ndarray]) -> float:
    """The task's metric, computed by ``training.metrics`` as training reports it."""
    from inferline.training.metrics import multiclass_metrics, regression_metrics, roc_auc

    if metric == "rmse":
        return float(regression_metrics(y, outputs["prediction"])["rmse"])
    if metric == "roc_auc":
        return roc_auc(y == 1, outputs["probabilities"][:, 1].astype("float64"))
    return float(multiclass_metrics(y, outputs["predicted_class"].reshape(-1), spec.classes)["macro_f1"])


def _incomparable(candidate: ReleaseModel, current: ReleaseModel) -> str:
    a, b = candidate.spec, current.spec
    if a.task != b.task:
        return f"{candidate.name} is a {a.task} model, {current.name} a {b.task} one"
    if a.classes != b.classes:
        return f"the classes differ ({list(a.classes)} vs {list(b.classes)})"
    if a.label != b.label:
        return f"the labels differ ({a.label!r} vs {b.label!r})"
    return ""


def compare(
    candidate: ReleaseModel,
    current: ReleaseModel | None,
    current_version: int | None,
    sets: dict[str, pd.DataFrame],
    tolerance: float | None = None,
    unreadable: str = "",
) -> QualityReport:
    """Score ``candidate`` and ``current`` on every labelled set (see the module docstring) and decide. ``current``
    None with a ``current_version``: that release could not be read (``unreadable`` says why): not comparable."""
    if current is None and current_version is None:
        return QualityReport("first_release", candidate=candidate.name, reason="no current release")
    if current is None:
        return QualityReport(
            "not_comparable",
            candidate=candidate.name,
            current=f"release {current_version}",
            current_version=current_version,
            reason=unreadable or f"release {current_version} could not be read",
        )
    metric = TASK_METRIC[candidate.spec.task]
    tol = DEFAULT_TOLERANCE[metric] if tolerance is None else float(tolerance)
    if tol < 0 or not math.isfinite(tol):
        raise UserError(f"--quality-tolerance must be a finite number >= 0, got {tolerance!r}")
    report = QualityReport(
        "passed",
        metric=metric,
        tolerance=tol,
        relative=not HIGHER_IS_BETTER[metric],
        candidate=candidate.name,
        current=current.name,
        current_version=current_version,
    )
    why = _incomparable(candidate, current)
    if not why and not sets:
        why = (
            f"{candidate.name} has no labelled rows (a training run's holdout, or the golden set a pipeline spec "
            "declares with golden_set=)"
        )
    if why:
        report.status, report.reason = "not_comparable", why
        return report
    worse = False
    scored = 0
    for name, frame in sets.items():
        frame = frame.reset_index(drop=True).assign(_row=np.arange(len(frame)))
        try:
            ours, theirs = _accepted(candidate, frame), _accepted(current, frame)
        except UserError as exc:  # a set one contract cannot read at all (a column it requires is absent)
            report.sets[name] = {"rows": 0, "candidate": None, "current": None, "note": f"not scored: {exc}"}
            continue
        common = np.intersect1d(ours["_row"].to_numpy(), theirs["_row"].to_numpy())
        ours = ours[ours["_row"].isin(common)].sort_values("_row").drop(columns="_row").reset_index(drop=True)
        theirs = theirs[theirs["_row"].isin(common)].sort_values("_row").drop(columns="_row").reset_index(drop=True)
        entry: dict[str, Any] = {"rows": len(common), "rows_in": len(frame)}
        if not len(common):
            report.sets[name] = {**entry, "candidate": None, "current": None, "note": "no row both contracts accept"}
            continue
        y = ours[candidate.spec.label].to_numpy(dtype="float64" if metric == "rmse" else "int64")
        a = _metric(metric, candidate.spec, y, _outputs(candidate, ours))
        b = _metric(metric, current.spec, y, _outputs(current, theirs))
        if not (math.isfinite(a) and math.isfinite(b)):
            report.sets[name] = {**entry, "candidate": None, "current": None, "note": f"{metric} undefined here"}
            continue
        entry.update(candidate=a, current=b)
        entry["worse"] = bool(a < b - tol if HIGHER_IS_BETTER[metric] else a > b * (1 + tol))
        worse |= entry["worse"]
        scored += 1
        report.sets[name] = entry
    if not scored:
        report.status = "not_comparable"
        report.reason = "; ".join(f"{n}: {s.get('note')}" for n, s in report.sets.items())
    elif worse:
        report.status = "worse"
    return report


def release_model(repository: Path, pipeline: str, version: int) -> ReleaseModel:
    """Release ``version`` as it serves: its spec snapshot, fitted state and model.onnx, each checked against its
    manifest (``Release.open``)."""
    release = Release.open(Path(repository), pipeline, version)  # pre-snapshot releases: the live module's spec
    return ReleaseModel(f"release {version}", release.spec(), release.state(), release.model_path)


def current_release(repository: Path, pipeline: str, version: int | None) -> tuple[ReleaseModel | None, str]:
    """The current release to compare with, or None and why it cannot be read (a damaged or pre-snapshot release
    must not block publishing the one that replaces it: the comparison is then ``not_comparable``)."""
    if version is None:
        return None, ""
    try:
        return release_model(repository, pipeline, version), ""
    except UserError as exc:
        return None, f"release {version} cannot be read ({exc})"


def release_sets(
    repository: Path, pipeline: str, version: int, spec: PipelineSpec, skip: Collection[str] = ()
) -> tuple[dict[str, pd.DataFrame], set[str]]:
    """The labelled sets release ``version`` carries (its manifest's ``quality_sets``, beside model.onnx), each
    checked against the manifest's sha256, except those whose sha256 is in ``skip`` (not read); and every set's
    sha256. None for a release published before the quality gate."""
    from inferline.core.files import sha256_file
    from inferline.release.registry import Registry, RegistryError, model_names

    folder = Path(repository) / model_names(pipeline)["model"] / str(version)
    entries = Registry(Path(repository), pipeline).manifest(version).quality_sets
    out = {}
    for name, entry in entries.items():
        if entry.sha256 in skip:
            continue
        path = folder / entry.file
        if not path.is_file() or sha256_file(path) != entry.sha256:
            raise RegistryError(
                f"{path}: release {pipeline}:{version}'s {name} set is missing or does not match its manifest; the "
                "repository was modified after publishing: republish the release"
            )
        out[name] = read_labelled(path, spec)
    return out, {entry.sha256 for entry in entries.values()}


def champion_sets(
    repository: Path, pipeline: str, version: int | None, current: ReleaseModel | None, skip: Collection[str] = ()
) -> dict[str, pd.DataFrame]:
    """The labelled sets the current release ``version`` carries, read through its own spec and named ``release N
    <set>``, except those whose sha256 is in ``skip`` (the candidate's copy of the same file). A current release
    whose sets cannot be read adds none (it must not block the release that replaces it)."""
    from inferline.release.registry import RegistryError, model_names

    if version is None or current is None:
        return {}
    try:
        sets, _ = release_sets(repository, pipeline, version, current.spec, skip)
    except (UserError, RegistryError, OSError, ValueError) as exc:
        folder = Path(repository) / model_names(pipeline)["model"] / str(version)
        log.warning("release %d's labelled sets in %s are not used: %s", version, folder, exc)
        return {}
    return {f"release {version} {name}": frame for name, frame in sets.items()}


def decide(report: QualityReport, accept_worse: str | None, enforce: bool, what: str) -> QualityReport:
    """A worse candidate: ``accepted_worse`` with ``accept_worse`` (a non-empty reason), else refused when
    ``enforce`` (it would become current), else recorded as ``worse``. ``what``: the refusal's consequence."""
    if accept_worse is not None and not accept_worse.strip():
        raise UserError('--accept-worse needs a reason for the audit history, e.g. --accept-worse "fewer features"')
    if report.status != "worse":
        return report
    if accept_worse is not None:
        report.status, report.accepted_reason = "accepted_worse", accept_worse.strip()
        return report
    if enforce:
        raise QualityGateRefused(report, what)
    return report


def quality_gate(
    repository: Path,
    pipeline: str,
    candidate: ReleaseModel,
    current: int | None,
    sets: dict[str, pd.DataFrame],
    shas: Collection[str],
    tolerance: float | None,
    accept_worse: str | None,
    enforce: bool,
    what: str,
) -> QualityReport:
    """The gate as publish and promote run it: ``candidate`` (with its own labelled ``sets``, whose sha256 are
    ``shas``) against release ``current`` on those sets and the current release's own (``champion_sets``), then
    ``decide`` (``enforce``: refuse a worse candidate, saying ``what`` follows)."""
    theirs, unreadable = current_release(repository, pipeline, current)
    sets = {**sets, **champion_sets(repository, pipeline, current, theirs, shas)}
    return decide(compare(candidate, theirs, current, sets, tolerance, unreadable), accept_worse, enforce, what)


def promotion_report(
    repository: Path, pipeline: str, version: int, tolerance: float | None = None, accept_worse: str | None = None
) -> QualityReport:
    """``export promote N``: release ``version`` against the current release on ``version``'s own labelled sets;
    raises ``QualityGateRefused`` when it is worse and not accepted."""
    from inferline.release.registry import Registry

    current = Registry(Path(repository), pipeline).current
    candidate = release_model(repository, pipeline, version)
    if current == version:
        return QualityReport("same_release", candidate=candidate.name, current=candidate.name)
    sets, shas = release_sets(repository, pipeline, version, candidate.spec)
    return quality_gate(
        repository,
        pipeline,
        candidate,
        current,
        sets,
        shas,
        tolerance,
        accept_worse,
        True,
        f"Release {current} stays current.",
    )
