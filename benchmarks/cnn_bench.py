"""A user's CNN, served: images/s and p99 latency of the published release over Triton HTTP, next to the same
model in process with onnxruntime (the release's own ``model.onnx``) and with torch eager, at batch 1, 8 and 32,
measured side by side in one run.

The model is a small ResNet-style CNN on FP32 [3, 64, 64] images with random weights, published from its factory
and weights (``export publish --module``). Requests are drawn from a pool of distinct images, so no cache flatters a
figure. Every runtime gets one thread (the served model's ``intra_op_threads`` is 1). The served figure is one
client sending requests back to back: what a caller of the stack pays per request, on the same machine.

    python -m inferline.benchmarks.cnn_bench [--seconds 5] [--out benchmarks/results/cnn]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inferline.core.files import atomic_write_bytes, atomic_write_json
from inferline.export.candidate import model_candidate
from inferline.export.publish import publish
from inferline.features.rules import finite
from inferline.features.spec import Column, ModelParams, PipelineSpec
from inferline.release.runtime import onnx_session
from inferline.training.model import ModelLayout

__all__ = ["SPEC", "Built", "ResidualBlock", "bench_cnn", "build", "publish_release", "save_results"]

BATCHES = (1, 8, 32)
POOL = 256  # distinct images

SPEC = PipelineSpec(
    name="cnn_bench",
    version=1,
    columns=(
        Column("image", "tensor", dtype="FP32", shape=(3, 64, 64), rules=(finite(),)),
        Column("label", "label"),
    ),
    features=(),
    label="label",
    classes=tuple(f"c{i}" for i in range(10)),
    model=ModelParams(factory="inferline.benchmarks.cnn_bench:build", max_batch_size=32),
)


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus the input, then relu (the basic block of a ResNet)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class CNN(nn.Module):
    def __init__(self, classes: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(ResidualBlock(width), nn.MaxPool2d(2), ResidualBlock(width))
        self.head = nn.Linear(width, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(image)).mean(dim=(2, 3)))


def build(layout: ModelLayout, width: int = 16) -> nn.Module:
    """The user's factory (see inferline.training.model for the forward contract)."""
    return CNN(layout.n_outputs, width)


def _timed(call: Callable[[np.ndarray], Any], pool: np.ndarray, batch: int, seconds: float) -> dict[str, float]:
    rng = np.random.default_rng(batch)
    latencies = []
    call(pool[:batch])  # warm
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        idx = rng.integers(0, len(pool), batch)
        images = np.ascontiguousarray(pool[idx])
        t0 = time.perf_counter()
        call(images)
        latencies.append(time.perf_counter() - t0)
    lat = np.asarray(latencies)
    return {
        "images_per_s": float(batch * len(lat) / lat.sum()),
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
        "requests": len(lat),
    }


@dataclass
class Built:
    repository: Path
    version: int
    net: nn.Module  # the user's module, eval mode, with the published weights
    pool: np.ndarray  # POOL distinct images, FP32 [POOL, 3, 64, 64]


def publish_release(root: Path) -> Built:
    """The CNN (seeded random weights) published from its factory and weights into ``root / "repo"``, and the pool
    of distinct images its requests are drawn from."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = build(ModelLayout(inputs=(("image", "FP32", (3, 64, 64)),), task="multiclass", n_outputs=10)).eval()
    torch.save(net.state_dict(), root / "weights.pt")
    candidate = model_candidate(SPEC, module="inferline.benchmarks.cnn_bench:build", checkpoint=root / "weights.pt")
    release = publish(None, root / "repo", candidate=candidate)
    pool = np.random.default_rng(1).normal(0, 1, (POOL, 3, 64, 64)).astype(np.float32)
    return Built(root / "repo", release.version, net, pool)


def bench_cnn(seconds: float) -> dict[str, Any]:
    from inferline.serving.client import InferlineClient
    from inferline.serving.server import ServerConfig, TritonServer

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="inferline-cnn-"))
    built = publish_release(root)
    net, pool = built.net, built.pool
    session = onnx_session(root / "repo" / "cnn_bench_model" / str(built.version) / "model.onnx", threads=1)

    def eager(x: np.ndarray) -> Any:
        with torch.no_grad():
            return net(torch.from_numpy(x))

    server = TritonServer(ServerConfig.on_free_ports(root / "repo", root / "work")).start(timeout_s=180)
    results: dict[str, Any] = {"seconds_per_cell": seconds, "pool": POOL, "rows": []}
    try:
        with InferlineClient(server.config.http_url, "http", pipeline="cnn_bench", spec=SPEC) as client:
            from tritonclient.http import InferInput

            def served(x: np.ndarray) -> Any:
                inp = InferInput("image", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=True)
                return client._client.infer("cnn_bench", [inp])

            for batch in BATCHES:  # interleaved per batch size: the machine's drift hits every runtime alike
                row: dict[str, Any] = {"batch": batch}
                for name, call in (("served_http", served), ("onnxruntime", lambda x: session.run(None, {"image": x})),
                                   ("torch_eager", eager)):  # fmt: skip
                    row[name] = _timed(call, pool, batch, seconds)
                row["served_vs_onnxruntime"] = row["served_http"]["images_per_s"] / row["onnxruntime"]["images_per_s"]
                row["served_vs_torch"] = row["served_http"]["images_per_s"] / row["torch_eager"]["images_per_s"]
                results["rows"].append(row)
    finally:
        server.stop()
    return results


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        "| batch | served HTTP images/s | p99 ms | onnxruntime images/s | p99 ms | torch eager images/s | p99 ms |"
        " served / ORT | served / torch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        s, o, t = r["served_http"], r["onnxruntime"], r["torch_eager"]
        lines.append(
            f"| {r['batch']} | {s['images_per_s']:.0f} | {s['p99_ms']:.2f} | {o['images_per_s']:.0f} | "
            f"{o['p99_ms']:.2f} | {t['images_per_s']:.0f} | {t['p99_ms']:.2f} | {r['served_vs_onnxruntime']:.2f}x | "
            f"{r['served_vs_torch']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferline.benchmarks.cnn_bench", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per runtime and batch size")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cnn"), help="results folder")
    args = parser.parse_args(argv)
    results = bench_cnn(args.seconds)
    print(save_results(args.out, results, to_markdown(results)))
    return 0


def save_results(out: Path, results: dict[str, Any], text: str) -> str:
    """``results.json`` and ``results.md`` (``text``) in ``out``, each written atomically; returns ``text``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    atomic_write_bytes(out / "results.md", text.encode())
    return text


if __name__ == "__main__":
    raise SystemExit(main())
