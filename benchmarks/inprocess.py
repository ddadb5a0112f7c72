"""In-process model latency: onnxruntime vs PyTorch eager (and torch.compile where it works), one thread each."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inferline.release.runtime import onnx_session
from inferline.training.model import load_checkpoint

__all__ = ["bench_inprocess"]


def _per_call_us(fn: Callable[[], Any], budget_s: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget_s or n < 5:
        fn()
        n += 1
    return elapsed / n * 1e6


def bench_inprocess(
    run_dir: Path, onnx_path: Path, batch_sizes: tuple[int, ...], reps: int, budget_s: float, compile_model: bool
) -> dict[str, Any]:
    torch.set_num_threads(1)
    model = load_checkpoint(run_dir / "checkpoint.pt")
    arch = model.arch
    session = onnx_session(onnx_path, device="cpu", threads=1)
    rng = np.random.default_rng(0)
    runners: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {}

    def eager(x: np.ndarray, c: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(x), torch.from_numpy(c))

    runners["onnxruntime"] = lambda x, c: session.run(None, {"numeric": x, "categorical": c})
    runners["torch_eager"] = eager
    notes: dict[str, str] = {}
    if compile_model:
        try:
            compiled = torch.compile(model, dynamic=True)

            def run_compiled(x: np.ndarray, c: np.ndarray) -> Any:
                with torch.inference_mode():
                    return compiled(torch.from_numpy(x), torch.from_numpy(c))

            run_compiled(np.zeros((2, arch.n_numeric), np.float32), np.zeros((2, len(arch.cardinalities)), np.int64))
            runners["torch_compile"] = run_compiled
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            notes["torch_compile"] = f"not measured: {type(exc).__name__}: {str(exc)[:200]}"
    else:
        notes["torch_compile"] = "not measured in --quick (compilation takes tens of seconds on 2 cores)"
    samples: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batch_sizes} for name in runners}
    for _ in range(reps):  # interleaved: every runner at every batch size in each repetition
        for b in batch_sizes:
            x = rng.normal(size=(b, arch.n_numeric)).astype(np.float32)
            c = rng.integers(0, 3, size=(b, len(arch.cardinalities))).astype(np.int64)
            for name, fn in runners.items():
                samples[name][b].append(_per_call_us(functools.partial(fn, x, c), budget_s))
    return {"per_call_us": {n: {str(b): v for b, v in d.items()} for n, d in samples.items()}, "notes": notes}
