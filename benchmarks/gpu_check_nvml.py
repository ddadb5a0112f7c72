"""Check 3 of ``make gpu-check``: ``inferline.monitor.utilization.UtilizationSampler`` sampled while the GPU runs
matrix products: NVML state ``ok`` and real figures (utilization, memory, power, device name). Where that module
cannot be imported (psutil or prometheus_client missing) NVML is read through pynvml directly, and the report says
so.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from types import ModuleType
from typing import Any

from inferline.benchmarks.gpu_check_result import CheckResult, NotRun, imported, inferline_module, library

__all__ = ["check_nvml"]


def _nvml_direct(pynvml: ModuleType) -> tuple[str, str, Callable[[], list[dict[str, Any]]]]:
    """NVML through pynvml alone, in UtilizationSampler's states (used where inferline's monitor cannot import)."""
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, driver errors
        return "library_missing", f"NVML unavailable: {type(exc).__name__}: {exc}", list
    count = int(pynvml.nvmlDeviceGetCount())
    if count == 0:
        return "no_device", "NVML answers but sees no GPU", list

    def read() -> list[dict[str, Any]]:
        out = []
        for i in range(count):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            try:
                power: float | None = pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0
            except Exception:  # noqa: BLE001 - not every board reports power
                power = None
            name = pynvml.nvmlDeviceGetName(h)
            out.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "utilization_ratio": pynvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
                    "memory_used_bytes": int(mem.used),
                    "memory_total_bytes": int(mem.total),
                    "power_watts": power,
                }
            )
        return out

    return "ok", f"{count} GPU(s), driver {pynvml.nvmlSystemGetDriverVersion()}", read


def _load(seconds: float) -> tuple[str, Callable[[], None]]:
    """Matrix products on the GPU for ``seconds`` (torch, else cupy), so that NVML has work to see."""
    try:
        import torch

        if torch.cuda.is_available():
            a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)

            def run_torch() -> None:
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    for _ in range(8):
                        a @ a
                    torch.cuda.synchronize()

            return "torch bf16 8192x8192 matrix products", run_torch
    except ImportError:
        pass
    import cupy

    b = cupy.random.standard_normal((4096, 4096), dtype=cupy.float32)

    def run_cupy() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            for _ in range(8):
                b @ b
            cupy.cuda.Device().synchronize()

    return "cupy float32 4096x4096 matrix products", run_cupy


def check_nvml(result: CheckResult, load_seconds: float) -> None:
    """Check 3 into ``result``: NVML read idle and during ``load_seconds`` of GPU load; ``NotRun`` without pynvml or
    an NVIDIA GPU."""
    pynvml = library("pynvml", "install nvidia-ml-py (the lent machine has it)")
    read: Callable[[], list[dict[str, Any]]]
    try:
        utilization = inferline_module("inferline.monitor.utilization")
        imported(result, "inferline.monitor.utilization")
    except ModuleNotFoundError as exc:
        if exc.name not in ("psutil", "prometheus_client"):
            raise
        via = f"pynvml directly: inferline.monitor.utilization cannot be imported here ({exc}), so no CPU figures"
        state, detail, read = _nvml_direct(pynvml)
    else:
        sampler = utilization.UtilizationSampler(nvml=True)
        via = "inferline.monitor.utilization.UtilizationSampler"
        state, detail = sampler.state, sampler.detail

        def read_sampler() -> list[dict[str, Any]]:
            u = sampler.sample()
            result.details.setdefault("host", {}).update(
                cpu_ratio=u.host_cpu_ratio, memory_used_bytes=u.host_memory_used_bytes
            )
            return [asdict(g) for g in u.gpus] if u.nvml_state == "ok" else []

        read = read_sampler

    result.details.update(via=via, nvml_state=state, nvml_detail=detail)
    if state != "ok":
        raise NotRun(f"no NVIDIA GPU: NVML state {state!r} ({detail}) via {via}")
    idle = read()
    what, load = _load(load_seconds)
    samples: list[list[dict[str, Any]]] = []
    stop = threading.Event()

    def sample_until_stopped() -> None:
        while not stop.is_set():
            samples.append(read())
            stop.wait(0.2)

    sampler_thread = threading.Thread(target=sample_until_stopped, name="nvml-sampler", daemon=True)
    sampler_thread.start()
    try:
        load()
    finally:
        stop.set()
        sampler_thread.join(timeout=5)
    busy = [s[0] for s in samples if s]
    if not busy or not idle:
        raise RuntimeError(f"NVML state ok but no GPU readings ({len(samples)} samples)")
    peak = max(busy, key=lambda g: g["utilization_ratio"])
    result.details.update(load=what, idle=idle[0], busy_peak=peak, samples=len(busy))
    gib = 1 << 30
    power = "not reported" if peak["power_watts"] is None else f"{peak['power_watts']:.0f} W"
    result.lines += [
        f"via {via}: NVML state {state} ({detail})",
        f"device {peak['name']}; idle: utilization {idle[0]['utilization_ratio']:.0%}, "
        f"memory {idle[0]['memory_used_bytes'] / gib:.1f} / {idle[0]['memory_total_bytes'] / gib:.1f} GiB",
        f"busy ({what}, {len(busy)} samples, peak shown): utilization {peak['utilization_ratio']:.0%}, memory "
        f"{peak['memory_used_bytes'] / gib:.1f} / {peak['memory_total_bytes'] / gib:.1f} GiB, power {power}",
    ]
    problems = [
        what
        for what, ok in (
            ("no device name", bool(peak["name"])),
            ("memory total is 0", peak["memory_total_bytes"] > 0),
            ("memory used is 0 while this process holds GPU memory", peak["memory_used_bytes"] > 0),
            ("utilization stayed 0% under load", peak["utilization_ratio"] > 0),
        )
        if not ok
    ]
    result.status = "failed" if problems else "passed"
    result.reason = "; ".join(problems) or f"NVML ok: {peak['utilization_ratio']:.0%} busy on {peak['name']}"
