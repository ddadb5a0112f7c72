"""Alert rules over the monitor's snapshots, with durations, cooldowns and incidents; and the same rules as a
Prometheus alert-rules file for teams that run Alertmanager.

A rule reads one value from each snapshot (``monitor.service.Monitor.status``):

- ``drift``: 1 if the feature (``target``; ``*`` = any feature, ``prediction`` = the score) drifted, else 0;
- ``drift_statistic``: a drift statistic (``statistic`` = psi, js, ks, chi_square) of the feature ``target``;
- ``class_error_rate``: the error rate among rows predicted as class ``target`` (delayed labels);
- ``latency``: a window percentile (``statistic`` = p50, p95, p99) of ``target`` = ``side|model``, in seconds;
- ``error_rate``: Triton's failed / all requests of model ``target`` over the window;
- ``no_data``: 1 when the monitor has nothing to judge (no rows in the drift window, or Triton unreachable).

A rule is ``firing`` when its condition held for ``for_windows`` consecutive evaluations, and alerts once per
``cooldown_s``. A value that is absent or NaN never counts as a breach: after ``for_windows`` evaluations without
data the rule is ``no_data`` and raises a ``no_data`` warning instead, so missing metrics can never trigger a
rollback. Critical rules open an incident; the incident stays open (one rollback at most) until no critical rule
has fired for ``resolve_windows`` evaluations.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from inferline.features.errors import UserError
from inferline.monitor.alerts import Alert, Alerter, Severity

__all__ = [
    "DEFAULT_RULES",
    "AlertRule",
    "Evaluation",
    "Incident",
    "RuleEngine",
    "RulesError",
    "load_rules",
    "prometheus_rules",
]

RuleKind = Literal["drift", "drift_statistic", "class_error_rate", "latency", "error_rate", "no_data"]
RuleState = Literal["ok", "pending", "firing", "no_data"]


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

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.op == ">" else value < self.threshold

    def value(self, snapshot: dict[str, Any]) -> float | None:
        """This rule's reading of ``snapshot``; None when the snapshot does not hold it (or holds NaN)."""
        v = _read(self, snapshot)
        return None if v is None or math.isnan(v) else float(v)


def _read(rule: AlertRule, s: dict[str, Any]) -> float | None:
    if rule.kind in ("drift", "drift_statistic"):
        features = s.get("drift", {}).get("features", [])
        if rule.kind == "drift" and rule.target == "*":
            judged = [f for f in features if f["kind"] != "prediction" and f["state"] != "not_enough_data"]
            return float(any(f["state"] == "drift" for f in judged)) if judged else None
        f = next((f for f in features if f["feature"] == rule.target), None)
        if f is None or f["state"] == "not_enough_data":
            return None
        if rule.kind == "drift":
            return 1.0 if f["state"] == "drift" else 0.0
        value = f["statistics"].get(rule.statistic)
        return None if value is None else float(value)
    if rule.kind == "class_error_rate":
        c = s.get("classes", {}).get(rule.target)
        return None if c is None or not c.get("predicted") else float(c["error_rate"])
    if rule.kind == "latency":
        values = [v[rule.statistic] for k, v in s.get("latency", {}).items() if k.startswith(rule.target + "|")]
        return max(values) if values else None
    if rule.kind == "error_rate":
        counts = [v for k, v in s.get("triton", {}).get("window", {}).items() if k.split(":")[0] == rule.target]
        total = sum(c["success"] + c["failure"] for c in counts)
        return sum(c["failure"] for c in counts) / total if total else None
    if rule.kind == "no_data":
        window_rows = s.get("drift", {}).get("window_rows", {})
        triton_down = s.get("triton", {}).get("up") == 0 and s.get("triton", {}).get("scraped", True)
        return 1.0 if triton_down or not any(window_rows.values()) else 0.0
    raise ValueError(f"rule {rule.name!r}: unknown kind {rule.kind!r}")


DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(
        "prediction_drift",
        "drift",
        target="prediction",
        threshold=0.5,
        for_windows=2,
        severity="critical",
        description="the score distribution left the training reference (KS, Bonferroni)",
    ),
    AlertRule("feature_drift", "drift", target="*", threshold=0.5, for_windows=2, description="a feature drifted"),
    AlertRule(
        "fraud_error_rate",
        "class_error_rate",
        target="fraud",
        threshold=0.6,
        for_windows=3,
        severity="critical",
        description="more than 60 % of rows predicted fraud were not fraud (delayed labels)",
    ),
    AlertRule(
        "server_latency_p99",
        "latency",
        target="server|fraud",
        statistic="p99",
        threshold=0.25,
        for_windows=3,
        description="ensemble p99 above 250 ms (Triton traces)",
    ),
    AlertRule(
        "inference_errors",
        "error_rate",
        target="fraud",
        threshold=0.05,
        for_windows=2,
        severity="critical",
        description="more than 5 % of inference requests failed",
    ),
    AlertRule("no_data", "no_data", threshold=0.5, for_windows=3, description="the monitor has nothing to judge"),
)


class RulesError(UserError, ValueError):
    """An alert-rules file that cannot be read as rules."""


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
        except TypeError as exc:
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
            rt.value = value
            if value is None:
                rt.breaches = 0
                rt.missing += 1
                rt.state = "no_data" if rt.missing >= rule.for_windows else rt.state
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
                            message=f"{rule.description or rule.name}: {rule.kind} {rule.target} "
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


def prometheus_rules(rules: tuple[AlertRule, ...], interval_s: float) -> dict[str, Any]:
    """The rules as a Prometheus alerting-rules group over the monitor's exported metrics."""

    def expr(r: AlertRule) -> str:
        op = r.op
        if r.kind == "drift":
            if r.target == "*":
                return 'max(inferline_drift_detected{kind!="prediction"}) > 0.5'
            return f'inferline_drift_detected{{feature="{r.target}"}} {op} {r.threshold:g}'
        if r.kind == "drift_statistic":
            return f'inferline_drift_statistic{{feature="{r.target}",statistic="{r.statistic}"}} {op} {r.threshold:g}'
        if r.kind == "class_error_rate":
            return f'inferline_class_error_rate{{cls="{r.target}"}} {op} {r.threshold:g}'
        if r.kind == "latency":
            side, model = r.target.split("|", 1)
            q = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}[r.statistic]
            return (
                f'max(inferline_request_latency_window_seconds{{side="{side}",model="{model}",quantile="{q}"}}) '
                f"{op} {r.threshold:g}"
            )
        if r.kind == "error_rate":
            return f'max(inferline_triton_failure_ratio{{model="{r.target}"}}) {op} {r.threshold:g}'
        return (
            "absent(inferline_drift_window_rows) or sum(inferline_drift_window_rows) == 0 or inferline_triton_up == 0"
        )

    return {
        "groups": [
            {
                "name": "inferline",
                "rules": [
                    {
                        "alert": r.name,
                        "expr": expr(r),
                        "for": f"{round(r.for_windows * interval_s)}s",
                        "labels": {"severity": r.severity},
                        "annotations": {"summary": r.description or r.name},
                    }
                    for r in rules
                ],
            }
        ]
    }
