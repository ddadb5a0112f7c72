"""What tests/unit/test_monitor.py (the tests that start no process) and tests/system/test_monitor.py (those that do)
both use, and the edge's metric names that tests/unit/test_rollout_panels.py and tests/system/test_prometheus.py
compare the dashboard with: helpers and case tables kept in one place."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from inferline.serving.edge_route import Router


def nvml_devices() -> int | None:
    """NVML asked directly, as the oracle for the sampler's state: None where it cannot start, else its count."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver: NVML cannot start
        return None
    try:
        return int(pynvml.nvmlDeviceGetCount())
    finally:
        pynvml.nvmlShutdown()


def expected_nvml_state() -> tuple[str, int]:
    devices = nvml_devices()
    return ("library_missing", 0) if devices is None else ("ok", devices) if devices else ("no_device", 0)


def edge_metric_names() -> set[str]:
    """The series names the edge's router exports (``serving.edge_route``, in the supervisor's registry), built in a
    fresh registry with one label set each: a counter's ``_total``, a histogram's ``_bucket``, as Prometheus stores
    them (what ``dashboard_metric_names`` returns)."""
    registry = CollectorRegistry()
    router = Router(None, registry)
    for counter in (router.requests, router.shadows):
        counter.labels("fraud", "fraud:1", "ok")
    router.latency.labels("fraud", "fraud:1")
    router.share.labels("fraud", "canary")
    return {sample.name for family in registry.collect() for sample in family.samples}
