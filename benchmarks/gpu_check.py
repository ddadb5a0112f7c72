"""make gpu-check: show, where an NVIDIA GPU is lent, that inferline's GPU paths work, in under 5 minutes.

Three checks, each reported as passed, failed or not run (with the reason):

1. ``kernels``: every feature kernel (``inferline.features.kernels.KERNELS``), every rule vector lowering that
   applies to numbers or timestamps (``inferline.features.rules``) and the standardization step of the compiled
   contract, run with ``xp=cupy`` on cupy arrays and with ``xp=numpy``, over generated values (1,000,000 by
   default) with nulls, infinities, subnormals, negative and pre-epoch timestamps; results compared (float64:
   allclose, rtol 1e-12; int64 and masks: equal), with the time per 1M values on each.
2. ``training``: a few AdamW steps of ``inferline.training.model.TabularNet`` on CUDA on random data (loss must
   fall), and one ``ScoringModel`` forward pass on CUDA compared with the same weights on the CPU.
3. ``nvml``: ``inferline.monitor.utilization.UtilizationSampler`` sampled while the GPU runs matrix products: NVML
   state ``ok`` and real figures (utilization, memory, power, device name). Where that module cannot be imported
   (psutil or prometheus_client missing) NVML is read through pynvml directly, and the report says so.

It needs numpy, and for the checks cupy, torch with CUDA and nvidia-ml-py; never pandas. Run from a checkout it
needs no install: ``python3 benchmarks/gpu_check.py`` imports ``inferline`` from the checkout (its stage folders are
reached through the symlinks ``inferline/<stage>``); ``python -m inferline.benchmarks.gpu_check`` where installed.

Writes a human-readable report to stdout and JSON to ``--out`` (default ``$OUT/gpu_check.json`` where ``$OUT`` is
set, else ``build/gpu_check.json``). Exit status: 0 all three passed; 1 a check failed; 2 none failed but at least
one could not run (no GPU, a library missing); 3 bad arguments.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_RUN",
    "EXIT_OK",
    "MODEL_PARAMS",
    "CheckResult",
    "compare_arrays",
    "compare_kernels",
    "main",
    "make_inputs",
    "training_step",
]

EXIT_OK, EXIT_FAILED, EXIT_NOT_RUN, EXIT_USAGE = 0, 1, 2, 3
RTOL = 1e-12  # float64 results, relative
ATOL = 1e-15  # float64 results, absolute floor for results near zero (sin/cos at multiples of pi): ~5 ulp of 1.0
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

Status = Literal["passed", "failed", "not_run"]
Sync = Callable[[], None]


class NotRun(Exception):
    """A check cannot run here (no GPU, a library missing); the message says which and why."""


@dataclass
class CheckResult:
    name: str
    title: str
    status: Status = "not_run"
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # the human-readable report of the check


# ---------------------------------------------------------------------------------------------- inferline, uninstalled
def use_checkout(repo: Path) -> str:
    """Make ``inferline.*`` import from the checkout ``repo`` (whatever is installed), before anything imports it:
    the repository root goes first on ``sys.path`` (``inferline/<stage>`` are symlinks to the stage folders)."""
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != Path(here)]  # benchmarks/ is no top level
    if "inferline" in sys.modules:
        return f"already imported from {getattr(sys.modules['inferline'], '__file__', '?')}"
    sys.path.insert(0, str(repo))
    return f"the checkout {repo} (not pip-installed)"


def _inferline(name: str) -> ModuleType:
    """An inferline module; failing to import it is the check's failure (its imports must not need pandas)."""
    return importlib.import_module(name)


