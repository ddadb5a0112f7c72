"""Check 1 of ``make gpu-check``: every feature kernel, every number/timestamp rule lowering and the contract's
standardization step run with ``xp=cupy`` and with ``xp=numpy`` over generated values with every edge case the
kernels must agree on (nulls, infinities, subnormals, pre-epoch timestamps, non-ASCII text); results compared
(float64: allclose, rtol 1e-12; int64 and masks: equal) and timed per 1M values on each side.

Imports numpy only; the inferline modules are imported by the check itself (a failure to import them without
pandas is the check's failure).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from inferline.benchmarks.gpu_check_result import CheckResult, NotRun, imported, inferline_module, library

__all__ = ["ATOL", "RTOL", "Inputs", "check_kernels", "compare_arrays", "compare_kernels", "make_inputs"]

RTOL = 1e-12  # float64 results, relative
ATOL = 1e-15  # float64 results, absolute floor for results near zero (sin/cos at multiples of pi): ~5 ulp of 1.0

Sync = Callable[[], None]


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
    ops = inferline_module("inferline.features.lowerings").OPS
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


# ---------------------------------------------------------------------------------------------- the check
def check_kernels(result: CheckResult, n: int, repeats: int) -> None:
    """Check 1 into ``result``: ``compare_kernels`` on cupy against numpy, ``n`` values per case; ``NotRun`` without
    cupy or a CUDA device."""
    kernels = inferline_module("inferline.features.kernels")
    rules = inferline_module("inferline.features.rules")
    imported(result, "inferline.features.kernels, inferline.features.rules")
    cupy = library("cupy", "the lent machine has cupy-cuda13x")
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
