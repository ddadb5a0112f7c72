"""The two-sample statistics and tests of the drift checks (``monitor.drift`` applies them to a window): category
counts against a reference, PSI and Jensen-Shannon as magnitudes, the two-sample Kolmogorov-Smirnov test, Pearson's
chi-square of homogeneity over the cells :func:`two_sample_cells` pools, Fisher's exact test of a null share, and
the surge test of one value. Each compares two samples, so a reference's own sampling noise is in its null
distribution; none of them decides "drift" (that, and the Bonferroni over a report's tests, is ``monitor.drift``).

Documented conventions
----------------------
* Binning (:func:`bin_counts`): bin ``i`` holds ``edges[i-1] < v <= edges[i]`` (right-closed, a value equal to an
  edge goes to the bin on its left), with ``len(edges) + 1`` bins whose outer ones are unbounded. NaN is dropped.
* PSI (:func:`psi`): proportions are floored at ``eps`` (default ``1e-4``) with ``np.maximum`` and *not*
  renormalised, so an empty bin contributes a large but finite term instead of infinity.
* JS (:func:`js_divergence`): base 2, so ``0 <= JS <= 1``; zero-probability terms contribute 0.
* KS p-value (:func:`ks_2samp`): ``scipy.stats.distributions.kstwo.sf(D, round(m*n/(m+n)))``, which is exactly
  what ``scipy.stats.ks_2samp(..., method='asymp')`` computes for the two-sided test. Its large-``en`` limit is
  the Kolmogorov distribution ``scipy.special.kolmogorov(sqrt(en) * D)``.
* Chi-square (:func:`chi_square`): equal to ``scipy.stats.chi2_contingency(table, correction=False)`` after
  dropping the columns whose total is 0.

Libraries: ``numpy``; scipy's distribution functions for p-values (``kstwo``, ``chdtrc``, ``gammaln``) and
``scipy.stats.fisher_exact``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import chdtrc, gammaln
from scipy.stats import distributions, fisher_exact

from inferline.core.reference import CategoricalReference, finite_or_inf, labels_counter

__all__ = [
    "MIN_EXPECTED",
    "UNSEEN",
    "category_counts",
    "chi_square",
    "js_divergence",
    "ks_2samp",
    "null_share_test",
    "psi",
    "surge_test",
    "two_sample_cells",
]

UNSEEN = "<unseen>"
"""Categorical bucket for current values whose label is absent from the reference (in :func:`category_counts`)."""
MIN_EXPECTED = 5.0
"""The least expected count of every cell of a two-sample chi-square table, in both rows (Cochran's rule): a value
rarer than that in the pooled sample shares one cell with the other rare values (:func:`two_sample_cells`)."""

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# --------------------------------------------------------------------------------------------------- counting


def category_counts(
    ref: CategoricalReference, values: Sequence[Any] | npt.NDArray[Any]
) -> tuple[list[str], IntArray, IntArray]:
    """``(labels, ref_counts, cur_counts)`` over the reference's labels (sorted) followed by :data:`UNSEEN`.

    Current values are labelled like :meth:`CategoricalReference.from_values`; a label the reference lacks is
    counted under :data:`UNSEEN` (whose reference count is ``ref.counts.get(UNSEEN, 0)``).
    """
    labels = [*sorted(k for k in ref.counts if k != UNSEEN), UNSEEN]
    index = {label: i for i, label in enumerate(labels)}
    ref_counts = np.array([ref.counts.get(label, 0) for label in labels], dtype=np.int64)
    cur_counts = np.zeros(len(labels), dtype=np.int64)
    for label, count in labels_counter(values).items():
        cur_counts[index.get(label, len(labels) - 1)] += count
    return labels, ref_counts, cur_counts


def _proportions(ref_counts: ArrayLike, cur_counts: ArrayLike) -> tuple[FloatArray, FloatArray]:
    p = np.asarray(ref_counts, dtype=np.float64).ravel()
    q = np.asarray(cur_counts, dtype=np.float64).ravel()
    if p.shape != q.shape:
        raise ValueError(f"count vectors differ in length: {p.size} vs {q.size}")
    if np.any(p < 0) or np.any(q < 0):
        raise ValueError("counts must be non-negative")
    p_total, q_total = p.sum(), q.sum()
    if p_total <= 0 or q_total <= 0:
        raise ValueError(f"both count vectors need a positive total, got {p_total} and {q_total}")
    return p / p_total, q / q_total


# --------------------------------------------------------------------------------------------------- statistics


def psi(ref_counts: ArrayLike, cur_counts: ArrayLike, eps: float = 1e-4) -> float:
    """Population stability index ``sum((q - p) * ln(q / p))``.

    ``p`` and ``q`` are the reference and current proportions (counts over their totals), each floored at ``eps``
    with ``np.maximum`` (and not renormalised afterwards), so a bin that is empty on one side contributes a
    finite term ``(q - eps) * ln(q / eps)`` rather than infinity. Identical proportions give exactly 0.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    p, q = _proportions(ref_counts, cur_counts)
    p = np.maximum(p, eps)
    q = np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_divergence(ref_counts: ArrayLike, cur_counts: ArrayLike) -> float:
    """Jensen-Shannon divergence in bits between the two proportion vectors (so ``0 <= JS <= 1``).

    ``JS = (KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2`` and log base 2; terms with zero probability
    contribute 0 (they are masked, never evaluated). Symmetric in its arguments; the square root is the
    Jensen-Shannon distance of ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
    """
    p, q = _proportions(ref_counts, cur_counts)
    m = (p + q) / 2.0
    total = 0.0
    for x in (p, q):
        mask = x > 0
        total += float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))
    return min(max(total / 2.0, 0.0), 1.0)


