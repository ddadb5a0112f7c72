"""inferline monitor stage. Built so far: the alert interface every stage raises alerts through."""

from inferline.monitor.alerts import Alert, Alerter, AlertSink, JsonlSink, LogSink, PrometheusSink, WebhookSink

__all__ = ["Alert", "AlertSink", "Alerter", "JsonlSink", "LogSink", "PrometheusSink", "WebhookSink"]
