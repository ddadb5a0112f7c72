"""Alerts reach real sinks: a webhook receiver on 127.0.0.1, a JSON-lines file, a Prometheus registry, the log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inferline.core.alerts import Alert, Alerter, JsonlSink, LogSink, PrometheusSink, WebhookSink
from inferline.core.processes import free_port
from tests.conftest import Receiver


def test_every_sink_delivers(receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    jsonl = tmp_path / "alerts.jsonl"
    alerter = Alerter([LogSink(), JsonlSink(jsonl), WebhookSink(receiver.url), PrometheusSink(registry)])
    alert = Alert("training", "invalid_share_exceeded", "critical", "too many bad rows", {"share": 0.12})
    with caplog.at_level(logging.INFO, logger="inferline.alerts"):
        assert alerter.emit(alert) == {}
        alerter.emit(alert)
    assert receiver.arrived.wait(5)
    assert receiver.received[0] == alert.as_dict()
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["details"] == {"share": 0.12}
    value = registry.get_sample_value(
        "inferline_alerts_total", {"source": "training", "severity": "critical", "reason": "invalid_share_exceeded"}
    )
    assert value == 2.0
    assert "[training] invalid_share_exceeded: too many bad rows" in caplog.text


def test_a_broken_webhook_does_not_silence_the_other_sinks(tmp_path: Path) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    dead = WebhookSink(f"http://127.0.0.1:{free_port()}/", timeout_s=1, retries=1, backoff_s=0.01)
    failures = Alerter([dead, JsonlSink(jsonl)]).emit(Alert("export", "parity_gate_failed", "critical", "x"))
    assert set(failures) == {"webhook"} and "unreachable after 2 attempts" in failures["webhook"]
    assert json.loads(jsonl.read_text())["reason"] == "parity_gate_failed"
    with pytest.raises(ValueError, match="must start with http"):
        WebhookSink("ftp://example")


def test_built_in_rules_fit_every_pipeline_and_match_the_committed_prometheus_file(tmp_path: Path) -> None:
    """No built-in rule names a pipeline, a class or a feature: targets are groups (any feature, any output, the
    worst class) or the watched pipeline's placeholder; the committed Prometheus file is what the rules give."""
    import yaml

    from inferline.monitor.rules import DEFAULT_RULES, PIPELINE, prometheus_rules

    for rule in DEFAULT_RULES:
        assert rule.target in ("*", "prediction", PIPELINE, f"server|{PIPELINE}"), rule
    generated = prometheus_rules(DEFAULT_RULES, 5.0)
    text = json.dumps(generated)
    assert "fraud" not in text and "legit" not in text and PIPELINE not in text
    committed = yaml.safe_load((Path(__file__).parents[2] / "monitor/prometheus/inferline-rules.yml").read_text())
    assert committed == generated, "regenerate it: inferline monitor rules"
    named = json.dumps(prometheus_rules(DEFAULT_RULES, 5.0, pipeline="loans"))
    assert 'model=\\"loans\\"' in named and "inferline_monitor_info" not in named


def test_rules_name_the_watched_pipeline_and_refuse_what_cannot_be_read(tmp_path: Path) -> None:
    from inferline.monitor.rules import AlertRule, RulesError, load_rules

    rule = AlertRule("p99", "latency", target="server|{pipeline}", statistic="p99", threshold=0.1)
    snapshot = {
        "pipeline": {
            "name": "loans",
            "task": "binary",
            "classes": ["repaid", "defaulted"],
            "tabular_features": 3,
            "labels": True,
        },
        "latency": {"server|loans|1": {"p99": 0.3}, "server|fraud|2": {"p99": 9.0}},
    }
    assert rule.value(snapshot) == 0.3  # the watched pipeline's model only
    for bad, expected in (
        ({"name": "x", "kind": "drfit"}, "kind 'drfit'"),
        ({"name": "x", "kind": "latency", "target": "fraud", "statistic": "p99"}, "side|model"),
        ({"name": "x", "kind": "regression_error", "statistic": "mse"}, "mae_ratio"),
    ):
        path = tmp_path / "rules.json"
        path.write_text(json.dumps([bad]))
        with pytest.raises(RulesError, match=expected):
            load_rules(path)
