"""Alert rules over the monitor's snapshots, with durations, cooldowns and incidents; and the same rules as a
Prometheus alert-rules file for teams that run Alertmanager.

A rule reads one value from each snapshot (``monitor.service.Monitor.status``):

- ``drift``: 1 if the test ``target`` drifted, else 0; ``*`` = any tabular feature, ``prediction`` = any test of
  the model's outputs (every class's probability and the predicted class, or the regression's prediction; see
  ``monitor.outputs``), any other name = that test (``probability_<class>``, a feature name);
- ``drift_statistic``: a drift statistic (``statistic`` = psi, js, ks, chi_square) of the test ``target``;
- ``class_error_rate``: the error rate among rows predicted as class ``target`` (delayed labels); ``*`` = the
  highest over the classes predicted for at least ``min_rows`` joined rows;
- ``regression_error``: ``statistic`` = mae, rmse or mean_error over the joined labels of the release now served
  (in the label's unit), or mae_ratio (that MAE over the release's holdout MAE: unit-free); at least ``min_rows``;
- ``performance_estimate``: the label-free estimate (``statistic`` = roc_auc, precision, recall) of a classifier's
  quality over the drift window, from its calibrated scores (``monitor.performance``); use ``op`` ``<``;
- ``latency``: a window percentile (``statistic`` = p50, p95, p99) of ``target`` = ``side|model``, in seconds, as
  PromQL's ``histogram_quantile`` reads it from the exported buckets (``monitor.sketch.histogram_quantile``);
- ``error_rate``: Triton's failed / all requests of model ``target`` over the window, the worst served version;
- ``no_data``: 1 when the monitor has nothing to judge (no rows in the drift window, or Triton unreachable).

The same rule is also a PromQL expression (:func:`promql`, :func:`prometheus_rules`) over the metrics the monitor
exports, for a Prometheus that scrapes one monitor or many: with one monitor it is true at exactly the evaluations
where the in-process reading breaches, and ``for`` is set so that both fire at the same evaluation
(``tests/system/test_prometheus.py`` feeds both the same series through ``promtool test rules`` and checks that).

``{pipeline}`` in a target is the watched pipeline's name (the model Triton serves it as), so one rule set fits
every pipeline. No built-in rule names a pipeline, a class or a feature, or assumes a task.

A rule is ``firing`` when its condition held for ``for_windows`` consecutive evaluations, and alerts once per
``cooldown_s``. A value that is absent or NaN never counts as a breach: after ``for_windows`` evaluations without
data the rule is ``no_data`` and raises a ``no_data`` warning instead, so missing metrics can never trigger a
rollback. A rule that cannot apply to the watched pipeline (feature drift without tabular features, class errors
of a regression, label errors without an id column to join labels on, a test or class the pipeline does not have)
is ``not_applicable``: it neither fires nor warns. Critical rules open an incident; the incident stays open (one
rollback at most) until no critical rule has fired for ``resolve_windows`` evaluations.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from inferline.core.alerts import Alert, Alerter, Severity
from inferline.core.errors import UserError

__all__ = [
    "DEFAULT_RULES",
    "RULE_STATES",
    "AlertRule",
    "Evaluation",
    "Incident",
    "RuleEngine",
    "RulesError",
    "load_rules",
    "prometheus_rules",
    "promql",
]

RuleKind = Literal[
    "drift",
    "drift_statistic",
    "class_error_rate",
    "regression_error",
    "performance_estimate",
    "latency",
    "error_rate",
    "no_data",
]
RuleState = Literal["ok", "pending", "firing", "no_data", "not_applicable"]
RULE_STATES: tuple[RuleState, ...] = ("ok", "pending", "firing", "no_data", "not_applicable")
RULE_KINDS: tuple[RuleKind, ...] = get_args(RuleKind)
REGRESSION_STATISTICS = ("mae", "rmse", "mean_error", "mae_ratio")
PERFORMANCE_STATISTICS = ("roc_auc", "precision", "recall")
LATENCY_QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
PIPELINE = "{pipeline}"


class _NotApplicable:
    """What a rule reads from a snapshot of a pipeline it cannot apply to."""

    def __repr__(self) -> str:
        return "NOT_APPLICABLE"


NOT_APPLICABLE = _NotApplicable()


@dataclass(frozen=True)
class AlertRule:
    name: str
    kind: RuleKind
    target: str = "*"
    statistic: str = ""
    op: Literal[">", "<"] = ">"
    threshold: float = 0.5
    for_windows: int = 1
    cooldown_s: float = 300.0
    severity: Severity = "warning"
    description: str = ""
    min_rows: int = 0  # class_error_rate, regression_error: joined rows needed before the rule reads a value

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"rule {self.name!r}: kind {self.kind!r}; expected one of {RULE_KINDS}")
        if self.kind == "regression_error" and self.statistic not in REGRESSION_STATISTICS:
            raise ValueError(
                f"rule {self.name!r}: regression_error statistic {self.statistic!r}; expected one of "
                f"{REGRESSION_STATISTICS}"
            )
        if self.kind == "performance_estimate" and self.statistic not in PERFORMANCE_STATISTICS:
            raise ValueError(
                f"rule {self.name!r}: performance_estimate statistic {self.statistic!r}; expected one of "
                f"{PERFORMANCE_STATISTICS}"
            )
        if self.kind == "latency" and (self.statistic not in LATENCY_QUANTILES or "|" not in self.target):
            raise ValueError(
                f"rule {self.name!r}: latency needs target 'side|model' (e.g. 'server|{PIPELINE}') and statistic "
                f"p50, p95 or p99; got target {self.target!r}, statistic {self.statistic!r}"
            )

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.op == ">" else value < self.threshold

    def target_for(self, pipeline: str | None) -> str:
        """``target`` with ``{pipeline}`` replaced by the watched pipeline's name (kept as is without one)."""
        return self.target if pipeline is None else self.target.replace(PIPELINE, pipeline)

    def value(self, snapshot: dict[str, Any]) -> float | _NotApplicable | None:
        """This rule's reading of ``snapshot``; None when the snapshot does not hold it (or holds NaN),
        ``NOT_APPLICABLE`` when the watched pipeline cannot have it."""
        v = _read(self, snapshot)
        if v is NOT_APPLICABLE:
            return NOT_APPLICABLE
        assert not isinstance(v, _NotApplicable)
        return None if v is None or math.isnan(v) else float(v)