def _library(name: str, hint: str) -> ModuleType:
    """A third-party library the check needs: missing means the check cannot run here."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a CUDA library that fails to load: "cannot run here"
        raise NotRun(f"{name} cannot be imported ({type(exc).__name__}: {exc}); {hint}") from exc


def _imported(result: CheckResult, modules: str) -> None:
    result.details["imported"] = modules
    result.lines.append(f"imported {modules} (pandas {_pandas_state()})")


def _pandas_state() -> str:
    if "pandas" in sys.modules and sys.modules["pandas"] is None:
        return "hidden"
    if sys.modules.get("pandas") is not None:
        return "imported"
    return "not imported" if importlib.util.find_spec("pandas") is not None else "not installed"


# ---------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Inputs:
    numbers: np.ndarray  # float64, NaN for null
    integers: np.ndarray  # int64, no nulls
    timestamps: np.ndarray  # int64 ns since the epoch, kernels.NAT for null
    text: np.ndarray  # object: str or None
    lookup: dict[str, int]  # a fitted vocabulary: value -> index (0 is unknown/null)


ONE_OF_NUMBERS = (0.0, 1.0, 2.5, -3.0)
ONE_OF_INTEGERS = (0, 1, 7, -3)
TEXT_POOL: tuple[str | None, ...] = (
    *(f"merchant_{i:02d}" for i in range(40)),
    *(f"rare_{i}" for i in range(20)),
    "",
    "   ",
    "café",
    "Müller",
    "Москва",
    "東京都",
    "emoji 😀 inside",
    "CafÃ©",
    "tab\there",
    None,
)


def _scatter(rng: np.random.Generator, out: np.ndarray, share: float, values: Any) -> None:
    idx = rng.choice(len(out), size=max(1, int(len(out) * share)), replace=False)
    out[idx] = values if np.ndim(values) == 0 else rng.choice(np.asarray(values, dtype=out.dtype), size=len(idx))


def make_inputs(n: int, nat: int, seed: int = 20261201) -> Inputs:
    """``n`` values per kind, in the kernels' canonical forms, with the edge cases the kernels must agree on."""
    rng = np.random.default_rng(seed)
    numbers = rng.lognormal(3.0, 2.0, n) * np.where(rng.random(n) < 0.3, -1.0, 1.0)
    _scatter(rng, numbers, 0.10, rng.uniform(-1.5, 1.5, n))
    _scatter(rng, numbers, 0.10, ONE_OF_NUMBERS)
    specials = [0.0, -0.0, np.inf, -np.inf, 1e300, -1e300, 5e-324, 1e-300, np.finfo(np.float64).max, -0.999999]
    _scatter(rng, numbers, 0.01, specials)
    _scatter(rng, numbers, 0.05, np.nan)

    i64 = np.iinfo(np.int64)
    integers = rng.integers(-1000, 1000, n, dtype=np.int64)
    _scatter(rng, integers, 0.10, ONE_OF_INTEGERS)
    _scatter(rng, integers, 0.01, [i64.min + 1, i64.max, -1, 0, 1])

    ns_s, ns_day = 10**9, 86_400 * 10**9
    y1678, y1970, y2000, y2030 = -9_214_000_000 * ns_s, 0, 946_684_800 * ns_s, 1_893_456_000 * ns_s
    timestamps = rng.integers(y2000, y2030, n, dtype=np.int64)
    _scatter(rng, timestamps, 0.20, rng.integers(y1678, y1970, n, dtype=np.int64))  # before the epoch
    _scatter(rng, timestamps, 0.10, rng.integers(-3 * ns_day, 3 * ns_day, n, dtype=np.int64))  # around it
    _scatter(rng, timestamps, 0.02, np.arange(-400, 400, dtype=np.int64) * ns_day)  # exactly midnight
    _scatter(rng, timestamps, 0.01, [i64.min + 1, i64.max, -1, 0, 1, -ns_s, ns_s - 1, -ns_day, -ns_day - 1])
    _scatter(rng, timestamps, 0.05, nat)

    pool = np.empty(len(TEXT_POOL), dtype=object)
    pool[:] = TEXT_POOL
    text = pool[rng.integers(0, len(pool), n)]
    lookup = {v: i + 1 for i, v in enumerate(v for v in TEXT_POOL[:50] if v is not None)}
    return Inputs(numbers, integers, timestamps, text, lookup)


