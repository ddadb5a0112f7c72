"""A promotion gate on measured speed: a candidate release is made current only if its throughput at a reference
load is at least ``min_ratio`` of the current release's, and its p99 within a budget.

Both releases are loaded into one scratch tritonserver (never the serving one) as two models of their own,
``gate_current`` and ``gate_candidate``: each the release's fused model with its own ``release.config.pbtxt`` (so
batching settings that differ between releases are measured as they would serve), pinned to its version, its
feature state and ONNX model read from the repository's sibling folders, as served. They are then measured side by
side, interleaved (current, candidate, current, ...) for ``reps`` pairs of closed-loop steps at ``concurrency``
(``serving.load.step.measure_step``, the load library under ``inferline bench run --pipeline``), with
payloads drawn from the pipeline's own generator. The ratio is the median of the pairs' candidate / current
throughputs: the machine's noise moves both sides of a pair together.

The local target only: a gpu-target release is an ensemble of the native onnxruntime backend, which the bundled
tritonserver does not have (it is measured where it serves, with ``inferline bench run``).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferline.core.errors import UserError
from inferline.release.registry import model_names

if TYPE_CHECKING:
    from inferline.serving.load.payloads import Payloads

__all__ = ["GATE_MODELS", "GateRefused", "GateReport", "measure_gate", "release_payloads", "scratch_repository"]

GATE_MODELS = {"current": "gate_current", "candidate": "gate_candidate"}


class GateRefused(UserError, RuntimeError):
    """The candidate release measured slower than the gate allows; it was not made current."""

    docs = "quickstart.md#the-stages-one-command-line-each"

    def __init__(self, message: str, report: GateReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class GateReport:
    pipeline: str
    current: int
    candidate: int
    concurrency: int
    duration_s: float
    min_ratio: float
    p99_budget_ms: float | None
    current_rps: list[float] = field(default_factory=list)
    candidate_rps: list[float] = field(default_factory=list)
    current_p99_ms: list[float] = field(default_factory=list)
    candidate_p99_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Median over the interleaved pairs of candidate / current throughput."""
        pairs = [c / b for b, c in zip(self.current_rps, self.candidate_rps, strict=True) if b > 0]
        return statistics.median(pairs) if pairs else 0.0

    @property
    def candidate_p99(self) -> float:
        return statistics.median(self.candidate_p99_ms) if self.candidate_p99_ms else float("inf")

    def reasons(self) -> list[str]:
        """Why the candidate fails the gate (empty: it passes)."""
        out = []
        if self.ratio < self.min_ratio:
            out.append(
                f"throughput x{self.ratio:.2f} of release {self.current}'s at c={self.concurrency} (pairs: "
                + ", ".join(f"{c:.0f}/{b:.0f}" for b, c in zip(self.current_rps, self.candidate_rps, strict=True))
                + f" req/s), below the gate's x{self.min_ratio:g}"
            )
        if self.p99_budget_ms is not None and self.candidate_p99 > self.p99_budget_ms:
            out.append(
                f"p99 {self.candidate_p99:.1f} ms at c={self.concurrency}, over the {self.p99_budget_ms:g} ms budget"
            )
        if self.errors:
            out.append(f"failed requests during the measurement: {self.errors}")
        return out

    @property
    def passed(self) -> bool:
        return not self.reasons()

    def summary(self) -> str:
        return (
            f"release {self.candidate} vs release {self.current}: throughput x{self.ratio:.2f} at "
            f"c={self.concurrency}, p99 {self.candidate_p99:.1f} ms (gate: >= x{self.min_ratio:g}"
            + (f", p99 <= {self.p99_budget_ms:g} ms)" if self.p99_budget_ms is not None else ")")
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "passed": self.passed, "reasons": self.reasons()}