def _read(rule: AlertRule, s: dict[str, Any]) -> float | _NotApplicable | None:
    pipeline: dict[str, Any] | None = s.get("pipeline")  # absent from snapshots of older monitors
    target = rule.target_for(pipeline["name"] if pipeline else None)
    if rule.kind in ("drift", "drift_statistic"):
        return _read_drift(rule, target, s, pipeline)
    if rule.kind == "class_error_rate":
        if pipeline is not None and (pipeline["task"] == "regression" or not pipeline["labels"]):
            return NOT_APPLICABLE
        classes = s.get("classes", {})
        supported = {name: c for name, c in classes.items() if c.get("predicted", 0) >= max(rule.min_rows, 1)}
        if target == "*":
            return max(float(c["error_rate"]) for c in supported.values()) if supported else None
        if pipeline is not None and target not in pipeline["classes"]:
            return NOT_APPLICABLE
        c = supported.get(target)
        return None if c is None else float(c["error_rate"])
    if rule.kind == "regression_error":
        if pipeline is not None and (pipeline["task"] != "regression" or not pipeline["labels"]):
            return NOT_APPLICABLE
        errors = s.get("regression", {})
        if rule.statistic == "mae_ratio" and errors and errors.get("reference_mae") is None:
            return NOT_APPLICABLE  # the release recorded no holdout MAE to compare with
        if errors.get("rows", 0) < max(rule.min_rows, 1):
            return None
        value = errors.get(rule.statistic)
        return None if value is None else float(value)
    if rule.kind == "performance_estimate":
        if pipeline is not None and pipeline["task"] == "regression":
            return NOT_APPLICABLE
        estimated = (s.get("performance") or {}).get("estimated") or {}
        value = estimated.get(rule.statistic)
        return None if value is None else float(value)
    if rule.kind == "latency":
        # the figure PromQL's histogram_quantile gives from the exported buckets (older snapshots: the sketch's)
        values = [
            v.get("histogram", v)[rule.statistic] for k, v in s.get("latency", {}).items() if k.startswith(target + "|")
        ]
        return max(values) if values else None
    if rule.kind == "error_rate":  # per served version, the worst (what inferline_triton_failure_ratio exports)
        counts = [v for k, v in s.get("triton", {}).get("window", {}).items() if k.split(":")[0] == target]
        ratios = [c["failure"] / (c["success"] + c["failure"]) for c in counts if c["success"] + c["failure"]]
        return max(ratios) if ratios else None
    if rule.kind == "no_data":
        window_rows = s.get("drift", {}).get("window_rows", {})
        triton_down = s.get("triton", {}).get("up") == 0 and s.get("triton", {}).get("scraped", True)
        return 1.0 if triton_down or not any(window_rows.values()) else 0.0
    raise ValueError(f"rule {rule.name!r}: unknown kind {rule.kind!r}")


