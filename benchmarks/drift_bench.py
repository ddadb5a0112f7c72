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

Calibration (:func:`calibration`, ``python -m inferline.benchmarks.drift_bench [--windows 300] [--label after]``,
results in ``benchmarks/results/drift/``): one feature's test at ``alpha`` on windows of the monitor's default
size (``MonitorConfig.drift_window_rows``, 5,000 rows), each against a reference drawn afresh for every window (so
the rate is the test's size over references, not one lucky or unlucky reference's):

- false flags over undrifted windows of Zipf(1.1) categorical columns of 50, 500 and 5,000 categories against
  references of 2,000, 20,000 and 200,000 rows; of the vocabulary's ``<unknown>`` bucket (values outside a
  vocabulary fitted on 70 % of the reference rows, as training does: at least 5 occurrences, the ``max_vocab``
  most frequent); of a constant and a 99.9 %-zero numeric feature; of a raw column's missingness;
- detection of a new value in 1 % of the rows of a constant numeric feature, a 99.9 %-zero one and a constant
  categorical one, and of a raw column going from 0 % to 0.9 % missing.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from inferline.core.reference import CategoricalReference, NumericReference
from inferline.monitor.drift import drift_report

__all__ = ["bench_drift", "calibration", "make_windows"]

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


# --------------------------------------------------------------------------------------------------- calibration

WINDOW_ROWS = 5_000  # MonitorConfig.drift_window_rows, the monitor's default window
ZIPF_EXPONENT = 1.1


def _zipf(categories: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, categories + 1) ** ZIPF_EXPONENT
    return np.asarray(weights / weights.sum())


def _counts_reference(codes: np.ndarray, labels: np.ndarray) -> CategoricalReference:
    counts = np.bincount(codes, minlength=labels.size)
    return CategoricalReference({str(labels[i]): int(c) for i, c in enumerate(counts) if c}, int(counts.sum()))


def _rate(flags: int, windows: int) -> dict[str, Any]:
    from scipy.stats import binomtest

    ci = binomtest(flags, windows).proportion_ci(0.95)
    return {"flags": flags, "windows": windows, "rate": flags / windows, "ci95": [ci.low, ci.high]}


def _zipf_false_flags(categories: int, reference_rows: int, windows: int, alpha: float, seed: int) -> dict[str, Any]:
    from inferline.monitor.drift import categorical_drift

    rng = np.random.default_rng(seed)
    p = _zipf(categories)
    labels = np.array([f"v{i}" for i in range(categories)], dtype=object)
    flags = 0
    for _ in range(windows):
        reference = _counts_reference(rng.choice(categories, reference_rows, p=p), labels)
        window = labels[rng.choice(categories, WINDOW_ROWS, p=p)]
        flags += categorical_drift("x", reference, window, alpha=alpha, min_samples=500).state == "drift"
    return _rate(flags, windows)


