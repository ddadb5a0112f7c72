"""Utilization: GPUs through NVML (nvidia-ml-py), with the host and the server process through psutil.

NVML is an explicit state, never an exception: ``disabled`` (turned off by configuration), ``library_missing``
(nvidia-ml-py or libnvidia-ml.so cannot be loaded), ``no_device`` (NVML answers but sees no GPU) or ``ok``. Every
state but ``ok`` reports zero GPUs, and the CPU figures are always there as the fallback.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psutil

__all__ = ["GpuReading", "NvmlState", "Utilization", "UtilizationSampler"]

NvmlState = Literal["disabled", "library_missing", "no_device", "ok"]


@dataclass
class GpuReading:
    index: int
    name: str
    utilization_ratio: float  # 0..1, over NVML's last sample period
    memory_used_bytes: int
    memory_total_bytes: int
    power_watts: float | None  # None where the board does not report power


@dataclass
class Utilization:
    nvml_state: NvmlState
    nvml_detail: str
    gpus: list[GpuReading] = field(default_factory=list)
    host_cpu_ratio: float = 0.0  # 0..1 over all cores, since the previous sample
    host_memory_used_bytes: int = 0
    host_memory_total_bytes: int = 0
    server_pid: int | None = None
    server_cpu_ratio: float | None = None  # of one core (1.0 = one core busy), server process and its children
    server_memory_rss_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class UtilizationSampler:
    """Call ``sample()`` periodically. NVML is initialized once; its failure is recorded as a state."""

    def __init__(self, server_pid: int | None = None, nvml: bool = True) -> None:
        self.server_pid = server_pid
        self._nvml: Any = None
        self.state: NvmlState
        self.detail = ""
        if not nvml:
            self.state, self.detail = "disabled", "NVML sampling turned off (--no-gpu)"
        else:
            self.state, self.detail = self._init_nvml()
        psutil.cpu_percent(None)  # prime: the first call has no interval to measure
        self._procs: dict[int, psutil.Process] = {}

    def _init_nvml(self) -> tuple[NvmlState, str]:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound, driver errors: all "missing"
            return "library_missing", f"NVML unavailable: {type(exc).__name__}: {exc}"
        self._nvml = pynvml
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        except Exception as exc:  # noqa: BLE001
            return "no_device", f"NVML could not count devices: {exc}"
        if count == 0:
            return "no_device", "NVML answers but sees no GPU"
        return "ok", f"{count} GPU(s), driver {pynvml.nvmlSystemGetDriverVersion()}"

    def _gpus(self) -> list[GpuReading]:  # pragma: no cover - needs an NVIDIA GPU
        nv = self._nvml
        out = []
        for i in range(int(nv.nvmlDeviceGetCount())):
            handle = nv.nvmlDeviceGetHandleByIndex(i)
            util = nv.nvmlDeviceGetUtilizationRates(handle)
            mem = nv.nvmlDeviceGetMemoryInfo(handle)
            try:
                power: float | None = nv.nvmlDeviceGetPowerUsage(handle) / 1000.0
            except Exception:  # noqa: BLE001 - not every board reports power
                power = None
            name = nv.nvmlDeviceGetName(handle)
            out.append(
                GpuReading(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    utilization_ratio=util.gpu / 100.0,
                    memory_used_bytes=int(mem.used),
                    memory_total_bytes=int(mem.total),
                    power_watts=power,
                )
            )
        return out

    def _server(self) -> tuple[float | None, int | None]:
        if self.server_pid is None:
            return None, None
        try:
            root = self._procs.get(self.server_pid) or psutil.Process(self.server_pid)
            self._procs[self.server_pid] = root
            procs = [root, *root.children(recursive=True)]  # Triton's Python-backend stubs are children
            cpu = rss = 0.0
            for p in procs:
                cached = self._procs.setdefault(p.pid, p)
                cpu += cached.cpu_percent(None) / 100.0
                rss += cached.memory_info().rss
            return cpu, int(rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None, None

    def sample(self) -> Utilization:
        gpus: list[GpuReading] = []
        if self.state == "ok":
            try:
                gpus = self._gpus()
            except Exception as exc:  # noqa: BLE001 - a GPU that falls off the bus must not stop the monitor
                self.state, self.detail = "no_device", f"NVML stopped answering: {exc}"
        mem = psutil.virtual_memory()
        server_cpu, server_rss = self._server()
        return Utilization(
            nvml_state=self.state,
            nvml_detail=self.detail,
            gpus=gpus,
            host_cpu_ratio=psutil.cpu_percent(None) / 100.0,
            host_memory_used_bytes=int(mem.total - mem.available),
            host_memory_total_bytes=int(mem.total),
            server_pid=self.server_pid,
            server_cpu_ratio=server_cpu,
            server_memory_rss_bytes=server_rss,
        )