def _read_drift(
    rule: AlertRule, target: str, s: dict[str, Any], pipeline: dict[str, Any] | None
) -> float | _NotApplicable | None:
    features = s.get("drift", {}).get("features", [])
    if rule.kind == "drift" and target in ("*", "prediction"):
        if target == "*" and pipeline is not None and not pipeline["tabular_features"]:
            return NOT_APPLICABLE  # a pipeline of tensor inputs alone: no tabular feature to drift
        group = [f for f in features if (f["kind"] == "prediction") == (target == "prediction")]
        judged = [f for f in group if f["state"] != "not_enough_data"]
        return float(any(f["state"] == "drift" for f in judged)) if judged else None
    f = next((f for f in features if f["feature"] == target), None)
    if f is None:
        # a test the report does not hold: not this pipeline's (once a report exists), or no report yet
        return NOT_APPLICABLE if features and pipeline is not None else None
    if f["state"] == "not_enough_data":
        return None
    if rule.kind == "drift":
        return 1.0 if f["state"] == "drift" else 0.0
    value = f["statistics"].get(rule.statistic)
    return None if value is None else float(value)


DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(
        "prediction_drift",
        "drift",
        target="prediction",
        threshold=0.5,
        for_windows=2,
        severity="critical",
        description="the model's outputs left the training reference: a class probability or the predicted-class "
        "mix (classifiers), the predicted values (regression); KS / chi-square, Bonferroni",
    ),
    AlertRule(
        "feature_drift", "drift", target="*", threshold=0.5, for_windows=2, description="a tabular feature drifted"
    ),
    AlertRule(
        "class_error_rate",
        "class_error_rate",
        target="*",
        threshold=0.6,
        for_windows=3,
        severity="critical",
        min_rows=50,
        description="more than 60 % of the rows predicted as some class were of another class (delayed labels, "
        "classes predicted for at least 50 joined rows)",
    ),
    AlertRule(
        "regression_error_ratio",
        "regression_error",
        statistic="mae_ratio",
        threshold=1.5,
        for_windows=3,
        min_rows=50,
        description="the mean absolute error from delayed labels is over 1.5 times the release's holdout MAE "
        "(at least 50 joined rows)",
    ),
    AlertRule(
        "server_latency_p99",
        "latency",
        target=f"server|{PIPELINE}",
        statistic="p99",
        threshold=0.25,
        for_windows=3,
        description="the pipeline's p99 above 250 ms (Triton traces)",
    ),
    AlertRule(
        "inference_errors",
        "error_rate",
        target=PIPELINE,
        threshold=0.05,
        for_windows=2,
        severity="critical",
        description="more than 5 % of inference requests failed",
    ),
    AlertRule("no_data", "no_data", threshold=0.5, for_windows=3, description="the monitor has nothing to judge"),
)


class RulesError(UserError, ValueError):
    """An alert-rules file that cannot be read as rules."""

    docs = "how-to/alerts-and-rollback.md"


def load_rules(path: Path | None) -> tuple[AlertRule, ...]:
    """Rules from a JSON list of objects with ``AlertRule``'s fields, or the defaults."""
    if path is None:
        return DEFAULT_RULES
    try:
        listed = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RulesError(f"cannot read alert rules from {path} ({exc}); expected a JSON list of rule objects") from exc
    if not isinstance(listed, list):
        raise RulesError(f"{path} holds a JSON {type(listed).__name__}; expected a JSON list of rule objects")
    rules = []
    for i, raw in enumerate(listed):
        try:
            rules.append(AlertRule(**raw))
        except (TypeError, ValueError) as exc:
            name = raw.get("name", "?") if isinstance(raw, dict) else "?"
            raise RulesError(f"{path}: rule {i} ({name}) is not an AlertRule: {exc}") from exc
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise RulesError(f"{path}: rule names repeat: {names}; give each rule a name of its own")
    return tuple(rules)


@dataclass
class _RuleRuntime:
    breaches: int = 0
    missing: int = 0
    state: RuleState = "ok"
    last_alert: float = -math.inf
    last_no_data_alert: float = -math.inf
    value: float | None = None


@dataclass
class Incident:
    id: int
    opened_at: float
    rules: list[str]
    rollback: dict[str, Any] | None = None
    closed_at: float | None = None


@dataclass
class Evaluation:
    at: float
    states: dict[str, RuleState]
    values: dict[str, float | None]
    alerts: list[Alert] = field(default_factory=list)
    critical_firing: list[str] = field(default_factory=list)
    new_incident: Incident | None = None  # the incident this evaluation opened (the rollback trigger)


