"""Drift detection: inferline's ``monitor.drift`` against scipy's tests and Evidently's DataDriftPreset, on the same
reference and current windows.

Data: ``rows`` x 20 columns, 15 numeric (normal and lognormal) and 5 categorical. In the current window three
numeric columns are shifted by 0.1, 0.2 and 0.3 of their standard deviation and one categorical column has one
category's frequency moved from 30 % to 36 %; the other 16 columns are drawn from the reference distribution.

- **inferline**: references are precomputed once (that is what a release carries: quantile bins and a 10,000-value
  sample per numeric column, counts per category); a window costs the KS test against the sample (exact, O(n log m)),
  PSI and JS over the bins, and chi-square over the categories, with a Bonferroni correction over the 20 tests.
- **scipy**: ``scipy.stats.ks_2samp`` on the full reference and window, ``scipy.stats.chi2_contingency`` on the
  category counts, the same alpha and correction.
- **Evidently** 0.7 ``DataDriftPreset`` with its defaults (its test choice and thresholds), on the same frames.

False positives are measured separately on undrifted windows (current drawn from the reference distribution with
new seeds), for inferline and scipy, where enough windows fit in the run.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from inferline.monitor.drift import CategoricalReference, NumericReference, drift_report

__all__ = ["bench_drift", "make_windows"]

NUMERIC = [f"num_{i:02d}" for i in range(15)]
CATEGORICAL = [f"cat_{i}" for i in range(5)]
SHIFTED = {"num_00": 0.1, "num_01": 0.2, "num_02": 0.3}
SHIFTED_CATEGORY = "cat_0"
CATEGORIES = ["a", "b", "c", "d", "e"]
BASE_P = np.array([0.30, 0.25, 0.20, 0.15, 0.10])


def _frame(rows: int, seed: int, drift: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    for i, name in enumerate(NUMERIC):
        loc, scale = float(i), 1.0 + 0.1 * i
        values = rng.normal(loc, scale, rows) if i % 3 else np.exp(rng.normal(0.5, 0.4, rows))
        std = scale if i % 3 else float(np.exp(0.5 + 0.4**2 / 2) * np.sqrt(np.exp(0.4**2) - 1))
        data[name] = values + (SHIFTED.get(name, 0.0) * std if drift else 0.0)
    for name in CATEGORICAL:
        p = BASE_P
        if drift and name == SHIFTED_CATEGORY:
            p = np.array([0.36, 0.25 * 0.64 / 0.70, 0.20 * 0.64 / 0.70, 0.15 * 0.64 / 0.70, 0.10 * 0.64 / 0.70])
        data[name] = rng.choice(CATEGORIES, rows, p=p / p.sum())
    return pd.DataFrame(data)


def make_windows(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    return _frame(rows, seed, drift=False), _frame(rows, seed + 1, drift=True)


def _inferline_refs(reference: pd.DataFrame) -> dict[str, Any]:
    return {
        "numeric": {n: NumericReference.from_values(reference[n].to_numpy(), sample_size=10_000) for n in NUMERIC},
        "categorical": {n: CategoricalReference.from_values(reference[n].to_numpy()) for n in CATEGORICAL},
    }


def _inferline(refs: dict[str, Any], current: pd.DataFrame, alpha: float) -> set[str]:
    report = drift_report(
        numeric={n: (refs["numeric"][n], current[n].to_numpy()) for n in NUMERIC},
        categorical={n: (refs["categorical"][n], current[n].to_numpy()) for n in CATEGORICAL},
        alpha=alpha,
        min_samples=500,
    )
    return {d.feature for d in report if d.state == "drift"}


def _scipy(reference: pd.DataFrame, current: pd.DataFrame, alpha: float) -> set[str]:
    from scipy.stats import chi2_contingency, ks_2samp

    per_test = alpha / (len(NUMERIC) + len(CATEGORICAL))
    flagged = {n for n in NUMERIC if ks_2samp(reference[n], current[n]).pvalue < per_test}
    for n in CATEGORICAL:
        table = pd.concat([reference[n].value_counts(), current[n].value_counts()], axis=1).fillna(0).T.to_numpy()
        if chi2_contingency(table, correction=False).pvalue < per_test:
            flagged.add(n)
    return flagged


def _evidently(reference: pd.DataFrame, current: pd.DataFrame) -> set[str]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    result = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    flagged = set()
    for metric in result.dict()["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            value, threshold, method = float(metric["value"]), float(config["threshold"]), config["method"]
            # p-value tests drift below the threshold; distances and PSI drift at or above it
            is_p_value = "p_value" in method or "test" in method.lower()
            if (value < threshold) if is_p_value else (value >= threshold):
                flagged.add(config["column"])
    return flagged


def bench_drift(
    rows: int, reps: int, alpha: float = 0.01, evidently: bool = True, fp_windows: int = 100
) -> dict[str, Any]:
    reference, current = make_windows(rows)
    t0 = time.perf_counter()
    refs = _inferline_refs(reference)
    reference_s = time.perf_counter() - t0
    sides = {
        "inferline": lambda: _inferline(refs, current, alpha),
        "scipy": lambda: _scipy(reference, current, alpha),
    }
    if evidently:
        sides["evidently"] = lambda: _evidently(reference, current)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    flagged: dict[str, list[str]] = {}
    with tqdm(total=reps * len(sides), desc="drift", unit="run", disable=None) as bar:
        for _ in range(reps):  # interleaved
            for name, side in sides.items():
                t = time.perf_counter()
                result = side()
                seconds[name].append(time.perf_counter() - t)
                flagged[name] = sorted(result)
                bar.update()
    truth = {*SHIFTED, SHIFTED_CATEGORY}
    detection = {
        name: {
            "flagged": f,
            "missed": sorted(truth - set(f)),
            "false_positives": sorted(set(f) - truth),
        }
        for name, f in flagged.items()
    }
    # false-positive rate on undrifted windows (20,000 rows each), for the two sides cheap enough to repeat
    fp_rows = 20_000
    fp: dict[str, int] = {"inferline": 0, "scipy": 0}
    small_ref = reference.head(fp_rows * 5)
    small_refs = _inferline_refs(small_ref)
    for w in tqdm(range(fp_windows), desc="false positives", unit="window", disable=None):
        undrifted = _frame(fp_rows, 10_000 + w, drift=False)
        fp["inferline"] += len(_inferline(small_refs, undrifted, alpha))
        fp["scipy"] += len(_scipy(small_ref, undrifted, alpha))
    tests = fp_windows * (len(NUMERIC) + len(CATEGORICAL))
    return {
        "rows": rows,
        "columns": {"numeric": len(NUMERIC), "categorical": len(CATEGORICAL)},
        "shifted": {**{k: f"{v} std" for k, v in SHIFTED.items()}, SHIFTED_CATEGORY: "category 'a' 30% -> 36%"},
        "alpha": alpha,
        "reference_precompute_s": reference_s,
        "seconds": seconds,
        "detection": detection,
        "speedup_over_evidently": (
            [e / i for i, e in zip(seconds["inferline"], seconds["evidently"], strict=True)] if evidently else []
        ),
        "speedup_over_scipy": [s / i for i, s in zip(seconds["inferline"], seconds["scipy"], strict=True)],
        "false_positives": {
            "windows": fp_windows,
            "rows_per_window": fp_rows,
            "tests": tests,
            "flags": fp,
            "rate_per_test": {k: v / tests for k, v in fp.items()},
            "nominal_rate_per_test": alpha / (len(NUMERIC) + len(CATEGORICAL)),
            "windows_with_any_flag_nominal": alpha,
        },
    }
