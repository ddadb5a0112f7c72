"""The Grafana dashboard over the metrics the monitor exports (``inferline monitor grafana``), with the rollout panels
over the edge's (``serving.edge_route``, in the supervisor's registry), and the metric names its PromQL expressions
read (:func:`dashboard_metric_names`), which the tests compare with what a Prometheus scraped so that no panel reads
a series that neither the monitor nor the edge exports. Kept apart from the HTML report (``monitor.report``):
the two share no code, and the dashboard changes with the exported metrics, the report with the snapshots.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["dashboard_metric_names", "grafana_dashboard"]


def grafana_dashboard() -> dict[str, Any]:
    """A Grafana dashboard (schema 39) over the monitor's metrics and the edge's rollout metrics; import it and pick
    the Prometheus data source (one that scrapes the monitor and the supervisor).
    Latency percentiles come from the mergeable histogram (``histogram_quantile`` over its buckets), never from
    a per-monitor gauge, so they aggregate across monitors."""

    def panel(i: int, title: str, exprs: list[tuple[str, str]], unit: str, kind: str = "timeseries") -> dict[str, Any]:
        return {
            "id": i,
            "type": kind,
            "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * ((i - 1) % 2), "y": 8 * ((i - 1) // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [
                {"refId": chr(65 + j), "expr": e, "legendFormat": legend} for j, (e, legend) in enumerate(exprs)
            ],
        }

    rate = "rate(inferline_request_latency_seconds_bucket[5m])"
    q = "histogram_quantile({q}, sum by (le, side, model, version) (" + rate + "))"
    panels = [
        panel(
            1,
            "Latency p50 / p95 / p99 (fleet-wide, from mergeable histograms)",
            [
                (q.format(q=x), f"p{round(x * 100)} {{{{side}}}} {{{{model}}}}:{{{{version}}}}")
                for x in (0.5, 0.95, 0.99)
            ],
            "s",
        ),
        panel(
            2,
            "Drifted features and model outputs",
            [("inferline_drift_detected == 1", "{{feature}}"), ("inferline_drift_p_value", "p {{feature}}")],
            "short",
        ),
        panel(
            3,
            "Per-class error rate (delayed labels)",
            [("inferline_class_error_rate", "{{cls}}"), ("inferline_class_recall", "recall {{cls}}")],
            "percentunit",
        ),
        panel(
            4,
            "Utilization",
            [
                ("inferline_host_cpu_utilization_ratio", "host CPU"),
                ("inferline_server_cpu_utilization_cores", "Triton CPU (cores)"),
                ("inferline_gpu_utilization_ratio", "GPU {{gpu}}"),
            ],
            "percentunit",
        ),
        panel(
            5,
            "Triton failure ratio and monitored rows by status",
            [
                ("inferline_triton_failure_ratio", "failures {{model}}:{{version}}"),
                ("sum by (status) (rate(inferline_monitored_rows_total[5m]))", "rows/s {{status}}"),
            ],
            "short",
        ),
        panel(6, "Drift statistics (PSI)", [('inferline_drift_statistic{statistic="psi"}', "{{feature}}")], "short"),
        panel(
            7,
            "Regression errors (delayed labels; the label's unit)",
            [
                ("inferline_regression_mean_absolute_error", "MAE {{release}}"),
                ("inferline_regression_root_mean_squared_error", "RMSE {{release}}"),
                ("inferline_regression_reference_mean_absolute_error", "holdout MAE {{release}}"),
            ],
            "short",
        ),
        panel(
            8,
            "Estimated performance without labels vs realized once labels join (binary classifiers)",
            [
                ("inferline_estimated_performance", "estimated {{metric}} {{release}}"),
                ("inferline_realized_performance", "realized {{metric}} {{release}}"),
            ],
            "percentunit",
        ),
        panel(
            9,
            "Rows behind the performance estimate",
            [("inferline_performance_estimate_rows", "{{release}}")],
            "short",
        ),
        panel(
            10,
            "Missing values: the window's null share per test (nulls_<column>: every row received)",
            [('inferline_drift_statistic{statistic="null_share"}', "{{feature}}")],
            "percentunit",
        ),
        panel(
            11,
            "Calibration error of the release's scores (holdout, at training): how far to trust the estimate",
            [("inferline_calibration_error", "{{release}}")],
            "short",
        ),
        # a rollout (release.rollout), from the edge's metrics (the supervisor's registry, serving.edge_route):
        # each release as its callers saw it, from the edge's mergeable histogram and counters
        panel(
            12,
            "Rollout: the candidate's share and each release's error ratio (edge)",
            [
                ("inferline_edge_rollout_share", "share {{model}} ({{mode}})"),
                (
                    'sum by (release) (rate(inferline_edge_release_requests_total{outcome="error"}[1m])) '
                    "/ sum by (release) (rate(inferline_edge_release_requests_total[1m]))",
                    "errors {{release}}",
                ),
            ],
            "percentunit",
        ),
        panel(
            13,
            "Rollout: p99 latency per release (edge, from mergeable histograms)",
            [
                (
                    "histogram_quantile(0.99, sum by (release, le) "
                    "(rate(inferline_edge_release_latency_seconds_bucket[1m])))",
                    "p99 {{release}}",
                )
            ],
            "s",
        ),
    ]
    return {
        "title": "inferline",
        "uid": "inferline-monitor",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }


# --- the metric names a dashboard's expressions read -----------------------------------------------------------

_PROMQL_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$\w+)                          # Grafana template variables: $__rate_interval
    | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[a-zA-Z0-9]*)  # 0.99, 1e3, 5m, 1h30m, 0x1f
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<op>[=!]~|[=!<>]=|.)
    )""",
    re.VERBOSE | re.DOTALL,
)
# words that are never metric names: binary operators, modifiers, and the keywords that take a label list
_PROMQL_WORDS = {"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan"}
_PROMQL_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def _promql_metric_names(expr: str) -> Iterator[str]:
    tokens = [(m.lastgroup, m.group(m.lastgroup)) for m in _PROMQL_TOKEN.finditer(expr) if m.lastgroup]
    i, depth_braces, depth_brackets, label_list = 0, 0, 0, -1  # label_list: paren depth of a by (...) list, or -1
    parens = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "op":
            if text == "{":
                depth_braces += 1
            elif text == "}":
                depth_braces -= 1
            elif text == "[":
                depth_brackets += 1
            elif text == "]":
                depth_brackets -= 1
            elif text == "(":
                parens += 1
            elif text == ")":
                parens -= 1
                if parens < label_list:
                    label_list = -1
        elif kind == "ident" and depth_brackets == 0:
            if depth_braces:  # a label matcher; {__name__="x"} names the metric x
                if text == "__name__" and following == "=" and i + 2 < len(tokens) and tokens[i + 2][0] == "string":
                    yield tokens[i + 2][1][1:-1]
            elif text.lower() in _PROMQL_LABEL_LISTS:
                if following == "(":
                    label_list = parens + 1  # the list's identifiers are label names
            elif label_list < 0 and text.lower() not in _PROMQL_WORDS and following != "(":
                if following.lower() not in ("by", "without"):  # sum by (le) (...): an aggregation, not a metric
                    yield text
        i += 1