class RuleEngine:
    def __init__(self, rules: tuple[AlertRule, ...], alerter: Alerter, resolve_windows: int = 3) -> None:
        self.rules = rules
        self.alerter = alerter
        self.resolve_windows = resolve_windows
        self.runtime = {r.name: _RuleRuntime() for r in rules}
        self.incidents: list[Incident] = []
        self._quiet = 0

    @property
    def open_incident(self) -> Incident | None:
        return next((i for i in reversed(self.incidents) if i.closed_at is None), None)

    def evaluate(self, snapshot: dict[str, Any], now: float | None = None) -> Evaluation:
        now = time.time() if now is None else now
        ev = Evaluation(at=now, states={}, values={})
        for rule in self.rules:
            rt = self.runtime[rule.name]
            value = rule.value(snapshot)
            if isinstance(value, _NotApplicable):  # cannot apply to this pipeline: never fires, never warns
                rt.breaches = rt.missing = 0
                rt.state, rt.value = "not_applicable", None
                ev.states[rule.name] = rt.state
                ev.values[rule.name] = None
                continue
            rt.value = value
            if value is None:
                rt.breaches = 0
                rt.missing += 1
                # no reading is no breach: the rule stops firing at once, as its PromQL twin does without a series
                rt.state = "no_data" if rt.missing >= rule.for_windows else "ok"
                if rt.state == "no_data" and now - rt.last_no_data_alert >= rule.cooldown_s:
                    rt.last_no_data_alert = now
                    ev.alerts.append(
                        Alert(
                            source="monitor",
                            reason="no_data",
                            severity="warning",
                            message=f"rule {rule.name!r} has had no data for {rt.missing} evaluations; it cannot "
                            "fire (and never triggers a rollback) until data returns",
                            details={"rule": rule.name, "kind": rule.kind, "target": rule.target},
                        )
                    )
            else:
                rt.missing = 0
                rt.breaches = rt.breaches + 1 if rule.breached(value) else 0
                rt.state = "firing" if rt.breaches >= rule.for_windows else "pending" if rt.breaches else "ok"
                if rt.state == "firing" and now - rt.last_alert >= rule.cooldown_s:
                    rt.last_alert = now
                    ev.alerts.append(
                        Alert(
                            source="monitor",
                            reason=rule.name,
                            severity=rule.severity,
                            message=f"{rule.description or rule.name}: {rule.kind} "
                            f"{rule.target_for(snapshot.get('pipeline', {}).get('name'))} "
                            f"{rule.statistic} = {value:.4g} {rule.op} {rule.threshold:g} for {rt.breaches} "
                            "evaluations",
                            details={"rule": asdict(rule), "value": value, "windows": rt.breaches},
                        )
                    )
                if rt.state == "firing" and rule.severity == "critical":
                    ev.critical_firing.append(rule.name)
            ev.states[rule.name] = rt.state
            ev.values[rule.name] = value
        incident = self.open_incident
        if ev.critical_firing:
            self._quiet = 0
            if incident is None:
                incident = Incident(id=len(self.incidents) + 1, opened_at=now, rules=list(ev.critical_firing))
                self.incidents.append(incident)
                ev.new_incident = incident
            else:
                incident.rules = sorted({*incident.rules, *ev.critical_firing})
        elif incident is not None:
            self._quiet += 1
            if self._quiet >= self.resolve_windows:
                incident.closed_at = now
        for alert in ev.alerts:
            self.alerter.emit(alert)
        return ev


def _watched(selector: str, pipeline: str | None) -> str:
    """A PromQL vector restricted to the series of the watched pipeline's model: ``{pipeline}`` substituted when
    the pipeline is named, else a join on the monitor's own ``inferline_monitor_info`` (per scraped monitor)."""
    if PIPELINE not in selector:
        return selector
    if pipeline is not None:
        return selector.replace(PIPELINE, pipeline)
    plain = selector.replace(f',model="{PIPELINE}"', "").replace(f'model="{PIPELINE}",', "")
    plain = plain.replace(f'{{model="{PIPELINE}"}}', "")
    info = 'label_replace(inferline_monitor_info, "model", "$1", "pipeline", "(.+)")'
    return f"({plain} * on (instance, job, model) group_left () {info})"


def _within(rule: AlertRule, vector: str) -> str:
    """The rule's reading per scraped monitor (``by (instance, job)``), then the monitor that breaches first: the
    highest reading for ``>``, the lowest for ``<``. One monitor: exactly the in-process reading."""
    across = "max" if rule.op == ">" else "min"
    return f"{across}(max by (instance, job) ({vector}))"


