"""The alert interface every stage raises alerts through, with sinks for the log, a JSON-lines file, an HTTP
webhook and a Prometheus counter.

A sink that fails (a webhook down, a disk full) never stops the others or the stage that raised the alert: the
failure is logged and returned, so a stage can report it beside its own error.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import urllib.error
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter

from inferline.core.http import Backoff, request

__all__ = [
    "Alert",
    "AlertSink",
    "Alerter",
    "JsonlSink",
    "LogSink",
    "PrometheusSink",
    "WebhookSink",
]

Severity = Literal["info", "warning", "critical"]
log = logging.getLogger("inferline.alerts")
_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


@dataclass(frozen=True)
class Alert:
    source: str  # the stage: training, export, serving, batch, monitor
    reason: str  # machine-readable: invalid_share_exceeded, schema_break, parity_gate_failed, ...
    severity: Severity
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlertSink(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


class LogSink:
    name = "log"

    def send(self, alert: Alert) -> None:
        log.log(_LEVELS[alert.severity], "[%s] %s: %s", alert.source, alert.reason, alert.message)


class JsonlSink:
    """Appends one JSON object per alert; concurrent writers are serialized with a file lock."""

    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def send(self, alert: Alert) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(alert.as_dict(), sort_keys=True, default=str) + "\n").encode()
        with open(self.path, "ab") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class WebhookSink:
    """POSTs the alert as JSON; retries with backoff on connection errors and 5xx answers."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 5.0, retries: int = 2, backoff_s: float = 0.2) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must start with http:// or https://, got {url!r}")
        self.url, self.timeout_s = url, timeout_s
        self.backoff = Backoff(backoff_s, attempts=retries + 1)  # no cap, no jitter: one alert, a few tries

    def send(self, alert: Alert) -> None:
        body = json.dumps(alert.as_dict(), default=str).encode()
        headers = {"Content-Type": "application/json"}
        try:
            request(self.url, body, method="POST", headers=headers, timeout_s=self.timeout_s, retry=self.backoff)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"webhook {self.url} answered {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RuntimeError(f"webhook {self.url} unreachable after {self.backoff.attempts} attempts: {exc}") from exc


class PrometheusSink:
    """Counts alerts as ``inferline_alerts_total{source, severity, reason}`` in the given registry."""

    name = "prometheus"

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter(
            "inferline_alerts",
            "Alerts raised by inferline stages.",
            ["source", "severity", "reason"],
            registry=registry,
        )

    def send(self, alert: Alert) -> None:
        self.counter.labels(alert.source, alert.severity, alert.reason).inc()


class Alerter:
    def __init__(self, sinks: Iterable[AlertSink]) -> None:
        self.sinks = list(sinks)

    def emit(self, alert: Alert) -> dict[str, str]:
        """Deliver to every sink; returns ``{sink: error}`` for the ones that failed (empty when all delivered)."""
        failures: dict[str, str] = {}
        for sink in self.sinks:
            try:
                sink.send(alert)
            except Exception as exc:  # noqa: BLE001 - one broken sink must not silence the others
                failures[sink.name] = str(exc)
                log.error("alert sink %s failed for %s/%s: %s", sink.name, alert.source, alert.reason, exc)
        return failures

    @classmethod
    def from_env(cls, alerts_file: Path | None = None, registry: CollectorRegistry | None = None) -> Alerter:
        """Log always; a JSON-lines file when given; the webhook named by ``INFERLINE_ALERT_WEBHOOK``; a
        Prometheus counter when a registry is given (long-running services)."""
        sinks: list[AlertSink] = [LogSink()]
        if alerts_file is not None:
            sinks.append(JsonlSink(alerts_file))
        if url := os.environ.get("INFERLINE_ALERT_WEBHOOK"):
            sinks.append(WebhookSink(url))
        if registry is not None:
            sinks.append(PrometheusSink(registry))
        return cls(sinks)
