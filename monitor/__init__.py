"""inferline monitor: the service that watches a served pipeline (latency, errors, drift, estimated and realized
performance, GPU utilization), its Prometheus metrics and alert rules, its report, and the automatic rollback.
Alerts themselves are ``inferline.core.alerts``: every stage raises them."""