def ks_2samp(reference: ArrayLike, current: ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic ``D = sup_x |F_ref(x) - F_cur(x)|`` and its two-sided p-value.

    The statistic is exact, equal to ``scipy.stats.ks_2samp(reference, current).statistic`` (ties within and across
    samples included). The reference is reduced to its distinct values ``u_0 < ... < u_k`` and both samples are
    sorted once; ``np.searchsorted`` of the ``u_j`` into each gives ``#<= u_j`` and ``#< u_j``. (Locating every
    current value among the ``u_j`` instead, ``O(n log m)`` on paper, measured 2x slower here: scattered lookups
    cost more than numpy's sort.) On ``[u_j, u_{j+1})`` ``F_ref`` is constant and ``F_cur`` non-decreasing,
    so the supremum is attained at ``u_j`` or just below ``u_{j+1}``; together with the tails (``F_ref = 0``
    below ``u_0``, ``1`` from ``u_k`` on) this means ``D`` is the maximum of ``|F_ref - F_cur|`` evaluated at every
    ``u_j`` both at ``u_j`` (``<=``) and just below it (``<``).

    The p-value is scipy's ``method='asymp'`` for the two-sided test:
    ``scipy.stats.distributions.kstwo.sf(D, round(en))`` with ``en = m * n / (m + n)`` (the one-sample KS
    distribution at the effective sample size; ``round(en)`` is raised to 1 for ``m = n = 1``, where scipy gives
    NaN). For large ``en`` this tends to the Kolmogorov distribution ``scipy.special.kolmogorov(sqrt(en) * D)``,
    which is not used because it differs from scipy's value by ~1e-2 at en = 500 (~0.1 at en = 5). NaNs are dropped
    from both samples; an empty sample raises ``ValueError``.
    """
    ref = np.sort(finite_or_inf(reference))
    cur = np.sort(finite_or_inf(current))
    m, n = ref.size, cur.size
    if m == 0 or n == 0:
        raise ValueError(f"ks_2samp needs non-empty samples, got {m} reference and {n} current values")
    points = np.unique(ref)
    ref_le = np.searchsorted(ref, points, side="right") / m
    ref_lt = np.searchsorted(ref, points, side="left") / m
    cur_le = np.searchsorted(cur, points, side="right") / n
    cur_lt = np.searchsorted(cur, points, side="left") / n
    d = float(max(np.max(np.abs(ref_le - cur_le)), np.max(np.abs(ref_lt - cur_lt))))
    en = float(m) * float(n) / (float(m) + float(n))
    # scipy's 'asymp' uses round(en); it is 0 only for m = n = 1, where scipy returns NaN and this uses 1
    p_value = float(np.clip(distributions.kstwo.sf(d, max(float(np.round(en)), 1.0)), 0.0, 1.0))
    return d, p_value


def chi_square(ref_counts: ArrayLike, cur_counts: ArrayLike) -> tuple[float, float, int]:
    """Pearson chi-square test of homogeneity on the 2 x k table ``[ref_counts; cur_counts]``.

    Columns whose total is 0 are dropped first; then ``(statistic, p_value, dof)`` equals
    ``scipy.stats.chi2_contingency(table, correction=False)[:3]`` (``dof = k' - 1`` for ``k'`` non-empty columns,
    p-value ``scipy.special.chdtrc(dof, statistic)``). With fewer than 2 non-empty columns the result is
    ``(0.0, 1.0, 0)``. A row whose total is 0 raises ``ValueError`` (homogeneity is undefined then).
    """
    ref = np.asarray(ref_counts, dtype=np.float64).ravel()
    cur = np.asarray(cur_counts, dtype=np.float64).ravel()
    if ref.shape != cur.shape:
        raise ValueError(f"count vectors differ in length: {ref.size} vs {cur.size}")
    table = np.vstack([ref, cur])
    if np.any(table < 0):
        raise ValueError("counts must be non-negative")
    table = table[:, table.sum(axis=0) > 0]
    rows = table.sum(axis=1, keepdims=True)
    if np.any(rows <= 0):
        raise ValueError(f"both rows need a positive total, got {rows.ravel().tolist()}")
    if table.shape[1] < 2:
        return 0.0, 1.0, 0
    cols = table.sum(axis=0, keepdims=True)
    expected = rows * cols / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return statistic, float(chdtrc(dof, statistic)), dof


def null_share_test(nulls: int, rows: int, reference_nulls: int, reference_rows: int) -> float:
    """Two-sided p-value of ``nulls`` of ``rows`` window values against ``reference_nulls`` of ``reference_rows``:
    Fisher's exact test on the 2 x 2 table (``scipy.stats.fisher_exact``), so the reference's own sampling noise is
    accounted for, whatever either size, and a reference without nulls gives a valid test (a window with 45 nulls
    in 5,000 rows against 0 in 20,000 has p ~ 1e-31). Empty sides give 1.0. Significance only: a larger window
    detects a smaller change; the shares themselves are reported beside the p-value."""
    if rows <= 0 or reference_rows <= 0 or (nulls == 0 and reference_nulls == 0):
        return 1.0
    table = [[nulls, rows - nulls], [reference_nulls, reference_rows - reference_nulls]]
    return float(fisher_exact(table, alternative="two-sided").pvalue)


def two_sample_cells(
    ref_counts: ArrayLike, cur_counts: ArrayLike, min_expected: float = MIN_EXPECTED
) -> tuple[IntArray, IntArray]:
    """The cells of a two-sample chi-square table over per-value counts of two samples (aligned by value).

    A value stands alone when its pooled count ``c = ref + cur`` gives both rows an expected count of at least
    ``min_expected`` (``c * min(n_ref, n_cur) / (n_ref + n_cur) >= min_expected``); all other values share one
    cell, merged into the smallest standalone cell when it is itself too small. The grouping depends on the pooled
    counts only, which are the same whichever sample a value came from, so under no drift the table keeps the
    homogeneity test's null distribution (conditional on its margins); grouping by the *reference's* counts would
    not (rare values' reference counts are biased low by the selection). Returns ``(ref_cells, cur_cells)``; one
    cell or none means nothing to test."""
    ref = np.asarray(ref_counts, dtype=np.int64).ravel()
    cur = np.asarray(cur_counts, dtype=np.int64).ravel()
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    if n_ref <= 0 or n_cur <= 0:
        return ref[:0], cur[:0]
    combined = ref + cur
    alone = combined * min(n_ref, n_cur) >= min_expected * (n_ref + n_cur)
    ref_cells, cur_cells = ref[alone], cur[alone]
    rest_ref, rest_cur = int(ref[~alone].sum()), int(cur[~alone].sum())
    if rest_ref + rest_cur:
        if (rest_ref + rest_cur) * min(n_ref, n_cur) >= min_expected * (n_ref + n_cur) or not alone.any():
            ref_cells, cur_cells = np.append(ref_cells, rest_ref), np.append(cur_cells, rest_cur)
        else:
            smallest = int(np.argmin(ref_cells + cur_cells))
            ref_cells, cur_cells = ref_cells.copy(), cur_cells.copy()
            ref_cells[smallest] += rest_ref
            cur_cells[smallest] += rest_cur
    return ref_cells, cur_cells


def _log_comb(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``log(C(a, b))`` elementwise, by ``scipy.special.gammaln``."""
    return np.asarray(gammaln(a + 1.0) - gammaln(b + 1.0) - gammaln(a - b + 1.0), dtype=np.float64)


def surge_test(ref_counts: ArrayLike, cur_counts: ArrayLike, level: float) -> tuple[float, int, bool]:
    """Did one value (a category, a numeric value) become more frequent in the window than the reference allows?

    For each value with pooled count ``c``, its window count ``X`` is, under no drift and given the margins,
    ``Hypergeometric(N = n_ref + n_cur, c, n_cur)``. Its p-value is an upper bound of the exact upper tail
    ``P(X >= k)``: ``pmf(k) / (1 - r)``, where ``r = pmf(k + 1) / pmf(k)`` bounds every later ratio (they
    decrease beyond the mode), so the test is conservative, and tight where it matters (far in the tail); ``pmf``
    from ``scipy.special.gammaln``, vectorized over values. A value at or below its expected count has p = 1. The
    smallest p-value a value can reach (all it can hold in the window) is its exact ``pmf(min(c, n_cur))``.
    Multiplicity: Tarone's modified Bonferroni at ``level`` -- ``K`` is the least ``k >= 1`` such that at most
    ``k`` values can reach ``level / k``; values that cannot (rare ones) are not counted, so a vocabulary of 5,000
    rare values does not dilute the test of a frequent one.

    Returns ``(p, K, testable)``: ``p = min(1, K * min_j p_j)``, to be compared with ``level`` (``p < level`` is
    exactly "some value is significant at ``level / K``"), and ``testable``, whether any value can reach
    ``level`` at all (when none can, the test cannot flag and need not be counted by a caller's Bonferroni).
    A new value in 1 % of a 5,000-row window has ``c = 50`` and ``p < 0.2 ** 50`` against 20,000 reference rows.
    """
    ref = np.asarray(ref_counts, dtype=np.int64).ravel()
    cur = np.asarray(cur_counts, dtype=np.int64).ravel()
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    if n_ref <= 0 or n_cur <= 0:
        return 1.0, 0, False
    total = float(n_ref + n_cur)
    keep = (ref + cur) > 0
    ref, cur = ref[keep], cur[keep]
    combined = (ref + cur).astype(np.float64)
    log_denominator = float(_log_comb(np.array([total]), np.array([float(n_cur)]))[0])

    def log_pmf(k: npt.NDArray[np.float64], c: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return _log_comb(c, k) + _log_comb(total - c, n_cur - k) - log_denominator

    # a value's smallest p-value depends on its pooled count alone: computed once per distinct count (a continuous
    # feature has thousands of values, nearly all with count 1), then repeated as often as it occurs
    counts, multiplicity = np.unique(combined, return_counts=True)
    lowest = log_pmf(np.minimum(counts, n_cur), counts)
    order = np.argsort(lowest, kind="stable")
    log_min_p = np.repeat(lowest[order], multiplicity[order])  # ascending: the most testable first
    ks = np.arange(1, log_min_p.size + 1)
    reachable = np.searchsorted(log_min_p, math.log(level) - np.log(ks), side="right")  # values that can reach level/k
    k = int(ks[np.argmax(reachable <= ks)]) if ks.size else 1
    testable = bool(log_min_p.size) and float(log_min_p[0]) <= math.log(level)
    over = cur * (n_ref + n_cur) > (ref + cur) * n_cur  # above its expected count (exact, in integers)
    if not over.any():
        return 1.0, k, testable
    # the tail bound depends on (window count, pooled count) alone: once per distinct pair
    span = n_ref + n_cur + 1  # a pooled count is at most n_ref + n_cur: (x, c) -> x * span + c is one-to-one
    pairs = np.unique(cur[over] * span + (ref + cur)[over])
    x, c = (pairs // span).astype(np.float64), (pairs % span).astype(np.float64)
    ratio = (c - x) * (n_cur - x) / ((x + 1.0) * (n_ref - (c - x) + 1.0))  # pmf(x + 1) / pmf(x)
    bounded = ratio < 1.0  # beyond the mode; else the bound says nothing and p = 1 (conservative)
    log_tail = log_pmf(x, c) - np.log1p(-np.where(bounded, ratio, 0.0))
    p_values = np.where(bounded, np.minimum(np.exp(log_tail), 1.0), 1.0)
    return float(min(1.0, k * float(np.min(p_values)))), k, testable
