"""The monitor against the real Triton server: traffic through the serving client with a tap, drift injected into
two features, delayed labels, Triton traces and metrics, NVML in whatever state this machine is, /metrics, the
report. Each test has a monitor of its own (its windows, labels and history hold only that test's traffic)."""

from __future__ import annotations

import pytest

from inferline.monitor.utilization import UtilizationSampler
from tests.monitor_cases import expected_nvml_state


def test_nvml_state_follows_what_nvml_reports() -> None:
    """``ok`` with one reading per device when NVML sees GPUs; ``library_missing``/``no_device`` and no reading
    otherwise; ``disabled`` when turned off. Never an exception, and the CPU figures are always there."""
    state, devices = expected_nvml_state()
    sampler = UtilizationSampler(nvml=True)
    assert sampler.state == state and sampler.detail
    reading = sampler.sample()
    assert reading.nvml_state == state and len(reading.gpus) == devices
    assert 0.0 <= reading.host_cpu_ratio <= 1.0 and reading.host_memory_total_bytes > 0
    disabled = UtilizationSampler(nvml=False).sample()
    assert disabled.nvml_state == "disabled" and disabled.gpus == [] and disabled.host_memory_total_bytes > 0


@pytest.mark.gpu
def test_nvml_reads_every_gpu() -> None:
    state, devices = expected_nvml_state()
    assert (state, devices > 0) == ("ok", True)
    gpus = UtilizationSampler(nvml=True).sample().gpus
    assert [g.index for g in gpus] == list(range(devices))
    for g in gpus:
        assert g.name and 0.0 <= g.utilization_ratio <= 1.0 and 0 < g.memory_used_bytes <= g.memory_total_bytes
