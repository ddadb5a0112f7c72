"""Drift statistics (monitor.drift) and the latency sketch (monitor.sketch) against independent references:
scipy's own tests (ks_2samp, chi2_contingency, jensenshannon), straightforward numpy formulas written here, and
numpy's exact percentiles."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import distributions

from inferline.core.reference import NULL, CategoricalReference, MissingReference, NumericReference, bin_counts
from inferline.core.sketch import LogHistogram
from inferline.monitor.drift import categorical_drift, drift_report, missing_drift, numeric_drift
from inferline.monitor.two_sample import (
    MIN_EXPECTED,
    UNSEEN,
    category_counts,
    chi_square,
    js_divergence,
    ks_2samp,
    psi,
    surge_test,
    two_sample_cells,
)

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------------- KS


def _ks_cases() -> list[tuple[str, FloatArray, FloatArray]]:
    rng = np.random.default_rng(1)
    same = rng.normal(size=400)
    return [
        ("shifted_normal", rng.normal(size=3000), rng.normal(0.05, 1.0, size=200_000)),
        ("heavy_ties", rng.integers(0, 10, 2000).astype(float), rng.integers(0, 10, 50_000).astype(float)),
        ("ties_shifted", rng.integers(0, 10, 500).astype(float), rng.integers(1, 11, 7000).astype(float)),
        ("identical", same, same.copy()),
        ("cur_above", rng.uniform(0, 1, 50), rng.uniform(2, 3, 80)),
        ("cur_below", rng.uniform(2, 3, 50), rng.uniform(0, 1, 80)),
        ("touching", np.array([0.0, 1.0, 2.0]), np.array([2.0, 3.0, 4.0, 5.0])),
        ("tiny", np.array([0.3, 1.2, 0.7]), np.array([0.5, 2.0])),
        ("one_vs_two", np.array([1.0]), np.array([1.0, 2.0])),
    ]


@pytest.mark.parametrize(("reference", "current"), [c[1:] for c in _ks_cases()], ids=[c[0] for c in _ks_cases()])
def test_ks_statistic_and_pvalue_match_scipy(reference: FloatArray, current: FloatArray) -> None:
    before = current.copy()
    d, p = ks_2samp(reference, current)
    expected = scipy.stats.ks_2samp(reference, current, method="asymp")
    assert abs(d - expected.statistic) <= 1e-9
    assert abs(p - expected.pvalue) <= 1e-9
    m, n = len(reference), len(current)
    assert p == pytest.approx(distributions.kstwo.sf(d, round(m * n / (m + n))), abs=1e-12)
    np.testing.assert_array_equal(current, before)  # the current window is not sorted in place


def test_ks_special_values() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=300)
    assert ks_2samp(x, x)[0] == 0.0
    assert ks_2samp(x, x)[1] == 1.0
    assert ks_2samp(x, x + 100.0)[0] == 1.0
    assert ks_2samp(x + 100.0, x)[0] == 1.0


def test_ks_random_small_samples_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        m, n = int(rng.integers(1, 25)), int(rng.integers(1, 25))
        levels = int(rng.integers(1, 6))
        a = rng.integers(0, levels, m).astype(float)
        b = rng.integers(0, levels, n).astype(float) + float(rng.integers(-1, 2))
        assert abs(ks_2samp(a, b)[0] - scipy.stats.ks_2samp(a, b).statistic) <= 1e-12, (a, b)


def test_ks_drops_nans_and_rejects_empty() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=200), rng.normal(0.3, 1.0, size=300)
    a_nan, b_nan = np.append(a, [np.nan, np.nan]), np.insert(b, 5, np.nan)
    assert ks_2samp(a_nan, b_nan) == ks_2samp(a, b)
    with pytest.raises(ValueError, match="non-empty"):
        ks_2samp(a, np.array([np.nan]))


def test_ks_pvalue_tends_to_kolmogorov_limit() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=5000), rng.normal(0.02, 1.0, size=100_000)
    d, p = ks_2samp(a, b)
    en = 5000 * 100_000 / 105_000
    from scipy.special import kolmogorov

    assert 0.0 < p < 1.0
    assert p == pytest.approx(float(kolmogorov(math.sqrt(en) * d)), abs=5e-3)


# --------------------------------------------------------------------------------------------------- PSI / JS


def _reference_bins(values: FloatArray, edges: list[float]) -> FloatArray:
    """The documented binning written independently: bin i is (edges[i-1], edges[i]], outer bins unbounded."""
    values = values[~np.isnan(values)]
    bounds = [-math.inf, *edges, math.inf]
    counts = [np.count_nonzero((values > lo) & (values <= hi)) for lo, hi in itertools.pairwise(bounds)]
    counts[0] += np.count_nonzero(values == -math.inf)
    return np.array(counts, dtype=float)


def _reference_psi(ref: FloatArray, cur: FloatArray, eps: float = 1e-4) -> float:
    p, q = ref / ref.sum(), cur / cur.sum()
    p, q = np.where(p < eps, eps, p), np.where(q < eps, eps, q)
    return float(np.sum((q - p) * np.log(q / p)))


def _reference_js(ref: FloatArray, cur: FloatArray) -> float:
    p, q = ref / ref.sum(), cur / cur.sum()
    total = 0.0
    for pi, qi in zip(p, q, strict=True):
        mi = (pi + qi) / 2
        if pi > 0:
            total += 0.5 * pi * math.log2(pi / mi)
        if qi > 0:
            total += 0.5 * qi * math.log2(qi / mi)
    return total


def test_psi_and_js_match_direct_formulas() -> None:
    rng = np.random.default_rng(6)
    ref_values = rng.normal(size=20_000)
    ref = NumericReference.from_values(ref_values, bins=10)
    np.testing.assert_array_equal(ref.counts, _reference_bins(ref_values, ref.edges))
    for cur_values in (rng.normal(0.2, 1.1, 15_000), rng.normal(size=15_000), rng.uniform(-0.5, 0.5, 3000)):
        cur = _reference_bins(cur_values, ref.edges)
        np.testing.assert_array_equal(bin_counts(cur_values, ref.edges), cur)
        counts = np.array(ref.counts, dtype=float)
        assert psi(ref.counts, cur) == pytest.approx(_reference_psi(counts, cur), abs=1e-12)
        assert js_divergence(ref.counts, cur) == pytest.approx(_reference_js(counts, cur), abs=1e-12)
    # the uniform window leaves the outer bins empty: the eps floor keeps PSI finite, JS skips the zero terms
    assert 0.0 in _reference_bins(rng.uniform(-0.5, 0.5, 3000), ref.edges)


def test_psi_eps_floor_and_identity() -> None:
    ref, cur = np.array([50.0, 50.0, 0.0]), np.array([40.0, 40.0, 20.0])
    expected = (0.4 - 0.5) * math.log(0.4 / 0.5) * 2 + (0.2 - 1e-4) * math.log(0.2 / 1e-4)
    assert psi(ref, cur) == pytest.approx(expected, abs=1e-12)
    assert psi(ref, cur, eps=1e-2) == pytest.approx((0.4 - 0.5) * math.log(0.8) * 2 + 0.19 * math.log(20), abs=1e-12)
    assert psi([3, 5, 0, 2], [30, 50, 0, 20]) == 0.0
    with pytest.raises(ValueError, match="positive total"):
        psi([0, 0], [1, 2])
    with pytest.raises(ValueError, match="length"):
        psi([1, 2], [1, 2, 3])


def test_js_properties_and_scipy() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        a = rng.integers(0, 20, 8).astype(float)
        b = rng.integers(0, 20, 8).astype(float)
        a[0] += 1
        b[1] += 1
        js = js_divergence(a, b)
        assert 0.0 <= js <= 1.0
        assert js == pytest.approx(js_divergence(b, a), abs=1e-15)
        assert js == pytest.approx(float(jensenshannon(a / a.sum(), b / b.sum(), base=2)) ** 2, abs=1e-12)
    assert js_divergence([1, 0], [0, 1]) == 1.0
    assert js_divergence([2, 3, 0], [4, 6, 0]) == 0.0


# --------------------------------------------------------------------------------------------------- chi-square


def _assert_chi2_matches(ref: npt.ArrayLike, cur: npt.ArrayLike, table_for_scipy: npt.ArrayLike) -> None:
    stat, p, dof = chi_square(ref, cur)
    expected = scipy.stats.chi2_contingency(np.asarray(table_for_scipy), correction=False)
    assert abs(stat - expected.statistic) <= 1e-9
    assert abs(p - expected.pvalue) <= 1e-9
    assert dof == expected.dof


def test_chi_square_matches_scipy() -> None:
    rng = np.random.default_rng(8)
    for k in (2, 3, 7):
        ref, cur = rng.integers(1, 500, k), rng.integers(1, 500, k)
        _assert_chi2_matches(ref, cur, [ref, cur])
    # an empty column is dropped (scipy rejects zero expected frequencies, so compare on the reduced table)
    ref, cur = np.array([120, 0, 80, 40]), np.array([100, 0, 95, 30])
    _assert_chi2_matches(ref, cur, [[120, 80, 40], [100, 95, 30]])
    assert chi_square(ref, cur)[2] == 2
    assert chi_square([10, 0], [20, 0]) == (0.0, 1.0, 0)
    with pytest.raises(ValueError, match="positive total"):
        chi_square([10, 5], [0, 0])


def test_chi_square_with_unseen_category() -> None:
    ref = CategoricalReference.from_values(["a"] * 300 + ["b"] * 200 + ["c"] * 100)
    current = ["a"] * 250 + ["b"] * 200 + ["c"] * 90 + ["zz"] * 40 + ["yy"] * 5
    labels, ref_counts, cur_counts = category_counts(ref, current)
    assert labels == ["a", "b", "c", UNSEEN]
    assert ref_counts.tolist() == [300, 200, 100, 0]
    assert cur_counts.tolist() == [250, 200, 90, 45]
    _assert_chi2_matches(ref_counts, cur_counts, [[300, 200, 100, 0], [250, 200, 90, 45]])
    assert chi_square(ref_counts, cur_counts)[2] == 3


# --------------------------------------------------------------------------------------------------- references


def test_bin_counts_edges_go_left_and_nans_are_dropped() -> None:
    edges = [1.0, 2.0, 3.0]
    values = np.array([1.0, 2.0, 3.0, 0.5, 1.5, 3.5, -np.inf, np.inf, np.nan, 2.0000001, np.nan])
    counts = bin_counts(values, edges)
    assert counts.tolist() == [3, 2, 2, 2]
    assert counts.sum() == np.count_nonzero(~np.isnan(values))
    assert bin_counts(np.array([np.nan]), edges).tolist() == [0, 0, 0, 0]
    assert bin_counts(np.array([5.0, -5.0]), []).tolist() == [2]


def test_numeric_reference_build_round_trip_and_merge() -> None:
    rng = np.random.default_rng(9)
    values = np.concatenate([rng.exponential(size=30_000), [np.nan] * 10])
    ref = NumericReference.from_values(values, bins=20, sample_size=2000, seed=1)
    finite = values[~np.isnan(values)]
    expected_edges = np.unique(np.quantile(finite, np.linspace(0, 1, 21)[1:-1]))
    np.testing.assert_allclose(ref.edges, expected_edges, rtol=0, atol=0)
    assert ref.rows == 30_000 and sum(ref.counts) == 30_000 and len(ref.counts) == len(ref.edges) + 1
    assert len(ref.sample) == 2000 and ref.sample == sorted(ref.sample) and set(ref.sample) <= set(finite.tolist())
    assert NumericReference.from_dict(json.loads(json.dumps(ref.as_dict()))) == ref
    assert NumericReference.from_values(values, bins=20, sample_size=2000, seed=1) == ref  # deterministic

    # heavy ties collapse duplicate quantiles into unique edges
    ties = NumericReference.from_values(rng.integers(0, 3, 1000), bins=10)
    assert ties.edges == sorted(set(ties.edges)) and len(ties.edges) <= 3

    other_values = rng.exponential(size=10_000)
    other = NumericReference(
        edges=ref.edges,
        counts=bin_counts(other_values, ref.edges).tolist(),
        sample=sorted(other_values[:500]),
        rows=10_000,
    )
    merged = ref.merge(other, seed=3)
    assert merged.rows == 40_000
    assert merged.counts == [a + b for a, b in zip(ref.counts, other.counts, strict=True)]
    assert merged.edges == ref.edges
    # weighted by rows (3:1) and capped by the smaller side's sample: 500 from other -> 1500 from ref
    assert len(merged.sample) == 2000 and merged.sample == sorted(merged.sample)
    from_other = sum(v in set(other.sample) for v in merged.sample)
    assert from_other == 500
    assert merged == ref.merge(other, seed=3)

    different = NumericReference.from_values(rng.normal(size=1000), bins=5)
    with pytest.raises(ValueError, match="different edges") as info:
        ref.merge(different)
    assert str(different.edges[0]) in str(info.value) and str(ref.edges[0]) in str(info.value)
    with pytest.raises(ValueError, match="len"):
        NumericReference(edges=[1.0], counts=[1], sample=[], rows=1)


def test_categorical_reference_round_trip_nulls_and_merge() -> None:
    values = ["a", "b", None, "a", float("nan"), np.nan, "c", "a"]
    ref = CategoricalReference.from_values(values)
    assert ref.counts == {NULL: 3, "a": 3, "b": 1, "c": 1}
    assert ref.rows == 8
    assert CategoricalReference.from_dict(json.loads(json.dumps(ref.as_dict()))) == ref
    from_array = CategoricalReference.from_values(np.array(["a", "b", "a"]))
    assert from_array.counts == {"a": 2, "b": 1}
    merged = ref.merge(CategoricalReference.from_values(["a", "d", "d"]))
    assert merged.counts == {NULL: 3, "a": 4, "b": 1, "c": 1, "d": 2}
    assert merged.rows == 11


# --------------------------------------------------------------------------------------------------- drift


@pytest.fixture(scope="module")
def profiles() -> dict[str, object]:
    rng = np.random.default_rng(10)
    n_ref, n_cur = 50_000, 20_000
    cats, p_ref = ["A", "B", "C", "D"], [0.2, 0.3, 0.3, 0.2]
    p_shift = [0.35, 0.25, 0.25, 0.15]
    ref_x0, ref_x1 = rng.normal(10.0, 2.0, n_ref), rng.gamma(2.0, 1.0, n_ref)
    ref_c0, ref_c1 = rng.choice(cats, n_ref, p=p_ref), rng.choice(cats, n_ref, p=p_ref)
    ref_pred = rng.beta(2.0, 5.0, n_ref)
    cur = np.random.default_rng(11)
    return {
        "numeric": {
            "x0": (NumericReference.from_values(ref_x0), cur.normal(10.0 + 0.3 * 2.0, 2.0, n_cur)),
            "x1": (NumericReference.from_values(ref_x1), cur.gamma(2.0, 1.0, n_cur)),
        },
        "categorical": {
            "c0": (CategoricalReference.from_values(ref_c0), cur.choice(cats, n_cur, p=p_shift)),
            "c1": (CategoricalReference.from_values(ref_c1), cur.choice(cats, n_cur, p=p_ref)),
        },
        "prediction": (NumericReference.from_values(ref_pred), cur.beta(2.0, 5.0, n_cur)),
    }


def test_drift_report_flags_shifted_features_only(profiles: dict) -> None:
    report = drift_report(profiles["numeric"], profiles["categorical"], profiles["prediction"], alpha=0.01)
    by_name = {r.feature: r for r in report}
    assert [r.feature for r in report] == ["x0", "x1", "c0", "c1", "prediction"]
    assert [r.kind for r in report] == ["numeric", "numeric", "categorical", "categorical", "prediction"]
    assert {name: r.state for name, r in by_name.items()} == {
        "x0": "drift",
        "x1": "ok",
        "c0": "drift",
        "c1": "ok",
        "prediction": "ok",
    }
    for r in report:
        assert r.alpha == pytest.approx(0.01 / 5, rel=1e-15)  # Bonferroni over 5 tests
        assert r.p_value is not None
        assert r.state == ("drift" if r.p_value < r.alpha else "ok")
        assert r.n_current == 20_000 and r.n_reference == 50_000
        assert json.loads(json.dumps(r.as_dict()))["feature"] == r.feature
    assert by_name["x0"].test == "ks"
    assert set(by_name["x0"].statistics) == {
        *("ks", "ks_p_value", "ks_rows", "psi", "js"),
        *("value_chi_square", "value_chi_square_p_value", "surge_p_value"),
    }
    assert by_name["c0"].test == "chi_square"
    assert set(by_name["c0"].statistics) == {
        *("chi_square", "chi_square_p_value", "dof", "cells", "surge_p_value", "psi", "js"),
        *("unseen_share", "null_share", "null_share_reference", "missing_p_value"),
    }
    assert by_name["c0"].statistics["dof"] == 3.0
    # the magnitudes agree with the decision: shifted features have clearly larger PSI than undrifted ones
    assert by_name["x0"].statistics["psi"] > 5 * by_name["x1"].statistics["psi"]
    assert by_name["c0"].statistics["psi"] > 5 * by_name["c1"].statistics["psi"]

    only_two = drift_report({"x1": profiles["numeric"]["x1"]}, {"c1": profiles["categorical"]["c1"]}, alpha=0.05)
    assert [r.alpha for r in only_two] == [0.025, 0.025]
    assert drift_report({}, {}) == []


def test_drift_report_tests_every_output_with_the_features() -> None:
    """``outputs``: numeric references are KS-tested, categorical ones chi-square-tested, all of kind "prediction",
    after the features and inside the same Bonferroni correction; ``prediction=`` is the one-output shorthand."""
    rng = np.random.default_rng(13)
    ref_p = rng.dirichlet([4.0, 2.0, 1.0], 20_000)
    cur_p = np.column_stack([ref_p[:10_000, 0], rng.beta(3.0, 5.0, 10_000), ref_p[:10_000, 2]])  # class 1 moves
    ref_classes = rng.choice(["a", "b", "c"], 20_000, p=[0.5, 0.3, 0.2])
    cur_classes = rng.choice(["a", "b", "c"], 10_000, p=[0.5, 0.3, 0.2])
    x = (NumericReference.from_values(rng.normal(size=20_000)), rng.normal(size=10_000))
    outputs = {
        **{f"probability_{k}": (NumericReference.from_values(ref_p[:, k]), cur_p[:, k]) for k in range(3)},
        "predicted_class": (CategoricalReference.from_values(ref_classes), cur_classes),
    }
    report = drift_report({"x": x}, {}, alpha=0.01, outputs=outputs)
    assert [(r.feature, r.kind, r.test) for r in report] == [
        ("x", "numeric", "ks"),
        ("probability_0", "prediction", "ks"),
        ("probability_1", "prediction", "ks"),
        ("probability_2", "prediction", "ks"),
        ("predicted_class", "prediction", "chi_square"),
    ]
    assert all(r.alpha == pytest.approx(0.01 / 5) for r in report)
    for r, (ref, cur) in zip(report[1:4], list(outputs.values())[:3], strict=True):
        assert r.p_value == pytest.approx(scipy.stats.ks_2samp(ref.sample, cur, method="asymp").pvalue, abs=1e-9)
    assert [r.state for r in report] == ["ok", "ok", "drift", "ok", "ok"]
    counts = [[int((ref_classes == c).sum()) for c in "abc"], [int((cur_classes == c).sum()) for c in "abc"]]
    chi = report[4].statistics["chi_square_p_value"]
    assert chi == pytest.approx(scipy.stats.chi2_contingency(counts, correction=False).pvalue)
    assert report[4].p_value == pytest.approx(min(1.0, 2 * min(chi, report[4].statistics["surge_p_value"])))

    single = drift_report({}, {}, prediction=outputs["probability_1"])
    assert [(r.feature, r.kind, r.state) for r in single] == [("prediction", "prediction", "drift")]
    with pytest.raises(ValueError, match="given twice"):
        drift_report({}, {}, prediction=x, outputs={"prediction": x})


def test_not_enough_data(profiles: dict) -> None:
    ref_num, cur_num = profiles["numeric"]["x0"]
    ref_cat, cur_cat = profiles["categorical"]["c0"]
    r = numeric_drift("x0", ref_num, cur_num[:499], alpha=0.01, min_samples=500)
    assert (r.state, r.p_value, r.n_current, r.statistics) == ("not_enough_data", None, 499, {})
    # too few values for KS, but the nulls beside them are a missingness flag (the reference had none)
    with_nans = np.concatenate([cur_num[:499], [np.nan] * 100])
    r = numeric_drift("x0", ref_num, with_nans, alpha=0.01, min_samples=500)
    assert (r.state, r.test, r.n_current) == ("drift", "missing_share", 499)
    assert r.statistics["null_share"] == pytest.approx(100 / 599)
    r = categorical_drift("c0", ref_cat, cur_cat[:100], alpha=0.01, min_samples=500)
    assert (r.state, r.p_value, r.n_current) == ("not_enough_data", None, 100)
    report = drift_report({"x0": (ref_num, cur_num[:10])}, {"c0": (ref_cat, cur_cat)}, min_samples=500)
    assert [r.state for r in report] == ["not_enough_data", "drift"]
    assert report[1].alpha == 0.01 / 2  # not_enough_data features still count as tests
    assert numeric_drift("x0", ref_num, cur_num, 0.01, min_samples=500).state == "drift"


def test_categorical_drift_counts_unseen_and_nulls() -> None:
    ref = CategoricalReference.from_values(["a"] * 600 + ["b"] * 400)
    current = ["a"] * 550 + ["b"] * 350 + [None] * 60 + ["new"] * 40
    r = categorical_drift("cat", ref, current, alpha=0.01, min_samples=100)
    assert r.state == "drift" and r.n_current == 1000
    # homogeneity over both samples' labels, the never-seen one a cell of its own (reference count 0); nulls apart
    stat, p_homogeneity, dof = scipy.stats.chi2_contingency([[600, 400, 0], [550, 350, 40]], correction=False)[:3]
    assert r.statistics["chi_square"] == pytest.approx(stat, abs=1e-9) and r.statistics["dof"] == dof
    assert r.statistics["chi_square_p_value"] == pytest.approx(p_homogeneity)
    assert r.statistics["unseen_share"] == 0.04 and r.statistics["null_share"] == 0.06
    assert r.statistics["surge_p_value"] < 1e-9 and r.statistics["missing_p_value"] < 1e-9
    fisher = scipy.stats.fisher_exact([[60, 940], [0, 1000]]).pvalue
    assert r.statistics["missing_p_value"] == pytest.approx(fisher)
    sub_tests = [p_homogeneity, *(r.statistics[f"{k}_p_value"] for k in ("surge", "missing"))]
    assert r.p_value == pytest.approx(min(1.0, 3 * min(sub_tests)))


# --------------------------------------------------------------------------------------------------- sketch


@pytest.fixture(scope="module")
def latencies() -> FloatArray:
    return np.random.default_rng(12).lognormal(mean=math.log(0.02), sigma=1.0, size=100_000)


def test_log_histogram_quantiles_within_relative_error(latencies: FloatArray) -> None:
    hist = LogHistogram(rel_err=0.01)
    hist.add_many(latencies)
    assert hist.count == latencies.size
    assert hist.sum == pytest.approx(float(latencies.sum()), rel=1e-12)
    qs = [0.5, 0.9, 0.95, 0.99, 0.999, *np.linspace(0.0, 1.0, 101).tolist()]
    estimates = hist.quantiles(qs)
    for q in qs:
        exact = float(np.quantile(latencies, q, method="inverted_cdf"))
        assert abs(estimates[q] - exact) <= 0.01 * exact * (1 + 1e-9), q
        assert hist.quantile(q) == estimates[q]
    coarse = LogHistogram(rel_err=0.05)
    coarse.add_many(latencies)
    for q in (0.5, 0.99):
        exact = float(np.quantile(latencies, q, method="inverted_cdf"))
        assert abs(coarse.quantile(q) - exact) <= 0.05 * exact * (1 + 1e-9)
    # the bound is attained-ish: a coarse sketch is not accidentally exact
    assert any(abs(coarse.quantile(q) - np.quantile(latencies, q, method="inverted_cdf")) > 1e-4 for q in (0.5, 0.9))


def test_log_histogram_small_counts_use_inverted_cdf_rank() -> None:
    values = np.array([0.001, 0.002, 0.004, 0.008, 0.016])
    hist = LogHistogram(rel_err=0.001)
    for v in values:
        hist.add(float(v))
    for q in np.linspace(0, 1, 41):
        exact = float(np.quantile(values, q, method="inverted_cdf"))
        assert abs(hist.quantile(float(q)) - exact) <= 0.001 * exact * (1 + 1e-9)


def test_log_histogram_merge_equals_concatenation(latencies: FloatArray) -> None:
    a, b, whole = LogHistogram(), LogHistogram(), LogHistogram()
    a.add_many(latencies[:37_000])
    b.add_many(latencies[37_000:])
    whole.add_many(latencies)
    merged = a.merge(b)
    np.testing.assert_array_equal(merged.bucket_counts, whole.bucket_counts)
    qs = [0.5, 0.9, 0.95, 0.99, 0.999]
    assert merged.quantiles(qs) == whole.quantiles(qs)
    assert (merged.min, merged.max) == (whole.min, whole.max)
    assert merged.sum == pytest.approx(whole.sum, rel=1e-12)
    assert a.count == 37_000  # merge returns a new histogram
    a += b
    np.testing.assert_array_equal(a.bucket_counts, whole.bucket_counts)
    with pytest.raises(ValueError, match="different"):
        a.merge(LogHistogram(rel_err=0.02))


def test_log_histogram_add_matches_add_many_and_bucket_rules() -> None:
    one, many = LogHistogram(rel_err=0.02, min_value=1e-3, max_value=10.0), LogHistogram(0.02, 1e-3, 10.0)
    bounds = one.boundaries
    values = [0.0, -1.0, 1e-3, 5e-4, *bounds[10:20].tolist(), 0.5, 20.0, 1e6]
    for v in values:
        one.add(v)
    many.add_many(np.array(values))
    np.testing.assert_array_equal(one.bucket_counts, many.bucket_counts)
    counts = one.bucket_counts
    assert counts[0] == 4  # values <= min_value, negatives included
    assert counts[-1] == 2  # overflow above the top boundary
    assert all(counts[i] == 1 for i in range(10, 20))  # a boundary value belongs to the bucket it closes
    assert bounds[0] == 1e-3 and bounds[-1] >= 10.0 and bounds[-2] < 10.0
    assert np.allclose(bounds[1:] / bounds[:-1], 1.02 / 0.98, rtol=1e-12)
    one.add(0.5, count=3)
    assert one.count == len(values) + 3
    assert one.quantile(1.0) == 1e6  # the overflow bucket reports the largest value added
    with pytest.raises(ValueError, match="NaN"):
        one.add(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        many.add_many(np.array([1.0, np.nan]))


def test_log_histogram_cumulative_counts(latencies: FloatArray) -> None:
    hist = LogHistogram()
    bounds = hist.boundaries
    on_boundaries = bounds[600:700:7]
    data = np.concatenate([latencies, on_boundaries])
    hist.add_many(data)
    picked = bounds[::50].tolist() + on_boundaries.tolist()
    assert hist.cumulative_counts(picked) == [int(np.count_nonzero(data <= b)) for b in picked]
    assert hist.cumulative_counts([math.inf]) == [data.size]
    assert hist.cumulative_counts([bounds[0] / 2]) == [0]
    # a bound between boundaries is rounded down to the boundary below it
    for b in (0.005, 0.1, 0.25, 1.0):
        below = float(bounds[bounds <= b][-1])
        (got,) = hist.cumulative_counts([b])
        assert got == int(np.count_nonzero(data <= below)) <= int(np.count_nonzero(data <= b))


def test_log_histogram_empty_and_serialisation(latencies: FloatArray) -> None:
    empty = LogHistogram()
    with pytest.raises(ValueError, match="empty"):
        empty.quantile(0.5)
    assert (empty.count, empty.min, empty.max) == (0, None, None)
    hist = LogHistogram(rel_err=0.005, min_value=1e-5, max_value=100.0)
    hist.add_many(latencies[:5000])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hist.quantile(1.5)
    back = LogHistogram.from_dict(json.loads(json.dumps(hist.as_dict())))
    np.testing.assert_array_equal(back.bucket_counts, hist.bucket_counts)
    assert (back.sum, back.min, back.max, back.rel_err) == (hist.sum, hist.min, hist.max, 0.005)
    assert back.quantiles([0.5, 0.99]) == hist.quantiles([0.5, 0.99])
    assert LogHistogram.from_dict(empty.as_dict()).count == 0
    with pytest.raises(ValueError, match="rel_err"):
        LogHistogram(rel_err=1.5)
    with pytest.raises(ValueError, match="min_value"):
        LogHistogram(min_value=10.0, max_value=1.0)


def test_large_windows_are_ks_tested_on_a_uniform_subsample_and_binned_in_full() -> None:
    rng = np.random.default_rng(42)
    ref = NumericReference.from_values(rng.normal(size=50_000), sample_size=5_000)
    current = rng.normal(0.05, 1.0, 30_000)
    small = numeric_drift("x", ref, current, alpha=0.01, min_samples=10, ks_max_current=10_000)
    full = numeric_drift("x", ref, current, alpha=0.01, min_samples=10, ks_max_current=100_000)
    assert small.statistics["ks_rows"] == 10_000 and full.statistics["ks_rows"] == 30_000
    assert small.statistics["psi"] == full.statistics["psi"]  # PSI and JS always see every value
    edges = np.asarray(ref.edges)
    assert (
        bin_counts(current, edges).tolist()
        == np.bincount(np.searchsorted(edges, current, side="left"), minlength=edges.size + 1).tolist()
    )


# --------------------------------------------------------------------------------------------------- profiles


def test_profile_keeps_every_output_and_older_profiles_are_still_read() -> None:
    """Version 3 keeps one reference per class probability and the answered classes (the binary threshold as the
    head applies it); a version-2 profile (one ``prediction`` score) is tested on that score alone."""
    from inferline.features.pipelines import fraud
    from inferline.features.state import FeatureMatrix, FeatureState
    from inferline.monitor.outputs import output_references
    from inferline.training.profile import reference_profile

    rng = np.random.default_rng(14)
    state = FeatureState("fraud", "h", [], [], {}, [], [], threshold=0.3)
    empty = FeatureMatrix(np.zeros((4_000, 0), np.float32), np.zeros((4_000, 0), np.int64))
    p1 = rng.beta(1.0, 4.0, 4_000)
    profile = reference_profile(empty, state, np.column_stack([1 - p1, p1]), task="binary")
    assert profile["version"] == 3 and len(profile["probabilities"]) == 2
    assert profile["predicted_class"]["counts"] == {
        "0": int((p1.astype(np.float32) < np.float32(0.3)).sum()),
        "1": int((p1.astype(np.float32) >= np.float32(0.3)).sum()),
    }
    refs = output_references(profile, fraud.SPEC)
    assert list(refs.numeric) == ["probability_legit", "probability_fraud"]
    assert refs.predicted_class is not None and set(refs.predicted_class.counts) == {"legit", "fraud"}

    older = {"version": 2, "prediction": profile["prediction"]}
    legacy = output_references(older, fraud.SPEC)
    assert list(legacy.numeric) == ["prediction"] and legacy.numeric["prediction"][0] == 1
    assert legacy.predicted_class is None

    many = reference_profile(empty, state, rng.dirichlet(np.ones(200), 4_000), task="multiclass")
    assert {len(r["sample"]) for r in many["probabilities"]} == {1_000}  # 100,000 sampled values over 200 classes
    with pytest.raises(ValueError, match="3 probabilities per row"):
        reference_profile(empty, state, rng.dirichlet(np.ones(3), 10), task="binary")


# --------------------------------------------------------------------------------------------------- false flags


def _family(name: str, rng: np.random.Generator) -> tuple[Any, Any]:
    """(reference profile, a function drawing one undrifted window of 5,000 values) for one family of inputs."""
    if name in ("normal", "lognormal", "integer_ties"):
        draw = {
            "normal": lambda n: rng.normal(3.0, 2.0, n),
            "lognormal": lambda n: rng.lognormal(0.0, 1.5, n),
            "integer_ties": lambda n: rng.poisson(3.0, n).astype(np.float64),
        }[name]
        return NumericReference.from_values(draw(200_000)), draw
    if name == "zipf_5000":
        weights = 1.0 / np.arange(1, 5001) ** 1.1
        values = np.array([f"v{i}" for i in range(5000)], dtype=object)
        probabilities = weights / weights.sum()
        return CategoricalReference.from_values(rng.choice(values, 200_000, p=probabilities)), (
            lambda n: rng.choice(values, n, p=probabilities)
        )
    twelve = np.array([f"c{i}" for i in range(12)], dtype=object)
    p12 = rng.dirichlet(np.ones(12) * 2.0)
    reference = CategoricalReference.from_values(rng.choice(twelve, 200_000, p=p12))
    if name == "12_categories":
        return reference, lambda n: rng.choice(twelve, n, p=p12)
    if name == "one_unseen":
        return reference, lambda n: np.concatenate([rng.choice(twelve, n - 1, p=p12), ["never-seen"]])
    # ints_vs_floats: integer categories at training time, the same values as floats in serving
    return CategoricalReference.from_values(rng.integers(0, 10, 200_000)), (
        lambda n: rng.integers(0, 10, n).astype(np.float64)
    )


@pytest.mark.parametrize(
    "family", ["normal", "lognormal", "integer_ties", "12_categories", "zipf_5000", "one_unseen", "ints_vs_floats"]
)
def test_undrifted_windows_are_flagged_at_most_at_the_nominal_rate(family: str) -> None:
    """300 undrifted windows of 5,000 values against a 200,000-value reference, each one test at alpha = 0.01:
    the flags stay within what a level-0.01 test may give by chance (the 99.9 % point of Binomial(300, 0.01), 9).
    Before: one unseen value flagged 100 % of windows, the Zipf tail 7 %, ints against floats every window."""
    rng = np.random.default_rng(sum(map(ord, family)))
    reference, draw = _family(family, rng)
    test = numeric_drift if isinstance(reference, NumericReference) else categorical_drift
    flags = sum(test("x", reference, draw(5000), alpha=0.01, min_samples=500).state == "drift" for _ in range(300))
    bound = int(scipy.stats.binom.ppf(0.999, 300, 0.01))
    assert flags <= bound, f"{family}: {flags} of 300 undrifted windows flagged (nominal 3, bound {bound})"


def test_missingness_is_tested_and_an_all_null_window_is_a_flag() -> None:
    """A null share going from 1 % to 40 % with the values unchanged is drift, numeric and categorical; an
    all-null window is a flag (it said `not_enough_data`); 1 % against 1 % is not."""
    rng = np.random.default_rng(5)

    def with_nulls(values: Any, share: float) -> Any:
        out = np.asarray(values, dtype=object if values.dtype == object else np.float64).copy()
        out[rng.random(out.size) < share] = None if out.dtype == object else np.nan
        return out

    numeric_ref = NumericReference.from_values(with_nulls(rng.normal(size=100_000), 0.01))
    assert numeric_ref.nulls is not None and 800 < numeric_ref.nulls < 1200
    cats = np.array(list("abcdef"), dtype=object)
    categorical_ref = CategoricalReference.from_values(with_nulls(rng.choice(cats, 100_000), 0.01))
    for test, ref, draw in (
        (numeric_drift, numeric_ref, lambda: rng.normal(size=5000)),
        (categorical_drift, categorical_ref, lambda: rng.choice(cats, 5000)),
    ):
        same = test("x", ref, with_nulls(draw(), 0.01), alpha=0.01, min_samples=500)
        more = test("x", ref, with_nulls(draw(), 0.40), alpha=0.01, min_samples=500)
        empty = test("x", ref, with_nulls(draw(), 1.0), alpha=0.01, min_samples=500)
        assert same.state == "ok" and more.state == "drift" and empty.state == "drift", (same, more, empty)
        assert more.statistics["null_share"] == pytest.approx(0.40, abs=0.03)
        assert more.statistics["null_share_reference"] == pytest.approx(0.01, abs=0.003)


def test_raw_column_missingness_holds_its_rate_and_flags_a_change() -> None:
    """``missing_drift`` (a raw column's nulls over every row received): 300 undrifted windows at a 2 % null share
    flag at most the binomial bound of alpha = 0.01; 40 % and all-null windows are flagged; a small window is
    ``not_enough_data``."""
    rng = np.random.default_rng(11)
    ref = MissingReference(rows=200_000, nulls=4_000)
    flags = sum(missing_drift("c", ref, int(rng.binomial(5000, 0.02)), 5000, 0.01).state == "drift" for _ in range(300))
    assert flags <= 10, flags  # P(Binomial(300, 0.01) > 10) < 0.001
    assert missing_drift("c", ref, 2000, 5000, 0.01).state == "drift"
    everything = missing_drift("c", ref, 5000, 5000, 0.01)
    assert everything.state == "drift" and everything.feature == "nulls_c" and everything.kind == "missing"
    assert missing_drift("c", ref, 10, 100, 0.01, min_samples=500).state == "not_enough_data"


def test_a_release_window_is_concatenated_once_per_change_and_shared_read_only() -> None:
    """Drift and the performance estimate read the same concatenation of the window (built once until rows arrive),
    and neither can write into it; the window keeps exactly its most recent ``limit`` rows."""
    from inferline.monitor.windows import Chunk, ReleaseWindow

    def chunk(start: int, n: int) -> Chunk:
        ids = np.arange(start, start + n, dtype=np.float32)
        return Chunk(ids[:, None], np.full((n, 1), "a", object), ids[:, None], np.zeros(n, np.int64))

    window = ReleaseWindow()
    window.add(chunk(0, 6), limit=10, now=1.0)
    first = window.concatenated()
    assert window.concatenated() is first and not first.values.flags.writeable
    with pytest.raises(ValueError):
        first.values[0, 0] = -1.0
    window.add(chunk(6, 7), limit=10, now=2.0)
    second = window.concatenated()
    assert second is not first and second.values[:, 0].tolist() == list(range(3, 13))


# ------------------------------------------------------------------------------- any reference size, rare changes


def _zipf_labels(categories: int) -> tuple[npt.NDArray[Any], FloatArray]:
    weights = 1.0 / np.arange(1, categories + 1) ** 1.1
    return np.array([f"v{i}" for i in range(categories)], dtype=object), weights / weights.sum()


@pytest.mark.parametrize(("categories", "reference_rows"), [(5_000, 20_000), (5_000, 2_000), (500, 2_000)])
def test_categorical_false_flags_stay_nominal_for_any_reference_size(categories: int, reference_rows: int) -> None:
    """A Zipf column whose reference is small for its categories: 300 undrifted windows of 2,000 values, each
    against a reference drawn afresh, flag at most the 99.9 % point of Binomial(300, 0.01). Before (one-sample
    tests against the reference's proportions): 5,000 categories flagged every window at 2,000 and 20,000
    reference rows, 500 categories at 2,000 rows about 40 %."""
    rng = np.random.default_rng(categories + reference_rows)
    labels, p = _zipf_labels(categories)
    flags = 0
    for _ in range(300):
        counts = np.bincount(rng.choice(categories, reference_rows, p=p), minlength=categories)
        reference = CategoricalReference({labels[i]: int(c) for i, c in enumerate(counts) if c}, reference_rows)
        window = labels[rng.choice(categories, 2_000, p=p)]
        flags += categorical_drift("x", reference, window, alpha=0.01, min_samples=500).state == "drift"
    bound = int(scipy.stats.binom.ppf(0.999, 300, 0.01))
    assert flags <= bound, f"{flags} of 300 undrifted windows flagged (nominal 3, bound {bound})"


def test_unknown_bucket_is_profiled_out_of_sample() -> None:
    """A vocabulary fitted on the training rows (at least 5 occurrences, as ``fit_state``) makes ``<unknown>``
    rarer over those rows than anywhere else. The profile counts the other rows (training passes every split's
    features and the outputs of the out-of-sample rows only), so 150 undrifted windows stay within the binomial
    bound of alpha = 0.01; before, over every row, about 30 % were flagged."""
    from inferline.features.state import FeatureMatrix, FeatureState
    from inferline.training.profile import reference_profile

    rng = np.random.default_rng(30)
    categories, rows, train = 5_000, 20_000, 14_000
    _, p = _zipf_labels(categories)
    flags, shares = 0, []
    for _ in range(150):
        drawn = rng.choice(categories, rows, p=p)
        counts = np.bincount(drawn[:train], minlength=categories)
        eligible = np.flatnonzero(counts >= 5)
        vocabulary = eligible[np.lexsort((eligible, -counts[eligible]))][:1_000]
        code = np.zeros(categories, dtype=np.int64)
        code[vocabulary] = np.arange(1, vocabulary.size + 1)
        state = FeatureState("z", "h", [], ["c"], {"c": [f"v{i}" for i in vocabulary]}, [], [], threshold=0.5)
        matrix = FeatureMatrix(np.zeros((rows, 0), np.float32), code[drawn][:, None])
        profile = reference_profile(matrix, state, np.full(rows - train, 0.5), task="binary")  # outputs: held out
        reference = CategoricalReference.from_dict(profile["categorical"]["c"])
        window = state.category_labels("c", code[rng.choice(categories, 5_000, p=p)])
        flags += categorical_drift("c", reference, window, alpha=0.01, min_samples=500).state == "drift"
        shares.append(reference.counts.get("<unknown>", 0) / reference.rows - float(np.mean(window == "<unknown>")))
    assert flags <= int(scipy.stats.binom.ppf(0.999, 150, 0.01)), flags
    assert abs(float(np.mean(shares))) < 0.005, np.mean(shares)  # unbiased (before: about -0.02)
    assert reference.rows == rows - train
    with pytest.raises(ValueError, match="fitted_rows"):
        reference_profile(matrix, state, np.full(rows, 0.5), task="binary", fitted_rows=rows + 1)


def _zero_or_constant(kind: str, n: int, rng: np.random.Generator) -> FloatArray:
    values = np.zeros(n)
    if kind == "zero_inflated":  # 99.9 % zeros, the rest lognormal
        nonzero = rng.random(n) < 0.001
        values[nonzero] = rng.lognormal(0.0, 1.0, int(nonzero.sum()))
    return values


@pytest.mark.parametrize("kind", ["constant", "zero_inflated"])
def test_a_new_value_in_one_percent_of_the_rows_is_flagged(kind: str) -> None:
    """A value the reference never held, in 1 % of a 5,000-row window of a constant or 99.9 %-zero feature (inside
    the reference's range when zero-inflated): flagged in each of 50 windows, by the values' surge and homogeneity
    tests (KS alone: D = 0.01, never flagged before). 100 undrifted windows flag at most the binomial bound."""
    rng = np.random.default_rng(len(kind))
    drifted = undrifted = 0
    for _ in range(100):
        reference = NumericReference.from_values(_zero_or_constant(kind, 20_000, rng), sample_size=5_000)
        window = _zero_or_constant(kind, 5_000, rng)
        undrifted += numeric_drift("x", reference, window, alpha=0.01, min_samples=500).state == "drift"
        window[rng.choice(5_000, 50, replace=False)] = 1.0
        r = numeric_drift("x", reference, window, alpha=0.01, min_samples=500)
        drifted += r.state == "drift"
    assert drifted == 100 and r.statistics["surge_p_value"] < 1e-6 and r.statistics["ks_p_value"] > 0.5
    assert undrifted <= int(scipy.stats.binom.ppf(0.999, 100, 0.01)), undrifted
    # the same as a category: a constant categorical column gets a new label in 1 % of its rows
    constant = CategoricalReference({"a": 20_000}, 20_000)
    window_labels = np.array(["a"] * 4_950 + ["new"] * 50, dtype=object)
    assert categorical_drift("c", constant, window_labels, alpha=0.01, min_samples=500).state == "drift"


def test_missingness_from_none_is_flagged_and_keeps_its_rate() -> None:
    """A raw column with no nulls in 20,000 training rows, then 0.9 % missing in windows of 5,000 rows: every one
    of 300 windows flagged (before: 61 of 300, the change being within the old 1 % tolerance). Undrifted windows at
    0 % and 2 % stay within the binomial bound; the feature-level null share uses the same test."""
    rng = np.random.default_rng(9)
    bound = int(scipy.stats.binom.ppf(0.999, 300, 0.01))
    none = MissingReference(rows=20_000, nulls=0)
    assert all(
        missing_drift("c", none, int(rng.binomial(5_000, 0.009)), 5_000, 0.01).state == "drift" for _ in range(300)
    )
    for share in (0.0, 0.02):
        flags = 0
        for _ in range(300):
            ref = MissingReference(20_000, int(rng.binomial(20_000, share)))
            flags += missing_drift("c", ref, int(rng.binomial(5_000, share)), 5_000, 0.01).state == "drift"
        assert flags <= bound, (share, flags)
    reference = NumericReference.from_values(rng.normal(size=20_000))
    window = rng.normal(size=5_000)
    window[rng.choice(5_000, 45, replace=False)] = np.nan
    r = numeric_drift("x", reference, window, alpha=0.01, min_samples=500)
    assert r.state == "drift" and r.statistics["missing_p_value"] < 1e-20, r.statistics


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), min_size=1, max_size=60),
    st.floats(1e-6, 0.5),
)
def test_cells_and_surge_keep_their_contracts(pairs: list[tuple[int, int]], level: float) -> None:
    """For any two count vectors: the pooled cells keep both totals, and with 2 or more cells every cell expects at
    least MIN_EXPECTED values in each row; the surge test's p-value is never below the exact conditional
    (hypergeometric, ``scipy.stats.hypergeom``) tail times its multiplicity K, and it is ``testable`` exactly when
    some value can reach the level."""
    ref = np.array([a for a, _ in pairs], dtype=np.int64)
    cur = np.array([b for _, b in pairs], dtype=np.int64)
    ref_cells, cur_cells = two_sample_cells(ref, cur)
    if ref.sum() and cur.sum():
        assert (int(ref_cells.sum()), int(cur_cells.sum())) == (int(ref.sum()), int(cur.sum()))
        if ref_cells.size >= 2:
            total = ref.sum() + cur.sum()
            expected = np.outer([ref.sum(), cur.sum()], ref_cells + cur_cells) / total
            assert expected.min() >= MIN_EXPECTED * (1 - 1e-12)
    p, k, testable = surge_test(ref, cur, level)
    assert 0.0 <= p <= 1.0
    if ref.sum() and cur.sum():
        n_ref, n_cur = int(ref.sum()), int(cur.sum())
        combined = ref + cur
        exact = scipy.stats.hypergeom.sf(cur - 1, n_ref + n_cur, combined, n_cur)[combined > 0]
        assert p >= min(1.0, k * float(exact.min())) * (1 - 1e-9)
        present = combined[combined > 0]
        min_p = scipy.stats.hypergeom.pmf(np.minimum(present, n_cur), n_ref + n_cur, present, n_cur)
        if not np.any(np.isclose(min_p, level, rtol=1e-6)):  # away from float ties at the boundary
            assert testable == bool((min_p <= level).any())
