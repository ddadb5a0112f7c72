"""Check 2 of ``make gpu-check``: a few AdamW steps of ``inferline.training.model.TabularNet`` on CUDA on a
learnable random task (the loss must fall), and one ``ScoringModel`` forward pass on CUDA compared with the same
weights on the CPU.

Imports numpy only; torch and ``inferline.training.model`` are imported by the check itself.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

import numpy as np

from inferline.benchmarks.gpu_check_result import CheckResult, NotRun, imported, inferline_module, library

__all__ = ["MODEL_PARAMS", "check_training", "training_step"]

# the fraud pipeline's ModelParams defaults (features.spec imports pandas, so they are copied here;
# tests/system/test_gpu.py checks that they still agree)
MODEL_PARAMS: dict[str, Any] = {
    "embedding_dim": 8,
    "hidden": (64, 32),
    "dropout": 0.1,
    "batch_size": 512,
    "learning_rate": 3e-3,
    "weight_decay": 1e-5,
}


def training_step(
    torch: ModuleType, model: ModuleType, device: str, steps: int = 60, seed: int = 0, rows: int = 16_384
) -> dict[str, Any]:
    """Build ``TabularNet`` as ``training.train`` does (Architecture from the pipeline's ModelParams, AdamW,
    cross-entropy), train ``steps`` batches on ``device`` on a learnable random task, then score the same weights
    with ``ScoringModel`` on ``device`` and on the CPU."""
    p = MODEL_PARAMS
    arch = model.Architecture(
        cardinalities=(65, 65, 9, 4),
        n_numeric=8,
        n_classes=2,
        embedding_dim=p["embedding_dim"],
        hidden=tuple(p["hidden"]),
        dropout=p["dropout"],
    )
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_num = torch.randn(rows, arch.n_numeric, generator=g)
    x_cat = torch.stack([torch.randint(0, c, (rows,), generator=g) for c in arch.cardinalities], dim=1)
    w, effect = torch.randn(arch.n_numeric, generator=g), torch.randn(arch.cardinalities[0], generator=g)
    y = ((x_num @ w + 2.0 * effect[x_cat[:, 0]]) > 0).to(torch.int64)

    net = model.TabularNet(arch).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=p["learning_rate"], weight_decay=p["weight_decay"])
    loss_fn = torch.nn.CrossEntropyLoss()
    xn, xc, yd = x_num.to(device), x_cat.to(device), y.to(device)
    losses: list[float] = []
    net.train()
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, rows, (p["batch_size"],), generator=g).to(device)
        optimizer.zero_grad()
        loss = loss_fn(net(xn[idx], xc[idx]), yd[idx])
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))  # synchronizes the device each step
    step_ms = (time.perf_counter() - start) / steps * 1e3
    net.eval()

    cpu_net = model.TabularNet(arch)
    cpu_net.load_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()})
    k = min(rows, 4096)
    with torch.no_grad():
        p_dev, c_dev = model.ScoringModel(net, 0.5).to(device).eval()(xn[:k], xc[:k])
        p_cpu, c_cpu = model.ScoringModel(cpu_net, 0.5).eval()(x_num[:k], x_cat[:k])
    p_dev_host, c_dev_host = p_dev.cpu().numpy(), c_dev.cpu().numpy()
    p_cpu_np, c_cpu_np = p_cpu.numpy(), c_cpu.numpy()
    decided = np.abs(p_cpu_np[:, 1] - 0.5) > 1e-4  # rows not on the threshold itself
    head, tail = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    return {
        "device": device,
        "parameters_on": str(next(net.parameters()).device),
        "architecture": arch.as_dict(),
        "steps": steps,
        "losses": losses,
        "loss_first10": head,
        "loss_last10": tail,
        "loss_decreased": tail < head - 0.02,
        "step_ms": step_ms,
        "forward_rows": k,
        "forward_max_abs_diff": float(np.max(np.abs(p_dev_host - p_cpu_np))),
        "forward_allclose": bool(np.allclose(p_dev_host, p_cpu_np, rtol=1e-4, atol=1e-5)),
        "predicted_equal": bool(np.array_equal(c_dev_host[decided], c_cpu_np[decided])),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def check_training(result: CheckResult, steps: int) -> None:
    """Check 2 into ``result``: ``training_step`` on CUDA, ``steps`` AdamW steps; ``NotRun`` without torch or CUDA."""
    torch = library("torch", "the lent machine has torch with CUDA")
    model = inferline_module("inferline.training.model")
    imported(result, "inferline.training.model")
    if not torch.cuda.is_available():
        raise NotRun(
            f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda})"
        )
    name = torch.cuda.get_device_name(0)
    out = training_step(torch, model, "cuda", steps=steps)
    result.details.update(out, torch=torch.__version__, cuda=torch.version.cuda, device_name=name)
    ls = out["losses"]
    result.lines += [
        f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {name}; parameters on {out['parameters_on']}",
        f"TabularNet {out['architecture']['hidden']} hidden, {steps} AdamW steps of {MODEL_PARAMS['batch_size']} "
        f"rows: {out['step_ms']:.2f} ms/step",
        "loss: "
        + " ".join(f"{ls[i]:.4f}" for i in sorted({0, len(ls) // 4, len(ls) // 2, 3 * len(ls) // 4}))
        + f" ... {ls[-1]:.4f} (mean of first 10 {out['loss_first10']:.4f}, last 10 {out['loss_last10']:.4f})",
        f"ScoringModel forward, {out['forward_rows']} rows, CUDA vs CPU: max |diff| of probabilities "
        f"{out['forward_max_abs_diff']:.3g} (allclose rtol 1e-4, atol 1e-5: {out['forward_allclose']}), "
        f"predicted classes equal: {out['predicted_equal']}",
    ]
    problems = [
        what
        for what, ok in (
            ("the loss did not decrease", out["loss_decreased"]),
            ("the parameters are not on CUDA", out["parameters_on"].startswith("cuda")),
            ("CUDA and CPU probabilities differ", out["forward_allclose"]),
            ("CUDA and CPU predicted classes differ", out["predicted_equal"]),
        )
        if not ok
    ]
    result.status = "failed" if problems else "passed"
    result.reason = "; ".join(problems) or f"loss {out['loss_first10']:.3f} -> {out['loss_last10']:.3f}, forward equal"