def _unknown_false_flags(
    categories: int, reference_rows: int, max_vocab: int, windows: int, alpha: float, seed: int
) -> dict[str, Any]:
    """The monitor's view of a categorical feature: vocabulary labels, ``<unknown>`` outside the vocabulary. The
    vocabulary is fitted on the first 70 % of the reference rows (training's split); the profile is made by
    ``training.profile.reference_profile``, told which rows fitted the vocabulary where it accepts
    ``fitted_rows``."""
    from inferline.features.state import FeatureMatrix, FeatureState
    from inferline.monitor.drift import categorical_drift
    from inferline.training.profile import reference_profile

    rng = np.random.default_rng(seed)
    p = _zipf(categories)
    flags = 0
    fitted_rows_supported = True
    unknown_shares: list[tuple[float, float]] = []
    for _ in range(windows):
        rows = rng.choice(categories, reference_rows, p=p)
        train = int(0.7 * reference_rows)
        counts = np.bincount(rows[:train], minlength=categories)
        eligible = np.flatnonzero(counts >= 5)
        vocabulary = eligible[np.lexsort((eligible, -counts[eligible]))][:max_vocab]
        code_of = np.zeros(categories, dtype=np.int64)
        code_of[vocabulary] = np.arange(1, vocabulary.size + 1)
        state = FeatureState("bench", "h", [], ["c"], {"c": [f"v{i}" for i in vocabulary]}, [], [], threshold=0.5)
        matrix = FeatureMatrix(np.zeros((reference_rows, 0), np.float32), code_of[rows][:, None])
        scores = np.full(reference_rows, 0.5)
        try:
            profile = reference_profile(matrix, state, scores, task="binary", fitted_rows=train)
        except TypeError:  # a profile without fitted_rows (before the fix)
            fitted_rows_supported = False
            profile = reference_profile(matrix, state, scores, task="binary")
        reference = CategoricalReference.from_dict(profile["categorical"]["c"])
        window = state.category_labels("c", code_of[rng.choice(categories, WINDOW_ROWS, p=p)])
        result = categorical_drift("c", reference, window, alpha=alpha, min_samples=500)
        flags += result.state == "drift"
        unknown_shares.append(
            (reference.counts.get("<unknown>", 0) / reference.rows, float(np.mean(window == "<unknown>")))
        )
    shares = np.array(unknown_shares)
    return {
        **_rate(flags, windows),
        "vocabulary_fitted_rows_excluded": fitted_rows_supported,
        "unknown_share_reference_mean": float(shares[:, 0].mean()),
        "unknown_share_window_mean": float(shares[:, 1].mean()),
    }


def _numeric_rate(kind: str, new_share: float, windows: int, alpha: float, seed: int) -> dict[str, Any]:
    """A constant (``kind="constant"``, every value 0) or 99.9 %-zero (``"zero_inflated"``: 0.1 % lognormal)
    feature; a profile of 20,000 rows (a 5,000-value sample, as training keeps); in the window ``new_share`` of
    the rows hold the value 1.0, which the reference never held (inside its range when zero-inflated)."""
    from inferline.monitor.drift import numeric_drift

    rng = np.random.default_rng(seed)

    def draw(n: int) -> np.ndarray:
        values = np.zeros(n)
        if kind == "zero_inflated":
            nonzero = rng.random(n) < 0.001
            values[nonzero] = rng.lognormal(0.0, 1.0, int(nonzero.sum()))
        return values

    flags = 0
    for _ in range(windows):
        reference = NumericReference.from_values(draw(20_000), sample_size=5_000, seed=int(rng.integers(1 << 31)))
        window = draw(WINDOW_ROWS)
        window[rng.random(WINDOW_ROWS) < new_share] = 1.0
        flags += numeric_drift("x", reference, window, alpha=alpha, min_samples=500).state == "drift"
    return _rate(flags, windows)


def _categorical_new_value(new_share: float, windows: int, alpha: float, seed: int) -> dict[str, Any]:
    from inferline.monitor.drift import categorical_drift

    rng = np.random.default_rng(seed)
    reference = CategoricalReference({"a": 20_000}, 20_000)
    flags = 0
    for _ in range(windows):
        window = np.where(rng.random(WINDOW_ROWS) < new_share, "new", "a").astype(object)
        flags += categorical_drift("x", reference, window, alpha=alpha, min_samples=500).state == "drift"
    return _rate(flags, windows)


def _missing_rate(
    reference_share: float, window_share: float, reference_rows: int, windows: int, alpha: float, seed: int
) -> dict[str, Any]:
    from inferline.core.reference import MissingReference
    from inferline.monitor.drift import missing_drift

    rng = np.random.default_rng(seed)
    flags = 0
    for _ in range(windows):
        reference = MissingReference(reference_rows, int(rng.binomial(reference_rows, reference_share)))
        nulls = int(rng.binomial(WINDOW_ROWS, window_share))
        flags += missing_drift("c", reference, nulls, WINDOW_ROWS, alpha).state == "drift"
    return _rate(flags, windows)


