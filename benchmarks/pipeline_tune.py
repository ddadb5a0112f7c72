"""``inferline bench tune --pipeline P --p99-budget-ms B``: the batching settings with the most throughput within a p99
budget, measured for one release on a scratch tritonserver, never the serving one.

The settings searched are the ones that matter for Triton's dynamic batcher and scheduler:
``max_queue_delay_microseconds``, ``preferred_batch_size`` and the instance count (``KIND_CPU`` instances here; on
a GPU target the same count per GPU). Each candidate is applied through Triton's model-control API (``load`` with a
config override, the admin key) to the scratch server's copy of the release (``export.gate.scratch_repository``:
the repository is only read), then, after ``warmup_s`` of unrecorded load on the reloaded instances, measured with
one closed-loop step at the reference concurrency (``serving.load.step.measure_step``).

Search: coordinate descent from the release's own settings, one setting at a time over its candidate values, the
others held at the best so far; "best" is the highest throughput among points within the budget (the lowest p99
when none is), and a pass that changes nothing ends the search. It measures about the sum of the settings' value
counts per pass (9 with the default space, against 24 for the grid) and stops after ``max_passes``. Every measured
point is kept: the report gives the Pareto front of throughput against p99 over them, and the chosen setting against
the release's own, re-measured interleaved in the same run (the gain as a ratio).
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_SPACE", "TunePoint", "TuneResult", "pareto_front", "tune"]

TUNE_MODEL = "tune_candidate"
DEFAULT_SPACE: dict[str, tuple[Any, ...]] = {
    "instances": (1, 2),
    "max_queue_delay_us": (0, 100, 500, 2000),
    "preferred_batch_size": ((), (4, 8), (16, 32)),
}


@dataclass
class TunePoint:
    settings: dict[str, Any]
    throughput_rps: float
    p99_ms: float
    errors: int

    def key(self) -> str:
        return json.dumps(self.settings, sort_keys=True)


@dataclass
class TuneResult:
    pipeline: str
    version: int
    p99_budget_ms: float
    concurrency: int
    duration_s: float
    default: dict[str, Any]
    points: list[TunePoint] = field(default_factory=list)
    chosen: dict[str, Any] | None = None
    gain: list[float] = field(default_factory=list)  # chosen / default throughput, interleaved pairs
    grid_size: int = 0

    @property
    def front(self) -> list[TunePoint]:
        return pareto_front(self.points)

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "measured_points": len(self.points),
            "front": [asdict(p) for p in self.front],
            "gain_median": statistics.median(self.gain) if self.gain else None,
        }

    def markdown(self) -> str:
        lines = [
            f"# bench tune: {self.pipeline}:{self.version}, p99 budget {self.p99_budget_ms:g} ms at "
            f"c={self.concurrency}",
            "",
            f"{len(self.points)} points measured (the full grid has {self.grid_size}); the release's own settings: "
            f"{self.default}.",
            "",
            "| instances | max_queue_delay_us | preferred_batch_size | req/s | p99 ms | within budget | on the front |",
            "|---|---|---|---|---|---|---|",
        ]
        front = {p.key() for p in self.front}
        for p in sorted(self.points, key=lambda p: -p.throughput_rps):
            s = p.settings
            lines.append(
                f"| {s['instances']} | {s['max_queue_delay_us']} | {list(s['preferred_batch_size']) or '-'} | "
                f"{p.throughput_rps:.0f} | {p.p99_ms:.2f} | {'yes' if p.p99_ms <= self.p99_budget_ms else 'no'} | "
                f"{'yes' if p.key() in front else ''} |"
            )
        if self.chosen is not None and self.gain:
            lines += [
                "",
                f"Chosen: {self.chosen}; throughput x{statistics.median(self.gain):.2f} of the release's own settings "
                f"(interleaved pairs: {', '.join(f'{g:.2f}' for g in self.gain)}).",
            ]
        return "\n".join(lines) + "\n"


def pareto_front(points: list[TunePoint]) -> list[TunePoint]:
    """The points no other point beats on both throughput (higher) and p99 (lower), by throughput."""
    front = [
        p
        for p in points
        if not any(
            (q.throughput_rps >= p.throughput_rps and q.p99_ms <= p.p99_ms)
            and (q.throughput_rps > p.throughput_rps or q.p99_ms < p.p99_ms)
            for q in points
        )
    ]
    return sorted(front, key=lambda p: p.throughput_rps)


def _settings_of(config: Any) -> dict[str, Any]:
    instances = sum(g.count for g in config.instance_group) or 1
    batching = config.dynamic_batching
    return {
        "instances": int(instances),
        "max_queue_delay_us": int(batching.max_queue_delay_microseconds),
        "preferred_batch_size": tuple(int(b) for b in batching.preferred_batch_size),
    }


def _apply(config: Any, settings: dict[str, Any]) -> Any:
    from tritonclient.grpc import model_config_pb2

    out = model_config_pb2.ModelConfig()
    out.CopyFrom(config)
    del out.instance_group[:]
    out.instance_group.add(count=int(settings["instances"]), kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    out.dynamic_batching.max_queue_delay_microseconds = int(settings["max_queue_delay_us"])
    del out.dynamic_batching.preferred_batch_size[:]
    out.dynamic_batching.preferred_batch_size.extend(int(b) for b in settings["preferred_batch_size"])
    return out


def _best(points: list[TunePoint], budget_ms: float) -> TunePoint:
    within = [p for p in points if p.p99_ms <= budget_ms and not p.errors]
    return max(within, key=lambda p: p.throughput_rps) if within else min(points, key=lambda p: p.p99_ms)


def tune(
    repository: Path,
    pipeline: str,
    p99_budget_ms: float,
    *,
    version: int | None = None,
    concurrency: int = 16,
    duration_s: float = 3.0,
    space: dict[str, tuple[Any, ...]] | None = None,
    max_passes: int = 2,
    gain_pairs: int = 3,
    warmup_s: float = 0.5,
    progress: Callable[[str], None] | None = None,
) -> TuneResult:
    """Search ``space`` for release ``version`` (default: the current one) of ``pipeline`` (see the module
    docstring)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    from inferline.core.secrets import ADMIN_HEADER
    from inferline.export.gate import release_payloads, scratch_repository
    from inferline.export.loadcheck import start_scratch_server
    from inferline.release.registry import Registry
    from inferline.serving.load.step import Step, measure_step
    from inferline.serving.load.target import Target
    from inferline.serving.server import TritonServer

    space = dict(space or DEFAULT_SPACE)
    version = version if version is not None else Registry(Path(repository), pipeline).current
    if version is None:
        from inferline.core.errors import UserError

        raise UserError(f"pipeline {pipeline!r} has no current release in {repository}; publish one first")
    root = Path(tempfile.mkdtemp(prefix="inferline-tune-"))
    server: TritonServer | None = None
    try:
        models = scratch_repository(Path(repository), pipeline, {TUNE_MODEL: version}, root)
        base = model_config_pb2.ModelConfig()
        text_format.Parse((models / TUNE_MODEL / "config.pbtxt").read_text(), base)
        default = _settings_of(base)
        for name, values in space.items():  # the release's own value is always a candidate
            if default[name] not in values:
                space[name] = (default[name], *values)
        result = TuneResult(pipeline, version, p99_budget_ms, concurrency, duration_s, default)
        result.grid_size = 1
        for values in space.values():
            result.grid_size *= len(values)
        payloads = release_payloads(Path(repository), pipeline, version)
        server, _ = start_scratch_server(models, root, [TUNE_MODEL])
        http = server.config.http_url
        target = Target(http, "http", TUNE_MODEL, "triton", triton_http=http)
        admin = {ADMIN_HEADER: server.admin_key}
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(http, connection_timeout=30.0, network_timeout=120.0)
        measured: dict[str, TunePoint] = {}

        def measure(settings: dict[str, Any], keep: bool = True) -> TunePoint:
            config = json_format.MessageToJson(_apply(base, settings), preserving_proto_field_name=True)
            client.load_model(TUNE_MODEL, config=config, headers=admin)  # model control: reloaded with the override
            load = Step("concurrency", concurrency)
            if warmup_s > 0:  # new instances' first executions (stub start, first allocations) are not the setting's
                measure_step(target, payloads, load, warmup_s, loadgen="asyncio")
            step = measure_step(target, payloads, load, duration_s)
            point = TunePoint(dict(settings), step.throughput_rps, step.latency_ms["p99"], sum(step.errors.values()))
            if keep:
                measured.setdefault(point.key(), point)
            if progress is not None:
                progress(f"{settings}: {point.throughput_rps:.0f} req/s, p99 {point.p99_ms:.2f} ms")
            return point

        best = measure(default)
        for _ in range(max_passes):
            before = best.key()
            for name, values in space.items():
                for value in values:
                    settings = {**best.settings, name: value}
                    key = json.dumps(settings, sort_keys=True)
                    if key not in measured:
                        measure(settings)
                best = _best(list(measured.values()), p99_budget_ms)
            if best.key() == before:
                break
        result.points = list(measured.values())
        result.chosen = best.settings
        for pair in range(gain_pairs):  # the gain, interleaved, the order turning: the release's own and the chosen
            if pair % 2 == 0:
                own, chosen = measure(default, keep=False), measure(best.settings, keep=False)
            else:
                chosen, own = measure(best.settings, keep=False), measure(default, keep=False)
            result.gain.append(chosen.throughput_rps / own.throughput_rps if own.throughput_rps else 0.0)
        client.close()
        payloads.close()
        return result
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def write_tune(result: TuneResult, out: Path) -> list[Path]:
    """``tune.json``, ``tune.md`` and ``tune.png`` (throughput against p99 of every point, the front joined, the
    budget and the chosen point marked) in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from inferline.core.files import atomic_write_bytes, atomic_write_json

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "tune.json", result.as_dict())
    atomic_write_bytes(out / "tune.md", result.markdown().encode())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([p.p99_ms for p in result.points], [p.throughput_rps for p in result.points], label="measured")
    front = result.front
    ax.plot([p.p99_ms for p in front], [p.throughput_rps for p in front], "o-", color="C1", label="Pareto front")
    ax.axvline(result.p99_budget_ms, color="grey", linestyle="--", label=f"p99 budget {result.p99_budget_ms:g} ms")
    chosen = next((p for p in result.points if p.settings == result.chosen), None)
    if chosen is not None:
        ax.scatter([chosen.p99_ms], [chosen.throughput_rps], s=160, facecolors="none", edgecolors="C3", label="chosen")
    ax.set_xlabel("p99 latency (ms)")
    ax.set_ylabel("throughput (req/s)")
    ax.set_title(f"{result.pipeline}:{result.version} at c={result.concurrency}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "tune.png", dpi=110)
    plt.close(fig)
    return [out / "tune.json", out / "tune.md", out / "tune.png"]