def dashboard_metric_names(dashboard: Mapping[str, Any]) -> set[str]:
    """The metric names that the target expressions of every panel of ``dashboard`` (rows' nested panels too)
    select, as Prometheus stores the series: a histogram's ``..._bucket``, a counter's ``..._total``, exactly as
    written. That is what to compare with the names a Prometheus scraped (``/api/v1/label/__name__/values``, or
    the sample names, not the family names, of ``prometheus_client.parser``).

    A tokenizer, not a PromQL parser: an identifier is a metric name unless it is a function or aggregation
    (followed by ``(`` or by ``by``/``without``), a keyword or operator word (``by``, ``on``, ``bool``, ``and``,
    ``offset``, ...), a label name (inside ``{...}`` or a ``by (...)`` list), or inside a range ``[...]``. String
    literals, numbers, durations and Grafana variables (``$__rate_interval``) are skipped; ``{__name__="x"}``
    counts as ``x``."""
    names: set[str] = set()

    def panels(items: Any) -> Iterator[Mapping[str, Any]]:
        for p in items or []:
            yield p
            yield from panels(p.get("panels"))

    for p in panels(dashboard.get("panels")):
        for target in p.get("targets") or []:
            if isinstance(target.get("expr"), str):
                names.update(_promql_metric_names(target["expr"]))
    return names
