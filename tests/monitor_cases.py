"""What tests/unit/test_monitor.py (the tests that start no process) and tests/system/test_monitor.py (those that do)
both use: helpers and case tables kept in one place."""

from __future__ import annotations


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