def scratch_repository(repository: Path, pipeline: str, models: dict[str, int], root: Path) -> Path:
    """``root/models``: for each ``{model name: version}`` of ``models``, that release's fused model under that name
    with the release's own config, pinned to its version, beside links to the repository's feature-state and ONNX
    folders (which the fused model reads by its parameters). The repository itself is only read."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    names = model_names(pipeline)
    served = Path(repository) / names["ensemble"]
    top = model_config_pb2.ModelConfig()
    text_format.Parse((served / "config.pbtxt").read_text(), top)
    if top.platform == "ensemble" or top.backend != "python":
        raise UserError(
            f"the speed gate measures releases of the local target (a fused Python-backend model); {pipeline!r} is "
            f"served as {top.platform or top.backend!r}. Measure a gpu-target release where it serves, with "
            "`inferline bench run --pipeline`"
        )
    out = root / "models"
    out.mkdir(parents=True)
    for key in ("preprocess", "model"):
        (out / names[key]).symlink_to((Path(repository) / names[key]).resolve(), target_is_directory=True)
    for name, version in models.items():
        version_dir = served / str(version)
        if not version_dir.is_dir():
            raise UserError(
                f"release {version} of {pipeline!r} has no folder {version_dir}; expected a published release "
                "(`inferline export history` lists them)"
            )
        own = version_dir / "release.config.pbtxt"  # the release's own config (batching settings included)
        config = model_config_pb2.ModelConfig()
        text_format.Parse((own if own.is_file() else served / "config.pbtxt").read_text(), config)
        config.name = name
        config.version_policy.specific.versions[:] = [version]
        folder = out / name
        folder.mkdir()
        (folder / str(version)).symlink_to(version_dir.resolve(), target_is_directory=True)
        (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    return out


def release_payloads(repository: Path, pipeline: str, version: int) -> Payloads:
    """Requests of one row each, from a pool of distinct rows of the pipeline's generator, in release ``version``'s
    contract (its spec snapshot)."""
    from inferline.features.spec import SPEC_FILE, read_spec
    from inferline.serving.load.payloads import load_rows, payloads_from_frame

    spec = read_spec(Path(repository) / model_names(pipeline)["preprocess"] / str(version) / SPEC_FILE)
    frame, source = load_rows(spec, repository=Path(repository), release=version, module=pipeline)
    return payloads_from_frame(spec, frame, source=source)


def measure_gate(
    repository: Path,
    pipeline: str,
    candidate: int,
    current: int,
    *,
    min_ratio: float = 0.9,
    p99_budget_ms: float | None = None,
    concurrency: int = 16,
    duration_s: float = 4.0,
    reps: int = 3,
    progress: Callable[[str], None] | None = None,
) -> GateReport:
    """Measure ``candidate`` against ``current`` side by side on a scratch server (see the module docstring)."""
    from inferline.export.loadcheck import start_scratch_server
    from inferline.serving.load.step import Step, measure_step
    from inferline.serving.load.target import Target
    from inferline.serving.server import TritonServer

    if not 0 < min_ratio:
        raise UserError(f"the gate's throughput ratio must be above 0, got {min_ratio}")
    report = GateReport(pipeline, current, candidate, concurrency, duration_s, min_ratio, p99_budget_ms)
    root = Path(tempfile.mkdtemp(prefix="inferline-gate-"))
    server: TritonServer | None = None
    try:
        versions = {"current": current, "candidate": candidate}
        models = scratch_repository(repository, pipeline, {GATE_MODELS[r]: v for r, v in versions.items()}, root)
        payloads = release_payloads(repository, pipeline, candidate)
        server, _ = start_scratch_server(models, root, list(GATE_MODELS.values()))
        http = server.config.http_url
        targets = {role: Target(http, "http", name, "triton", triton_http=http) for role, name in GATE_MODELS.items()}
        for _ in range(reps):
            for role in ("current", "candidate"):
                result = measure_step(targets[role], payloads, Step("concurrency", concurrency), duration_s)
                getattr(report, f"{role}_rps").append(result.throughput_rps)
                getattr(report, f"{role}_p99_ms").append(result.latency_ms["p99"])
                for kind, n in result.errors.items():
                    report.errors[f"{role}:{kind}"] = report.errors.get(f"{role}:{kind}", 0) + n
                if progress is not None:
                    progress(f"{role} (release {getattr(report, role)}): {result.throughput_rps:.0f} req/s")
        payloads.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return report