def calibration(windows: int = 300, alpha: float = 0.01, seed: int = 0) -> dict[str, Any]:
    """False-flag and detection rates of one feature's drift test (see the module docstring)."""
    started = time.perf_counter()
    false_flags: dict[str, Any] = {}
    for categories in (50, 500, 5_000):
        for reference_rows in (2_000, 20_000, 200_000):
            key = f"zipf_{categories}_categories_{reference_rows}_reference_rows"
            false_flags[key] = _zipf_false_flags(categories, reference_rows, windows, alpha, seed)
            print(key, false_flags[key]["flags"], flush=True)
    for categories, reference_rows, max_vocab in ((5_000, 20_000, 64), (5_000, 20_000, 1_000), (500, 2_000, 1_000)):
        key = f"unknown_bucket_zipf_{categories}_{reference_rows}_rows_max_vocab_{max_vocab}"
        false_flags[key] = _unknown_false_flags(categories, reference_rows, max_vocab, windows, alpha, seed)
        print(key, false_flags[key]["flags"], flush=True)
    false_flags["numeric_constant"] = _numeric_rate("constant", 0.0, windows, alpha, seed)
    false_flags["numeric_999_zero"] = _numeric_rate("zero_inflated", 0.0, windows, alpha, seed)
    for share in (0.0, 0.02):
        false_flags[f"missing_{share:g}"] = _missing_rate(share, share, 20_000, windows, alpha, seed)
    detection = {
        "new_value_1pct_numeric_constant": _numeric_rate("constant", 0.01, windows, alpha, seed + 1),
        "new_value_1pct_numeric_999_zero": _numeric_rate("zero_inflated", 0.01, windows, alpha, seed + 1),
        "new_value_1pct_categorical_constant": _categorical_new_value(0.01, windows, alpha, seed + 1),
        "missing_0_to_0.9pct": _missing_rate(0.0, 0.009, 20_000, windows, alpha, seed + 1),
    }
    print(detection, flush=True)
    return {
        "alpha": alpha,
        "window_rows": WINDOW_ROWS,
        "windows": windows,
        "zipf_exponent": ZIPF_EXPONENT,
        "false_flags": false_flags,
        "detection": detection,
        "seconds": time.perf_counter() - started,
    }


def _calibration_markdown(results: dict[str, Any]) -> str:
    labels = [k for k in ("before", "after") if k in results]
    lines = [
        "# Drift tests: false flags on undrifted windows, detection of rare changes",
        "",
        f"One feature's test at alpha = {results[labels[-1]]['alpha']} (the nominal false-flag rate) on windows of "
        f"{results[labels[-1]]['window_rows']:,} rows (the monitor's default `drift_window_rows`), "
        f"{results[labels[-1]]['windows']} windows per line, a fresh reference for each window. Command: "
        "`python -m inferline.benchmarks.drift_bench --label after` (`before`: the same script on the code before "
        "the fix). Rates with a 95 % Clopper-Pearson interval.",
        "",
    ]
    for section, title in (("false_flags", "False flags (undrifted)"), ("detection", "Detection (drifted)")):
        lines += [f"## {title}", "", "| case | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for case in results[labels[-1]][section]:
            cells = []
            for label in labels:
                r = results[label][section].get(case)
                cells.append(
                    "-"
                    if r is None
                    else f"{r['flags']}/{r['windows']} ({100 * r['rate']:.1f} %, "
                    f"{100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f})"
                )
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
        lines.append("")
    for label in labels:
        lines.append(f"{label}: {results[label].get('revision', '?')}, {results[label]['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from inferline.benchmarks.cnn_bench import save_results

    parser = argparse.ArgumentParser(prog="python -m inferline.benchmarks.drift_bench", description=__doc__)
    parser.add_argument("--windows", type=int, default=300, help="windows per case (default: 300)")
    parser.add_argument("--alpha", type=float, default=0.01, help="the test's level (default: 0.01)")
    parser.add_argument("--label", choices=("before", "after"), default="after", help="which column to write")
    parser.add_argument("--revision", default="", help="the code revision measured (recorded)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/drift"), help="results folder")
    args = parser.parse_args(argv)
    import json

    path = args.out / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    measured = calibration(args.windows, args.alpha)
    measured["revision"] = args.revision
    measured["created_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    results[args.label] = measured
    print(save_results(args.out, results, _calibration_markdown(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