# ---------------------------------------------------------------------------------------------- comparison, timing
def _host(a: Any) -> np.ndarray:
    return np.asarray(a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else a)


def compare_arrays(cpu: np.ndarray, device: np.ndarray) -> dict[str, Any]:
    """float: allclose (rtol 1e-12, NaN equal to NaN); integers and booleans: equal. Also dtype and shape."""
    out: dict[str, Any] = {"dtype": str(cpu.dtype), "device_dtype": str(device.dtype), "shape": list(cpu.shape)}
    if cpu.shape != device.shape or cpu.dtype != device.dtype:
        return {**out, "passed": False, "mismatches": None, "max_abs_diff": None, "note": "dtype or shape differ"}
    if cpu.dtype.kind == "f":
        close = np.isclose(cpu, device, rtol=RTOL, atol=ATOL, equal_nan=True)
        finite = np.isfinite(cpu) & np.isfinite(device)
        diff = np.abs(cpu[finite] - device[finite])
    else:
        close = cpu == device
        diff = np.abs(cpu.astype(np.float64) - device.astype(np.float64)) if cpu.dtype.kind in "iu" else ~close
    mismatches = int(close.size - np.count_nonzero(close))
    max_abs = float(np.max(diff, initial=0.0)) if diff.size else 0.0
    return {**out, "passed": mismatches == 0, "mismatches": mismatches, "max_abs_diff": max_abs}


