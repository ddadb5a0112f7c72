"""What one monitor watches and how: ``MonitorConfig``. Its fields made with ``option`` are also ``inferline monitor
run``'s flags (``core.options``: flag, help, type and default written once). A module of its own, light to import,
so the command line builds its parser without loading the service (prometheus, aiohttp, tritonclient)."""

from __future__ import annotations

from pathlib import Path

from inferline.core.command import fraction, positive_float, positive_int
from inferline.core.command import port as port_number
from inferline.core.options import config, option

__all__ = ["MonitorConfig"]


@config
class MonitorConfig:
    repository: Path
    pipeline: str  # the pipeline whose current release is watched (its spec, reference profile, models)
    triton_metrics_url: str | None = None  # http://127.0.0.1:8002/metrics
    trace_dir: Path | None = None
    server_pid: int | None = None
    host: str = option(
        "--host",
        "the address the monitor listens on: a host address (or 0.0.0.0) for a Prometheus on another host; its POST "
        "endpoints take samples and labels from holders of the ingest key only",
        default="127.0.0.1",
    )
    port: int = option("--port", "the monitor's HTTP port (on --host)", default=9400, type=port_number)
    interval_s: float = option(
        "--interval", "seconds between scrapes and drift evaluations", default=5.0, type=positive_float
    )
    latency_window_s: float = option(
        "--latency-window", "seconds of latency in the percentiles", default=60.0, type=positive_float
    )
    drift_window_rows: int = option(
        "--drift-window-rows", "most recent rows compared for drift", default=5_000, type=positive_int
    )
    label_window_rows: int = 50_000
    alpha: float = option(  # family-wise false-alarm rate of one drift evaluation (Bonferroni over features)
        "--alpha", "false-alarm rate of one drift evaluation (all features)", default=0.01, type=fraction
    )
    min_samples: int = option(
        "--min-samples", "fewer rows than this: 'not enough data'", default=500, type=positive_int
    )
    nvml: bool = True
    history: int = 720
