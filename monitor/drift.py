"""Drift statistics of a serving window against a reference profile made at training time.

Design
------
A reference profile is small, JSON-serialisable and mergeable, so it can be built per training shard and combined:

* :class:`NumericReference` keeps quantile bin edges, the reference counts in those bins (for PSI and
  Jensen-Shannon) and a uniform random sample of at most ``sample_size`` values (for the two-sample
  Kolmogorov-Smirnov test, which needs raw values, not bins).
* :class:`CategoricalReference` keeps the count of every category label.

The current window is never stored or sorted: :func:`bin_counts` and :func:`ks_2samp` run in ``O(n log m)``
(``n`` current values, ``m`` reference points) with ``np.searchsorted`` and ``np.bincount``, so a window of
millions of values costs a few vectorised passes.

Every test compares *two samples*, the window and the reference (or its sample), so the reference's own sampling
noise is part of each null distribution, whatever the reference's size and the number of categories. Within a
feature the tests that apply are Bonferroni-combined (``p = min(1, k * min(p_i))``); the others are reported as
magnitudes:

* numeric features and numeric model outputs (each class's probability, a regression's value): two-sample KS
  against the reference sample; the *values themselves* as categories of the same two-sample tests as a
  categorical feature (homogeneity over the values frequent in the pooled sample, and the surge test), which KS
  cannot replace: a new value in 1 % of the rows of a constant or 99.9 %-zero feature moves KS's ``D`` by 0.01
  (p ~ 0.96) and was never flagged. For a continuous feature every value is unique, neither test can flag, and
  neither is counted;
* categorical features and the predicted-class distribution (:func:`categorical_drift`): Pearson chi-square on
  the two-sample table of every label either sample holds, the labels rarer than :data:`MIN_EXPECTED` expected
  in either row pooled into one cell by their *pooled* counts (:func:`two_sample_cells`), and the surge of any one
  label, a never-seen one above all (:func:`surge_test`). Values are labelled canonically first (``1`` and ``1.0``
  are one category). Why: the earlier one-sample tests of the window against the reference's proportions (rare
  categories' shares and Good-Turing's unseen mass taken as exact) flagged every undrifted window of a
  5,000-category Zipf column against a 20,000-row reference, and 40 % with 500 categories against 2,000 rows;
* missingness of every column: the null share against the reference's by Fisher's exact test
  (:func:`null_share_test`); for a numeric column combined with the tests above, and deciding alone when the
  window holds too few values for KS (an all-null window is a flag);
* missingness of every raw input column (:func:`missing_drift`, tests named ``nulls_<column>``, kind
  ``"missing"``): the null share of *every* row received, accepted or refused, against the training rows' share.
  A feature is computed from its imputed column, so its own values carry no nulls; and a required column's nulls
  are refused rows, which the feature window never sees. The same Fisher test: a column that had no nulls and now
  has 0.9 % is flagged (before: an exact binomial test against a pseudocount prior, never significant within a
  1 % tolerance, flagged 61 of 300 such windows).

A reference must be a sample of what serving would see without drift: ``training.profile`` counts categorical
references over rows the vocabulary was not fitted on, for that reason. ``benchmarks/drift_bench.py``
(``benchmarks/results/drift/``) measures false flags and detection before and after.

:func:`drift_report` applies a Bonferroni correction over every configured test, so over undrifted data the chance
of any false "drift" in a report is at most ``alpha``.

The statistics and their conventions (binning, PSI's floor, the KS p-value, chi-square) are ``monitor.two_sample``'s.

Libraries: ``numpy``; ``monitor.two_sample`` (scipy) for the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from inferline.core.reference import (
    NULL,
    CategoricalReference,
    MissingReference,
    NumericReference,
    bin_counts,
    labels_counter,
)
from inferline.monitor.two_sample import (
    UNSEEN,
    chi_square,
    js_divergence,
    ks_2samp,
    null_share_test,
    psi,
    surge_test,
    two_sample_cells,
)

__all__ = [
    "KS_MAX_CURRENT",
    "MISSING_PREFIX",
    "FeatureDrift",
    "categorical_drift",
    "drift_report",
    "missing_drift",
    "numeric_drift",
]

KS_MAX_CURRENT = 100_000  # current values a KS test uses at most (a uniform subsample beyond)
KS_SUBSAMPLE_SEED = 0

_KINDS = ("numeric", "prediction")
_CATEGORICAL_KINDS = ("categorical", "prediction")

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


MISSING_PREFIX = "nulls_"  # the name of a column's missingness test: nulls_<column>


def missing_drift(
    column: str, ref: MissingReference, nulls: int, rows: int, alpha: float, min_samples: int = 500
) -> FeatureDrift:
    """Missingness drift of one raw column: ``nulls`` of the ``rows`` received against the reference's share
    (:func:`null_share_test`: Fisher's exact, two-sided); ``not_enough_data`` under ``min_samples`` rows. A column
    that had no nulls at training time is flagged once its window holds a few (0.9 % of 5,000 rows against a
    20,000-row reference: always); an all-null window of a column that had few nulls is drift."""
    name = MISSING_PREFIX + column
    if rows < max(min_samples, 1):
        return FeatureDrift(name, "missing", "not_enough_data", ref.rows, rows, "null_share", None, alpha)
    p = null_share_test(nulls, rows, ref.nulls, ref.rows)
    statistics = {"null_share": nulls / rows, "null_share_reference": ref.nulls / max(ref.rows, 1)}
    state = "drift" if p < alpha else "ok"
    return FeatureDrift(name, "missing", state, ref.rows, rows, "null_share", p, alpha, statistics)


@dataclass
class FeatureDrift:
    """Drift verdict of one feature. ``alpha`` is the per-test level actually used (after Bonferroni)."""

    feature: str
    kind: str
    state: str
    n_reference: int
    n_current: int
    test: str
    p_value: float | None
    alpha: float
    statistics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=8)
def _subsample(n: int, k: int) -> IntArray:
    """``k`` of ``range(n)`` uniformly without replacement, seeded: the same rows for every feature of a window."""
    return np.sort(np.random.default_rng(KS_SUBSAMPLE_SEED).choice(n, k, replace=False))


def numeric_drift(
    name: str,
    ref: NumericReference,
    current: ArrayLike,
    alpha: float,
    min_samples: int,
    kind: str = "numeric",
    ks_max_current: int = KS_MAX_CURRENT,
) -> FeatureDrift:
    """Up to four tests, Bonferroni-combined (``p_value`` is ``min(1, k * min(p_i))`` over the ``k`` that apply),
    decide ``"drift"`` when ``p_value < alpha``: KS of ``current`` (NaN dropped) against ``ref.sample``; the values
    as categories of ``ref.sample`` and the KS-tested window, as in :func:`categorical_drift` (homogeneity over the
    values frequent in the pooled sample, applying with >= 2 cells, and :func:`surge_test`, applying when some
    value can reach its level: neither applies to a continuous feature, whose values are all distinct); and the
    null share (:func:`null_share_test`), when either side has nulls and the profile counted them.

    A window larger than ``ks_max_current`` values is tested through a uniform random subsample of that size
    (seeded, without replacement; reported as ``ks_rows``): the reference side is itself a sample of at most
    10,000 values, so the test's power is set by it, and sorting millions of values per feature would cost more
    than it tells. PSI and JS always use every value.

    PSI and JS over ``bin_counts(current, ref.edges)`` vs ``ref.counts`` are reported as magnitudes. With fewer
    than ``max(min_samples, 1)`` non-NaN current values (or an empty reference) the state is
    ``"not_enough_data"``, ``p_value`` is None and ``statistics`` is empty.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    everything = np.asarray(current, dtype=np.float64).ravel()
    missing = np.isnan(everything)
    cur = everything[~missing]
    nulls = int(missing.sum())
    result = FeatureDrift(
        feature=name,
        kind=kind,
        state="not_enough_data",
        n_reference=ref.rows,
        n_current=int(cur.size),
        test="ks",
        p_value=None,
        alpha=alpha,
    )
    # missingness: the null share against the reference's (profiles that counted their nulls), when either has any
    p_missing: float | None = None
    missing_stats: dict[str, float] = {}
    if ref.nulls is not None and everything.size >= max(min_samples, 1) and (nulls or ref.nulls):
        p_missing = null_share_test(nulls, everything.size, ref.nulls, ref.rows + ref.nulls)
        missing_stats = {
            "null_share": nulls / everything.size,
            "null_share_reference": ref.nulls / max(ref.rows + ref.nulls, 1),
            "missing_p_value": p_missing,
        }
    if cur.size < max(min_samples, 1) or ref.rows == 0 or not ref.sample:
        if p_missing is not None:  # too few values for KS (an all-null window): missingness alone decides
            result.test, result.p_value = "missing_share", p_missing
            result.state = "drift" if p_missing < alpha else "ok"
            result.statistics = missing_stats
        return result
    tested = cur[_subsample(cur.size, ks_max_current)] if cur.size > ks_max_current else cur
    sample = np.asarray(ref.sample, dtype=np.float64)
    d, p_ks = ks_2samp(sample, tested)
    # the values themselves as categories: KS cannot see a new value in 1 % of a constant feature (D = 0.01)
    ref_values, cur_values = _value_counts(sample, tested)
    p_values = {"ks": p_ks, **({"missing": p_missing} if p_missing is not None else {})}
    value_statistic, p_cells, _, p_surge, p_value = _count_tests(ref_values, cur_values, alpha, p_values, "values")
    cur_bins = bin_counts(cur, ref.edges)
    result.p_value = p_value
    result.state = "drift" if p_value < alpha else "ok"
    result.statistics = {
        "ks": d,
        "ks_p_value": p_ks,
        "ks_rows": float(tested.size),
        "value_chi_square": value_statistic,
        "value_chi_square_p_value": p_cells,
        "surge_p_value": p_surge,
        "psi": psi(ref.counts, cur_bins),
        "js": js_divergence(ref.counts, cur_bins),
        **missing_stats,
    }
    return result


def _value_counts(reference: FloatArray, current: FloatArray) -> tuple[IntArray, IntArray]:
    """Counts of every distinct value (``np.unique`` over both) in ``reference`` and in ``current``, aligned."""
    values, inverse = np.unique(np.concatenate([reference, current]), return_inverse=True)
    inverse = inverse.ravel()
    ref_counts = np.bincount(inverse[: reference.size], minlength=values.size).astype(np.int64)
    return ref_counts, np.bincount(inverse[reference.size :], minlength=values.size).astype(np.int64)


def _homogeneity(ref_counts: ArrayLike, cur_counts: ArrayLike) -> tuple[float, float, int]:
    """Pearson chi-square homogeneity over :func:`two_sample_cells`: ``(statistic, p_value, cells)``; with fewer
    than 2 cells there is nothing to test: ``(0.0, 1.0, cells)``."""
    ref_cells, cur_cells = two_sample_cells(ref_counts, cur_counts)
    if ref_cells.size < 2:
        return 0.0, 1.0, int(ref_cells.size)
    statistic, p_value, _ = chi_square(ref_cells, cur_cells)
    return statistic, p_value, int(ref_cells.size)


def _count_tests(
    ref_counts: ArrayLike, cur_counts: ArrayLike, alpha: float, p_values: dict[str, float], key: str
) -> tuple[float, float, int, float, float]:
    """The tests of counts shared by numeric values and categories, beside the caller's own ``p_values`` (KS,
    missingness): the homogeneity test (:func:`_homogeneity`, counted as ``key`` with >= 2 cells) and the surge
    test at ``alpha / (tests + 1)`` (counted when some value can reach it), then Bonferroni over every counted test.
    Returns ``(statistic, homogeneity p, cells, surge p, combined p)``; ``p_values`` gains the counted tests."""
    statistic, p_cells, cells = _homogeneity(ref_counts, cur_counts)  # an empty side: (0.0, 1.0, 0)
    if cells >= 2:
        p_values[key] = p_cells
    p_surge, _, testable = surge_test(ref_counts, cur_counts, alpha / (len(p_values) + 1))
    if testable:
        p_values["surge"] = p_surge
    p_value = float(min(1.0, len(p_values) * min(p_values.values()))) if p_values else 1.0
    return statistic, p_cells, cells, p_surge, p_value


def categorical_drift(
    name: str,
    ref: CategoricalReference,
    current: Sequence[Any] | npt.NDArray[Any],
    alpha: float,
    min_samples: int,
    kind: str = "categorical",
) -> FeatureDrift:
    """Up to three tests over the counts of both samples, Bonferroni-combined (``p_value`` is
    ``min(1, k * min(p_i))`` over the ``k`` that apply), decide ``"drift"`` when ``p_value < alpha``:

    - homogeneity: Pearson chi-square on the two-sample table of the non-null labels (every label of the reference
      or the window, a never-seen one with reference count 0), the labels too rare for :data:`MIN_EXPECTED` in
      both rows pooled into one cell by their pooled counts (:func:`two_sample_cells`); applies with >= 2 cells;
    - surge: one label (a never-seen one above all) more frequent in the window than the reference allows
      (:func:`surge_test`, Tarone's correction over the labels); applies when some label can reach its level;
    - missingness: the null share against the reference's (:func:`null_share_test`, Fisher's exact); applies
      when either side has nulls.

    Every test compares two samples, so the reference's own sampling noise is accounted for: a 20,000-row
    reference of a 5,000-category Zipf column keeps the nominal rate (before: a one-sample test of the window
    against the reference's proportions, with rare categories' reference shares treated as exact, flagged every
    undrifted window). Values are labelled canonically (:func:`_label`: ``1`` and ``1.0`` are one category). PSI
    and JS over every label (nulls and never-seen values as two more cells) are reported as magnitudes. With fewer
    than ``max(min_samples, 1)`` window values (or an empty reference) the state is ``"not_enough_data"``.
    ``kind`` is ``"categorical"`` for a feature, ``"prediction"`` for a model output (the predicted class).
    """
    if kind not in _CATEGORICAL_KINDS:
        raise ValueError(f"kind must be one of {_CATEGORICAL_KINDS}, got {kind!r}")
    labels_cur = labels_counter(current)
    null_cur = labels_cur.pop(NULL, 0)
    known = sorted(k for k in ref.counts if k not in (NULL, UNSEEN))
    index = {label: i for i, label in enumerate(known)}
    ref_seen = np.array([ref.counts[k] for k in known], dtype=np.int64)
    cur_seen = np.zeros(len(known), dtype=np.int64)
    new_counts: list[int] = []  # one count per never-seen label
    for label, count in labels_cur.items():
        at = index.get(label)
        if at is None:
            new_counts.append(count)
        else:
            cur_seen[at] += count
    unseen = sum(new_counts)
    null_ref = ref.counts.get(NULL, 0)
    n_current = int(cur_seen.sum()) + unseen + null_cur
    result = FeatureDrift(
        feature=name,
        kind=kind,
        state="not_enough_data",
        n_reference=ref.rows,
        n_current=n_current,
        test="chi_square",
        p_value=None,
        alpha=alpha,
    )
    if n_current < max(min_samples, 1) or ref.rows == 0:
        return result
    ref_all = np.concatenate([ref_seen, np.zeros(len(new_counts), dtype=np.int64)])
    cur_all = np.concatenate([cur_seen, np.asarray(new_counts, dtype=np.int64)])
    p_missing = null_share_test(null_cur, n_current, null_ref, ref.rows)
    p_values = {"missing": p_missing} if null_cur or null_ref else {}
    statistic, p_homogeneity, cells, p_surge, p_value = _count_tests(ref_all, cur_all, alpha, p_values, "homogeneity")
    all_ref = np.concatenate([ref_seen, [null_ref, ref.counts.get(UNSEEN, 0)]])
    all_cur = np.concatenate([cur_seen, [null_cur, unseen]])
    result.p_value = p_value
    result.state = "drift" if p_value < alpha else "ok"
    result.statistics = {
        "chi_square": statistic,
        "chi_square_p_value": p_homogeneity,
        "dof": float(max(cells - 1, 0)),
        "cells": float(cells),
        "surge_p_value": p_surge,
        "unseen_share": unseen / n_current,
        "null_share": null_cur / n_current,
        "null_share_reference": null_ref / ref.rows,
        "missing_p_value": p_missing,
        "psi": psi(all_ref, all_cur),
        "js": js_divergence(all_ref, all_cur),
    }
    return result


def drift_report(
    numeric: Mapping[str, tuple[NumericReference, ArrayLike]],
    categorical: Mapping[str, tuple[CategoricalReference, Sequence[Any] | npt.NDArray[Any]]],
    prediction: tuple[NumericReference, ArrayLike] | None = None,
    alpha: float = 0.01,
    min_samples: int = 500,
    outputs: Mapping[str, tuple[NumericReference | CategoricalReference, Any]] | None = None,
    missing: Mapping[str, tuple[MissingReference, int, int]] | None = None,
) -> list[FeatureDrift]:
    """Drift of every feature, and of the model's outputs, each as one test of kind ``"prediction"``.

    ``outputs`` maps a test name to a reference and the current values: a :class:`NumericReference` is tested with
    KS (each class's probability, a regression's value), a :class:`CategoricalReference` with chi-square (the
    predicted class). ``prediction`` is the older single-output form, the same as
    ``outputs={"prediction": prediction}``. ``missing`` maps a raw column to its reference and the window's
    ``(nulls, rows)`` (:func:`missing_drift`).

    Bonferroni correction: every test runs at ``alpha / number_of_tests``, where the number of tests counts every
    configured feature and output, including those that end up ``"not_enough_data"`` -- a fixed denominator, so the
    per-test level does not depend on the traffic of a window. By the union bound the chance of any false
    ``"drift"`` over undrifted data is then at most ``alpha``. Order: numeric, categorical, ``prediction``, then
    ``outputs`` in their order, then ``missing``.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    tested_outputs: dict[str, tuple[NumericReference | CategoricalReference, Any]] = {}
    if prediction is not None:
        tested_outputs["prediction"] = prediction
    for name, pair in (outputs or {}).items():
        if name in tested_outputs:
            raise ValueError(f"output test {name!r} is given twice (as prediction= and in outputs=)")
        tested_outputs[name] = pair
    missing = missing or {}
    n_tests = len(numeric) + len(categorical) + len(tested_outputs) + len(missing)
    if n_tests == 0:
        return []
    per_test = alpha / n_tests
    report = [numeric_drift(name, ref, cur, per_test, min_samples) for name, (ref, cur) in numeric.items()]
    report += [categorical_drift(name, ref, cur, per_test, min_samples) for name, (ref, cur) in categorical.items()]
    for name, (ref, cur) in tested_outputs.items():
        if isinstance(ref, CategoricalReference):
            report.append(categorical_drift(name, ref, cur, per_test, min_samples, kind="prediction"))
        else:
            report.append(numeric_drift(name, ref, cur, per_test, min_samples, kind="prediction"))
    report += [missing_drift(c, ref, nulls, rows, per_test, min_samples) for c, (ref, nulls, rows) in missing.items()]
    return report