def promql(rule: AlertRule, pipeline: str | None = None, window_s: float = 60.0) -> str:
    """The PromQL twin of ``rule.value`` + ``rule.breached`` over the metrics the monitor exports: true (one
    series) exactly when the in-process rule reads a value that breaches. Absent or NaN readings give no series,
    as they give no breach in process. ``window_s`` is the monitor's latency window (``latency_window_s``)."""
    op, t = rule.op, repr(float(rule.threshold))
    target = rule.target
    if rule.kind == "drift":
        if target in ("*", "prediction"):
            kind = '{kind="prediction"}' if target == "prediction" else '{kind!="prediction"}'
            return f"{_within(rule, 'inferline_drift_detected' + kind)} {op} {t}"
        return f"{_within(rule, f'inferline_drift_detected{{feature={json.dumps(target)}}}')} {op} {t}"
    if rule.kind == "drift_statistic":
        selector = f"inferline_drift_statistic{{feature={json.dumps(target)},statistic={json.dumps(rule.statistic)}}}"
        return f"{_within(rule, selector)} {op} {t}"
    if rule.kind == "class_error_rate":
        support = f"inferline_class_predicted_rows >= {max(rule.min_rows, 1)}"
        selector = (
            "inferline_class_error_rate" if target == "*" else f"inferline_class_error_rate{{cls={json.dumps(target)}}}"
        )
        return f"{_within(rule, f'{selector} and on (instance, job, cls) ({support})')} {op} {t}"
    if rule.kind == "regression_error":
        name = {
            "mae": "inferline_regression_mean_absolute_error",
            "rmse": "inferline_regression_root_mean_squared_error",
            "mean_error": "inferline_regression_mean_error",
            "mae_ratio": "inferline_regression_mean_absolute_error"
            " / inferline_regression_reference_mean_absolute_error",
        }[rule.statistic]
        support = f"inferline_regression_joined_rows >= {max(rule.min_rows, 1)}"
        return f"{_within(rule, f'({name}) and on (instance, job, release) ({support})')} {op} {t}"
    if rule.kind == "performance_estimate":
        selector = f"inferline_estimated_performance{{metric={json.dumps(rule.statistic)}}}"
        return f"{_within(rule, selector)} {op} {t}"
    if rule.kind == "latency":
        side, model = target.split("|", 1)
        selector = f"inferline_request_latency_seconds_bucket{{side={json.dumps(side)},model={json.dumps(model)}}}"
        rate = _watched(f"rate({selector}[{round(window_s)}s])", pipeline)
        # buckets summed over every monitor scraped: the percentile of all their requests, per release version
        quantile = f"histogram_quantile({LATENCY_QUANTILES[rule.statistic]}, sum by (le, version) ({rate}))"
        return f"{'max' if op == '>' else 'min'}({quantile}) {op} {t}"
    if rule.kind == "error_rate":
        selector = _watched(f"inferline_triton_failure_ratio{{model={json.dumps(target)}}}", pipeline)
        return f"{_within(rule, selector)} {op} {t}"
    # no_data: 1 when no monitor reports accepted rows in its drift window, or a scraped Triton is down
    rows = "(sum(inferline_drift_window_rows) or vector(0)) == bool 0"
    down = "(min(inferline_triton_up) or vector(1)) == bool 0"
    return f"clamp_max(({rows}) + ({down}), 1) {op} {t}"


def prometheus_rules(
    rules: tuple[AlertRule, ...], interval_s: float, pipeline: str | None = None, window_s: float = 60.0
) -> dict[str, Any]:
    """The rules as a Prometheus alerting-rules group over the monitor's exported metrics, evaluated every
    ``interval_s`` (set the group's interval to the monitor's, as here). ``for`` is ``(for_windows - 1)``
    intervals: Prometheus fires at the evaluation that finds the condition true for ``for`` already, and the
    in-process engine at the ``for_windows``-th consecutive breach, the same evaluation. ``{pipeline}`` targets name
    ``pipeline`` when given; without it the rules select the pipeline each monitor reports watching."""
    return {
        "groups": [
            {
                "name": "inferline",
                "interval": f"{interval_s:g}s",
                "rules": [
                    {
                        "alert": r.name,
                        "expr": promql(r, pipeline, window_s),
                        "for": f"{(r.for_windows - 1) * interval_s:g}s",
                        "labels": {"severity": r.severity},
                        "annotations": {"summary": r.description or r.name},
                    }
                    for r in rules
                ],
            }
        ]
    }