def _seconds(fn: Callable[[], Any], sync: Sync, repeats: int) -> float:
    """Median wall time of ``fn`` with the device synchronized after each call (the caller has warmed it up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _case(
    label: str,
    kind: str,
    cpu_fn: Callable[[], Any],
    dev_fn: Callable[[], Any],
    dev_xp: ModuleType,
    sync: Sync,
    n: int,
    repeats: int,
) -> tuple[dict[str, Any], np.ndarray]:
    """Compare once (the device's first call also compiles cupy's kernels: not timed), then time both sides."""
    cpu = np.asarray(cpu_fn())
    dev = dev_fn()
    sync()
    on_device = isinstance(dev, dev_xp.ndarray)
    row = {"name": label, "kind": kind, "on_device": on_device, **compare_arrays(cpu, _host(dev))}
    row["passed"] = bool(row["passed"] and on_device)
    per_1m = 1e6 / n
    row["numpy_ms_per_1m"] = _seconds(cpu_fn, lambda: None, repeats) * per_1m * 1e3
    row["device_ms_per_1m"] = _seconds(dev_fn, sync, repeats) * per_1m * 1e3
    return row, cpu


def compare_kernels(
    kernels: ModuleType, rules: ModuleType, dev_xp: ModuleType, sync: Sync, n: int, repeats: int
) -> dict[str, Any]:
    """Every kernel, every number/timestamp rule lowering and the standardization step on ``dev_xp`` vs numpy.
    ``dev_xp`` is cupy on a GPU; with numpy it checks this function itself."""
    data = make_inputs(n, kernels.NAT)
    dev = {
        "numbers": dev_xp.asarray(data.numbers),
        "timestamps": dev_xp.asarray(data.timestamps),
        "integers": dev_xp.asarray(data.integers),
    }
    host = {"numbers": data.numbers, "timestamps": data.timestamps, "integers": data.integers, "text": data.text}
    rows: list[dict[str, Any]] = []
    numeric_outputs: list[np.ndarray] = []
    params = {"lookup": data.lookup}  # every kernel gets the fitted vocabulary; only `vocabulary` reads it
    for name, kernel in kernels.KERNELS.items():
        kind = next((k for k in ("numbers", "timestamps", "text") if kernel.kinds & _KINDS[k]), None)
        if kind is None:
            rows.append({"name": name, "kind": sorted(kernel.kinds), "passed": False, "note": "no input for kinds"})
            continue
        values, dev_values = host[kind], dev.get(kind, data.text)  # text kernels read host object arrays
        row, cpu = _case(
            name,
            f"kernel/{kind}",
            partial(kernel.vector, np, values, params),
            partial(kernel.vector, dev_xp, dev_values, params),
            dev_xp,
            sync,
            n,
            repeats,
        )
        rows.append(row)
        if kernel.output == "numeric":
            numeric_outputs.append(cpu.astype(np.float64, copy=False))

    for label, rule, kind in _rule_cases(rules):
        values = host[kind]
        keep = ~np.isnan(values) if kind == "numbers" else values != kernels.NAT if kind == "timestamps" else None
        host_values = values if keep is None else values[keep]  # rules see non-null values only
        dev_values = dev_xp.asarray(host_values)
        check = rule.vector()
        row, _ = _case(
            label,
            f"rule/{kind}",
            partial(check, np, host_values),
            partial(check, dev_xp, dev_values),
            dev_xp,
            sync,
            len(host_values),
            repeats,
        )
        rows.append(row)

    # the standardization step of features.contract (Contract._features), on the numeric kernels' outputs
    raw = np.stack(numeric_outputs, axis=1)
    # an infinity would make every standardized value NaN, and the edge magnitudes (1e300, float64's max, which
    # the identity kernel passes through) would overflow the variance: statistics are fitted on ordinary rows
    raw = raw[(np.abs(raw) < 1e100).all(axis=1)]
    mean, std = raw.mean(axis=0), np.maximum(raw.std(axis=0), 1e-6)  # as features.state.fit_state fits them
    dev_raw = dev_xp.asarray(raw)
    row, _ = _case(
        f"standardize [n, {raw.shape[1]}] -> float32",
        "contract",
        lambda: ((raw - np.asarray(mean)) / np.asarray(std)).astype("float32"),
        lambda: ((dev_raw - dev_xp.asarray(mean)) / dev_xp.asarray(std)).astype("float32"),
        dev_xp,
        sync,
        raw.shape[0] * raw.shape[1],
        repeats,
    )
    rows.append(row)

    covered = {rule.op for _, rule, _ in _rule_cases(rules)}
    ops = _inferline("inferline.features.lowerings").OPS
    applicable = {op for op, o in ops.items() if o.kinds & _RULE_KINDS and op != "elementwise"}
    return {
        "rows": rows,
        "uncovered_rule_ops": sorted(applicable - covered),
        "elementwise_note": "elementwise rules run the user's function value by value on the host: not compared",
        "null_counts": {
            "numbers_nan": int(np.isnan(data.numbers).sum()),
            "timestamps_nat": int((data.timestamps == kernels.NAT).sum()),
            "timestamps_before_epoch": int(((data.timestamps < 0) & (data.timestamps != kernels.NAT)).sum()),
            "text_none": int(sum(v is None for v in data.text)),
        },
    }


_KINDS = {
    "numbers": frozenset({"numeric", "integer"}),
    "timestamps": frozenset({"timestamp"}),
    "text": frozenset({"id", "categorical", "text"}),
}
_RULE_KINDS = frozenset({"numeric", "integer", "label", "timestamp"})


def _rule_cases(rules: ModuleType) -> list[tuple[str, Any, str]]:
    return [
        ("ge(0.0)", rules.ge(0.0), "numbers"),
        ("le(1e6)", rules.le(1e6), "numbers"),
        ("between(-10, 10)", rules.between(-10.0, 10.0), "numbers"),
        ("finite()", rules.finite(), "numbers"),
        (f"one_of{ONE_OF_NUMBERS}", rules.one_of(ONE_OF_NUMBERS), "numbers"),
        ("ge(0) integer", rules.ge(0), "integers"),
        ("le(500) integer", rules.le(500), "integers"),
        ("between(-100, 100) integer", rules.between(-100, 100), "integers"),
        (f"one_of{ONE_OF_INTEGERS} integer", rules.one_of(ONE_OF_INTEGERS), "integers"),
        (
            "in_range(1970, 2030)",
            rules.in_range("1970-01-01T00:00:00+00:00", "2030-01-01T00:00:00+00:00"),
            "timestamps",
        ),
        (
            "in_range(1900, 1970)",
            rules.in_range("1900-01-01T00:00:00+00:00", "1970-01-01T00:00:00+00:00"),
            "timestamps",
        ),
    ]


# ---------------------------------------------------------------------------------------------- check 1
def check_kernels(result: CheckResult, n: int, repeats: int) -> None:
    kernels = _inferline("inferline.features.kernels")
    rules = _inferline("inferline.features.rules")
    _imported(result, "inferline.features.kernels, inferline.features.rules")
    cupy = _library("cupy", "the lent machine has cupy-cuda13x")
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError (no driver, no device) and its kin
        raise NotRun(f"no CUDA device: cupy.cuda.runtime.getDeviceCount() raised {type(exc).__name__}: {exc}") from exc
    if count == 0:
        raise NotRun("no CUDA device: cupy sees 0 devices")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    device_name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    result.details.update(cupy=cupy.__version__, device=device_name, n=n, repeats=repeats)

    def sync() -> None:
        cupy.cuda.Device().synchronize()

    out = compare_kernels(kernels, rules, cupy, sync, n, repeats)
    result.details.update(out)
    result.lines.append(f"cupy {cupy.__version__} on {device_name}; numpy {np.__version__}; {n:,} values per kernel")
    result.lines.append(f"{'case':<34} {'kind':<18} {'max |diff|':>11} {'numpy ms/1M':>12} {'cupy ms/1M':>11}  result")
    for row in out["rows"]:
        diff = row.get("max_abs_diff")
        verdict = "equal" if row["passed"] else f"MISMATCH ({row.get('mismatches')}; {row.get('note', '')})"
        if not row.get("on_device", True):
            verdict += " (result not a cupy array)"
        result.lines.append(
            f"{row['name']:<34} {row['kind']!s:<18} {'-' if diff is None else f'{diff:.3g}':>11} "
            f"{row.get('numpy_ms_per_1m', float('nan')):>12.3f} {row.get('device_ms_per_1m', float('nan')):>11.3f}  "
            f"{verdict}"
        )
    failed = [r["name"] for r in out["rows"] if not r["passed"]]
    if out["uncovered_rule_ops"]:
        failed.append(f"rule operations not compared: {out['uncovered_rule_ops']} (add them to _rule_cases)")
    nulls = out["null_counts"]
    result.lines.append(
        f"inputs: {nulls['numbers_nan']:,} NaN numbers, {nulls['timestamps_nat']:,} NaT and "
        f"{nulls['timestamps_before_epoch']:,} pre-epoch timestamps, {nulls['text_none']:,} None texts"
    )
    result.status = "failed" if failed else "passed"
    result.reason = f"differ: {failed}" if failed else f"{len(out['rows'])} cases equal on cupy and numpy"


# ---------------------------------------------------------------------------------------------- check 2
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
    torch = _library("torch", "the lent machine has torch with CUDA")
    model = _inferline("inferline.training.model")
    _imported(result, "inferline.training.model")
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


# ---------------------------------------------------------------------------------------------- check 3
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
    pynvml = _library("pynvml", "install nvidia-ml-py (the lent machine has it)")
    read: Callable[[], list[dict[str, Any]]]
    try:
        utilization = _inferline("inferline.monitor.utilization")
        _imported(result, "inferline.monitor.utilization")
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


# ---------------------------------------------------------------------------------------------- driver
def _run(result: CheckResult, fn: Callable[[CheckResult], None]) -> CheckResult:
    start = time.perf_counter()
    try:
        fn(result)
    except NotRun as exc:
        result.status, result.reason = "not_run", str(exc)
    except Exception as exc:  # noqa: BLE001 - one check's error is that check's failure; the others still run
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        result.status = "failed"
        result.reason = f"{type(exc).__name__}: {exc} (at {Path(frame.filename).name}:{frame.lineno})"
        result.details["traceback"] = traceback.format_exc()
    result.details["seconds"] = round(time.perf_counter() - start, 3)
    return result


def _default_out() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else Path("build") / "gpu_check.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpu_check.py", description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON report ($OUT/gpu_check.json or build/...)")
    parser.add_argument("--n", type=int, default=1_000_000, help="values per kernel (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per kernel and side (median)")
    parser.add_argument("--steps", type=int, default=60, help="training steps on CUDA")
    parser.add_argument("--load-seconds", type=float, default=3.0, help="GPU load while NVML is sampled")
    return parser


def main(argv: Sequence[str] | None = None, origin: str = "the installed package") -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    if args.n < 1000 or args.repeats < 1 or args.steps < 20 or args.load_seconds <= 0:
        print("gpu_check: --n >= 1000, --repeats >= 1, --steps >= 20 and --load-seconds > 0", file=sys.stderr)
        return EXIT_USAGE
    out_path: Path = args.out or _default_out()
    start = time.perf_counter()
    print(f"inferline gpu-check: python {platform.python_version()}, numpy {np.__version__}, inferline from {origin}")
    checks = [
        _run(
            CheckResult("kernels", "cupy kernels equal numpy kernels"), lambda r: check_kernels(r, args.n, args.repeats)
        ),
        _run(CheckResult("training", "a torch CUDA training step"), lambda r: check_training(r, args.steps)),
        _run(CheckResult("nvml", "NVML in state ok with real figures"), lambda r: check_nvml(r, args.load_seconds)),
    ]
    failed = [c.name for c in checks if c.status == "failed"]
    not_run = [c.name for c in checks if c.status == "not_run"]
    status = EXIT_FAILED if failed else EXIT_NOT_RUN if not_run else EXIT_OK
    if failed:
        verdict = f"FAILED: {', '.join(failed)}" + (f"; not run: {', '.join(not_run)}" if not_run else "")
    elif not_run:
        verdict = f"NOT SHOWN: {len(not_run)} of {len(checks)} checks could not run here ({', '.join(not_run)})"
    else:
        verdict = "PASSED: all three checks ran on the GPU and passed"
    for i, c in enumerate(checks, 1):
        print(f"\n[{c.status.upper().replace('_', ' ')}] {i}. {c.title} ({c.details.get('seconds', 0):.1f} s)")
        for line in c.lines:
            print(f"    {line}")
        print(f"    -> {c.reason}")
    report = {
        "format": 1,
        "verdict": verdict,
        "exit_status": status,
        "passed": status == EXIT_OK,
        "failed": failed,
        "not_run": not_run,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": _pandas_state(),
        "inferline_from": origin,
        "seconds": round(time.perf_counter() - start, 3),
        "checks": {c.name: {"title": c.title, "status": c.status, "reason": c.reason, **c.details} for c in checks},
    }
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        written = f"JSON: {out_path}"
    except OSError as exc:
        written = f"JSON NOT WRITTEN to {out_path}: {exc}"
        status = EXIT_FAILED
    print(f"\n{verdict} (exit {status}, {report['seconds']:.1f} s, pandas {report['pandas']})\n{written}")
    return status


if __name__ == "__main__":
    _origin = "the installed package"
    if not __package__:  # run as a file: import this checkout, installed or not
        _origin = use_checkout(Path(__file__).resolve().parent.parent)
    sys.exit(main(origin=_origin))
