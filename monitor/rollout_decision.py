"""The statistical decision of a canary or shadow rollout: at each step the candidate release is compared with the
baseline (the release now served) on what each answered during the same step window, and the step's verdict is
``"breach"`` (roll back), ``"pass"`` (go on) or ``"wait"`` (not enough data yet to tell).

Contract
--------
* **Family-wise false-alarm rate.** A rollout of ``K = policy.steps`` looks has a declared false-alarm rate
  ``alpha = policy.alpha`` over the whole rollout, all steps and all checks together. ``alpha`` is spent evenly over
  the looks, ``alpha / K`` at each (one look per step), and a step's share is split evenly over the checks that
  *apply* to it: ``alpha_check = alpha / K / C`` with ``C`` the number of applicable checks (Bonferroni). By the
  union bound, for a candidate identical to the baseline ``P(any false breach in the rollout) <= sum over steps
  and checks of alpha_check = alpha``, however many steps, whether the step windows are disjoint or cumulative
  (the union bound needs no independence). Applicability depends only on the task and on whether shadow pairs are
  given, never on the data, so the split is fixed before anything is looked at; a check without enough data
  (``"not_enough_data"``) keeps its share unspent.
* **A breach needs significance and a practical effect.** Each check's p-value must be below ``alpha_check`` and its
  effect beyond the policy's margin, so a huge sample does not roll back a release over a negligible difference,
  and the margin only ever lowers the false-alarm rate.
* **Exactness of each test under "identical release".** Latency (the placement test of the candidate's latencies
  above the baseline's quantile: exact for exchangeable continuous latencies, conservative with ties), errors
  (Fisher's exact test) and agreement (exact binomial) are exact, hence conservative, tests. Prediction drift
  (Pearson chi-square over the cells :func:`~inferline.monitor.two_sample.two_sample_cells` pools by Cochran's
  rule, or the asymptotic two-sample KS test for a regression), score drift (asymptotic KS, conservative with
  ties) and the estimated quality (Welch's t-test) hold their level asymptotically; ``min_rows`` rows per arm
  (default 500) is what keeps them close. :func:`simulate_false_alarms` measures the whole rollout's rate on
  resamples of real answers.

The checks (one-sided toward "the candidate is worse", except the drifts, which are two-sided)
------------------------------------------------------------------------------------------------
1. ``latency_p99`` (named after ``latency_quantile``: 0.99 -> ``latency_p99``, 0.999 -> ``latency_p99_9``): is
   the candidate's ``q``-quantile above the baseline's? ``t`` is the baseline's ``r``-th largest latency,
   ``r = max(1, ceil((1 - q) * n_b))`` (its empirical ``q``-quantile); ``J`` counts the candidate's latencies
   ``> t``. For exchangeable latencies (an identical release) the ranks are a uniform permutation and ``J``
   follows the negative hypergeometric law ``P(J = j) = C(j + r - 1, j) C(n_c - j + n_b - r, n_c - j) /
   C(n_b + n_c, n_c)`` (the number of candidate latencies ranked above the baseline's ``r``-th largest); the
   p-value is ``P(J >= j_observed)``, exact (ties only lower ``J``: conservative). Unlike a Fisher test on the
   pooled quantile, it keeps its power when the arms are small: 100 latencies of a sleeping candidate all above
   100 of the baseline give ``p = 1 / C(200, 100)``. Effect: the candidate's ``q``-quantile over the baseline's.
   Breach iff ``p < alpha_check``, effect ``> 1 + latency_margin`` and the quantiles differ by more than
   ``latency_floor_s``. Needs ``min_requests`` latencies per arm. In a shadow (``paired`` given) the figures are
   shown but the check does not apply: the edge sends the copies in batches off the request path
   (``serving.gateway.Gateway.send_shadow``), so a copy waits for the copies beside it and its latency is not what
   a caller would get; the canary, where the candidate answers callers, decides latency.
2. ``errors``: Fisher's exact test on ``[[cand_failed, cand_ok], [base_failed, base_ok]]`` (``"greater"``); effect
   the difference of error rates; breach iff ``p < alpha_check`` and effect ``> error_margin``. Needs
   ``min_requests`` requests (ok + failed) per arm.
3. ``prediction_drift``: classification, Pearson's chi-square of homogeneity of the predicted-class counts over
   the cells of ``two_sample_cells`` (rare classes pooled; fewer than two cells: p = 1), effect the total variation
   distance of the predicted-class shares; regression, the two-sample KS test of the predictions, effect ``D``.
   Breach iff ``p < alpha_check`` and effect ``> drift_min_effect``. Needs ``min_rows`` rows per arm.
4. ``score_drift`` (classification only): the two-sample KS test of the probability of class 1 (binary) or of the
   largest probability (multiclass); effect ``D``; the same breach rule as 3.
5. ``estimated_quality`` (classification only): each row's label-free estimate of being right is the probability
   of its predicted class (CBPE, for calibrated scores); Welch's t-test (``alternative="less"``, computed from the
   arms' means and variances by ``scipy.stats.ttest_ind_from_stats``, the same test as ``ttest_ind(...,
   equal_var=False)``) that the candidate's mean is lower; effect ``baseline mean - candidate mean``; breach iff
   ``p < alpha_check`` and effect ``> quality_margin``. Two arms of constant values have no variance: p is 1 unless
   the candidate's mean is lower (then 0, and the margin decides). Needs ``max(min_rows, 2)`` rows per arm.
6. ``agreement`` (only with shadow pairs): the share of pairs that disagree (classification: another class;
   regression: ``|c - b| > regression_tolerance * (1 + |b|)``, two NaNs agree); the exact binomial test
   (``"greater"``) against ``max_disagreement``; effect the share; breach iff ``p < alpha_check``. Needs
   ``min_rows`` pairs.

A step's verdict: ``"breach"`` if any check breached, else ``"wait"`` if an applicable check lacks data, else
``"pass"``. Degenerate inputs (empty arms, constant values) give ``"pass"`` or ``"not_enough_data"``, never NaN or
an exception. Non-finite latencies or answers are rejected (:class:`Arm`): a NaN answer is a failed request.

Pure: numpy, scipy and :mod:`inferline.monitor.two_sample`; no I/O, no processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import gammaln
from scipy.stats import binomtest, fisher_exact, ttest_ind_from_stats

from inferline.core.command import fraction, positive_float, positive_int
from inferline.core.options import option
from inferline.monitor.two_sample import chi_square, ks_2samp, two_sample_cells

__all__ = [
    "CHECKS",
    "STATUSES",
    "TASKS",
    "VERDICTS",
    "Arm",
    "Check",
    "Paired",
    "Policy",
    "StepDecision",
    "applicable_checks",
    "decide_step",
    "latency_check_name",
    "rows_to_stop",
    "simulate_false_alarms",
]

TASKS = ("binary", "multiclass", "regression")
STATUSES = ("pass", "breach", "not_enough_data", "not_applicable")
VERDICTS = ("pass", "breach", "wait")
CHECKS = ("latency", "errors", "prediction_drift", "score_drift", "estimated_quality", "agreement")
"""The checks in the order a step reports them (``latency`` stands for :func:`latency_check_name`)."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# --------------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Arm:
    """What one release answered in one step.

    ``latency_s``: float64 ``[r]``, one per sampled request, seconds, measured at the edge. ``ok_requests`` and
    ``failed_requests``: every request of the step (not only the sampled ones), from the server's counters.
    ``values``: float ``[n, m]``, per accepted row the class probabilities (classification) or ``[n, 1]`` the
    prediction (regression). ``predicted``: int64 ``[n]``, the predicted class per row (classification), ``None``
    for a regression. The arrays are converted to those dtypes; an empty 1-D ``values`` is read as ``[0, 1]``.
    """

    latency_s: FloatArray
    ok_requests: int
    failed_requests: int
    values: FloatArray
    predicted: IntArray | None = None

    def __post_init__(self) -> None:
        latency = np.asarray(self.latency_s, dtype=np.float64)
        if latency.ndim != 1:
            raise ValueError(f"Arm.latency_s must be 1-D (one latency per sampled request), got shape {latency.shape}")
        if not np.all(np.isfinite(latency)) or np.any(latency < 0):
            raise ValueError(
                "Arm.latency_s must hold finite latencies >= 0 seconds, got "
                f"{int(np.count_nonzero(~np.isfinite(latency) | (latency < 0)))} other value(s): drop them at the edge"
            )
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim == 1 and values.size == 0:
            values = values.reshape(0, 1)
        if values.ndim != 2:
            raise ValueError(
                f"Arm.values must be 2-D [rows, classes] (a regression's [rows, 1]), got shape {values.shape}"
            )
        if not np.all(np.isfinite(values)):
            raise ValueError(
                f"Arm.values holds {int(np.count_nonzero(~np.isfinite(values)))} non-finite value(s): "
                "a row without a finite answer is a failed request, count it in failed_requests instead"
            )
        for name in ("ok_requests", "failed_requests"):
            count = getattr(self, name)
            if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
                raise ValueError(f"Arm.{name} must be an int >= 0 (a server counter), got {count!r}")
            object.__setattr__(self, name, int(count))
        predicted = None
        if self.predicted is not None:
            predicted = np.asarray(self.predicted)
            if predicted.ndim != 1 or predicted.shape[0] != values.shape[0]:
                raise ValueError(
                    f"Arm.predicted must be 1-D with one class per row ({values.shape[0]} rows), "
                    f"got shape {predicted.shape}"
                )
            if predicted.size and (
                not np.issubdtype(predicted.dtype, np.integer)
                or predicted.min() < 0
                or predicted.max() >= max(values.shape[1], 2)
            ):
                raise ValueError(
                    f"Arm.predicted must hold class indices 0..{max(values.shape[1], 2) - 1} (integers), "
                    f"got dtype {predicted.dtype} with range {predicted.min()}..{predicted.max()}"
                )
            predicted = predicted.astype(np.int64, copy=False)
        object.__setattr__(self, "latency_s", latency)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "predicted", predicted)

    @property
    def rows(self) -> int:
        """The accepted rows ``n``."""
        return int(self.values.shape[0])

    @property
    def requests(self) -> int:
        """Every request of the step, ok or failed."""
        return self.ok_requests + self.failed_requests


@dataclass(frozen=True)
class Paired:
    """Shadow mode: the two releases' answers to the SAME rows (row ``i`` of both arrays is one request row):
    ``[p]`` predicted classes (classification) or predictions (regression)."""

    baseline: npt.NDArray[Any]
    candidate: npt.NDArray[Any]

    def __post_init__(self) -> None:
        baseline, candidate = np.asarray(self.baseline).ravel(), np.asarray(self.candidate).ravel()
        if baseline.shape != candidate.shape:
            raise ValueError(
                f"Paired.baseline and Paired.candidate must hold one answer per shared row each, got "
                f"{baseline.size} and {candidate.size}: pair them by request row before the check"
            )
        object.__setattr__(self, "baseline", baseline)
        object.__setattr__(self, "candidate", candidate)


def _in_range(name: str, value: object, low: float, high: float, low_open: bool, high_open: bool, why: str) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        number = float(value)  # type: ignore[arg-type]
        ok = (low < number if low_open else low <= number) and (number < high if high_open else number <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"Policy.{name} must be a number in {interval}, got {value!r} instead: {why}")


def _positive_int(name: str, value: object, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Policy.{name} must be an int >= 1, got {value!r} instead: {why}")


@dataclass(frozen=True)
class Policy:
    """The rollout's statistical policy (see the module docstring for how each field enters a check)."""

    # the fields made with ``option`` are also `inferline rollout canary|shadow`'s flags (``core.options``)
    alpha: float = option("--alpha", "false-alarm rate of the whole rollout", default=0.05, type=fraction)
    steps: int = 4
    min_rows: int = option(
        "--min-rows", "rows each release answers in a step before it is decided", default=500, type=positive_int
    )
    min_requests: int = option(
        "--min-requests", "requests each release answers in a step before it is decided", default=200,
        type=positive_int,
    )  # fmt: skip
    latency_quantile: float = 0.99
    latency_margin: float = option(
        "--latency-margin", "a latency breach needs the candidate's p99 above the current's by this share, and "
        "significance", default=0.20, type=positive_float,
    )  # fmt: skip
    latency_floor_s: float = option(
        "--latency-floor", "a latency breach also needs the candidate's p99 above the current's by this many "
        "seconds (the noise of a busy machine)", default=0.002,
        type=positive_float,
    )  # fmt: skip
    error_margin: float = option(
        "--error-margin", "an error breach needs the candidate's failed-request rate above the current's by this "
        "much", default=0.005, type=fraction,
    )  # fmt: skip
    drift_min_effect: float = option(
        "--drift-min-effect", "a drift breach needs this distance between the releases' predictions (total "
        "variation or KS D)", default=0.05, type=fraction,
    )  # fmt: skip
    quality_margin: float = option(
        "--quality-margin", "a quality breach needs the candidate's estimated accuracy lower by this much",
        default=0.02, type=fraction,
    )  # fmt: skip
    max_disagreement: float = option(
        "--max-disagreement", "shadow: a breach needs the releases to disagree on significantly more than this "
        "share of the same rows", default=0.02, type=fraction,
    )  # fmt: skip
    regression_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        inf = math.inf
        _in_range("alpha", self.alpha, 0, 1, True, True, "the family-wise false-alarm rate of the whole rollout")
        _positive_int("steps", self.steps, "the number of looks the rollout takes")
        _positive_int("min_rows", self.min_rows, "the rows each arm needs before the drift and quality checks")
        _positive_int("min_requests", self.min_requests, "the requests each arm needs before latency and errors")
        _in_range("latency_quantile", self.latency_quantile, 0, 1, True, True, "0.99 compares the p99s")
        _in_range("latency_margin", self.latency_margin, 0, inf, False, True, "0.2 is 'more than 20 % slower'")
        _in_range("latency_floor_s", self.latency_floor_s, 0, inf, False, True, "in seconds, 0.002 is 2 ms")
        _in_range("error_margin", self.error_margin, 0, 1, False, True, "a difference of error rates")
        _in_range("drift_min_effect", self.drift_min_effect, 0, 1, False, True, "a TV distance or KS D")
        _in_range("quality_margin", self.quality_margin, 0, 1, False, True, "a drop of estimated accuracy")
        _in_range("max_disagreement", self.max_disagreement, 0, 1, False, True, "a share of shadow pairs")
        _in_range("regression_tolerance", self.regression_tolerance, 0, inf, False, True, "a relative tolerance")

    @property
    def step_alpha(self) -> float:
        """The false-alarm rate spent at each look, ``alpha / steps``."""
        return self.alpha / self.steps


# --------------------------------------------------------------------------------------------------- outputs


def _json_number(value: float | None) -> float | None:
    """``value`` as a plain float, ``None`` for None, NaN and infinities (JSON has none of them)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Check:
    """One check of one step: its status, the p-value against the level it was held to, and the effect against
    its practical margin, with the figures of both arms."""

    name: str
    status: str
    p_value: float | None
    alpha: float
    effect: float | None
    margin: float
    baseline: dict[str, float] = field(default_factory=dict)
    candidate: dict[str, float] = field(default_factory=dict)
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: plain floats, ``None`` for NaN and infinities."""
        return {
            "name": self.name,
            "status": self.status,
            "p_value": _json_number(self.p_value),
            "alpha": _json_number(self.alpha),
            "effect": _json_number(self.effect),
            "margin": _json_number(self.margin),
            "baseline": {key: _json_number(value) for key, value in self.baseline.items()},
            "candidate": {key: _json_number(value) for key, value in self.candidate.items()},
            "message": self.message,
        }


@dataclass(frozen=True)
class StepDecision:
    """The verdict of one look: ``"breach"`` (any check breached), ``"pass"`` (every applicable check passed) or
    ``"wait"`` (some applicable check lacks data and none breached)."""

    step: int
    verdict: str
    alpha: float
    checks: tuple[Check, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": int(self.step),
            "verdict": self.verdict,
            "alpha": _json_number(self.alpha),
            "checks": [check.as_dict() for check in self.checks],
        }

    @property
    def breaches(self) -> list[Check]:
        return [check for check in self.checks if check.status == "breach"]


# --------------------------------------------------------------------------------------------------- checks


def latency_check_name(quantile: float) -> str:
    """``latency_p99`` for 0.99, ``latency_p50`` for 0.5, ``latency_p99_9`` for 0.999."""
    return "latency_p" + f"{quantile * 100:.6g}".replace(".", "_")


def applicable_checks(task: str, paired: bool, policy: Policy) -> tuple[str, ...]:
    """The checks that take a share of a step's alpha: fixed by the task and by whether shadow pairs are given."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    names = ["errors", "prediction_drift"] if paired else [latency_check_name(policy.latency_quantile), "errors",
                                                          "prediction_drift"]  # fmt: skip
    if task != "regression":
        names += ["score_drift", "estimated_quality"]
    if paired:
        names.append("agreement")
    return tuple(names)


def _significance(p: float, level: float) -> str:
    return f"p={p:.2g} {'<' if p < level else '>='} {level:.2g}"


def _decide(
    name: str,
    p: float,
    level: float,
    effect: float,
    beyond: bool,
    margin: float,
    baseline: dict[str, float],
    candidate: dict[str, float],
    figures: str,
    inside: str,
) -> Check:
    """The check's status from its p-value and its effect: a breach needs both; the message says which failed."""
    if p < level and beyond:
        status, tail = "breach", "breach"
    elif p < level:
        status, tail = "pass", f"pass ({inside})"
    else:
        status, tail = "pass", "pass"
    return Check(
        name, status, p, level, effect, margin, baseline, candidate, f"{figures}, {_significance(p, level)}: {tail}"
    )


def _too_few(
    name: str, level: float, margin: float, what: str, have: tuple[int, int], need: int, extra: dict[str, float]
) -> Check | None:
    candidate_count, baseline_count = have
    if candidate_count >= need and baseline_count >= need:
        return None
    message = (
        f"{candidate_count} vs {baseline_count} {what} (candidate vs baseline), {need} each needed: not_enough_data"
    )
    return Check(
        name,
        "not_enough_data",
        None,
        level,
        None,
        margin,
        {what: float(baseline_count), **extra},
        {what: float(candidate_count), **extra},
        message,
    )


def _latency(baseline: Arm, candidate: Arm, policy: Policy, level: float) -> Check:
    name, q, margin = latency_check_name(policy.latency_quantile), policy.latency_quantile, policy.latency_margin
    b, c = baseline.latency_s, candidate.latency_s
    short = _too_few(name, level, margin, "requests", (c.size, b.size), policy.min_requests, {})
    if short is not None:
        return short
    label = name.removeprefix("latency_")
    bq, cq = float(np.quantile(b, q)), float(np.quantile(c, q))
    effect = cq / bq if bq > 0 else (1.0 if cq == 0 else math.inf)
    r = max(1, math.ceil((1.0 - q) * b.size))
    threshold = float(np.sort(b)[b.size - r])  # the baseline's r-th largest latency
    above = int(np.count_nonzero(c > threshold))
    p = placement_p_value(above, c.size, b.size, r)
    base_figs = {f"{label}_ms": bq * 1e3, "requests": float(b.size), "above_threshold": float(r)}
    cand_figs = {f"{label}_ms": cq * 1e3, "requests": float(c.size), "above_threshold": float(above)}
    figures = (
        f"{label} {cq * 1e3:.1f} ms vs {bq * 1e3:.1f} ms (x{effect:.2f}); {above} of {c.size} candidate latencies "
        f"above the current's {label} {threshold * 1e3:.1f} ms"
    )
    beyond = effect > 1.0 + margin and cq - bq > policy.latency_floor_s
    inside = f"within the margin: x{1 + margin:.2f} and +{policy.latency_floor_s * 1e3:g} ms both needed"
    return _decide(name, p, level, effect, beyond, margin, base_figs, cand_figs, figures, inside)


def placement_p_value(above: int, n_candidate: int, n_baseline: int, r: int) -> float:
    """``P(J >= above)`` for ``J`` the number of ``n_candidate`` exchangeable values ranked above the ``r``-th
    largest of ``n_baseline`` others (negative hypergeometric; the latency check's exact p-value)."""
    if above <= 0:
        return 1.0
    j = np.arange(above, n_candidate + 1, dtype=np.float64)
    log_p = (
        _log_choose(j + r - 1, j)
        + _log_choose(n_candidate - j + n_baseline - r, n_candidate - j)
        - float(_log_choose(np.float64(n_baseline + n_candidate), np.float64(n_candidate)))
    )
    return float(min(1.0, np.exp(log_p).sum()))


def _log_choose(n: Any, k: Any) -> Any:
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def _errors(baseline: Arm, candidate: Arm, policy: Policy, level: float) -> Check:
    name, margin = "errors", policy.error_margin
    short = _too_few(name, level, margin, "requests", (candidate.requests, baseline.requests), policy.min_requests, {})
    if short is not None:
        return short
    b_rate = baseline.failed_requests / baseline.requests
    c_rate = candidate.failed_requests / candidate.requests
    effect = c_rate - b_rate
    table = [[candidate.failed_requests, candidate.ok_requests], [baseline.failed_requests, baseline.ok_requests]]
    p = float(fisher_exact(table, alternative="greater").pvalue) if candidate.failed_requests else 1.0
    base_figs = {"error_rate": b_rate, "failed": float(baseline.failed_requests), "requests": float(baseline.requests)}
    cand_figs = {
        "error_rate": c_rate,
        "failed": float(candidate.failed_requests),
        "requests": float(candidate.requests),
    }
    figures = f"error rate {c_rate:.2%} vs {b_rate:.2%} ({effect:+.2%})"
    inside = f"within the margin of {margin:.2%}"
    return _decide(name, p, level, effect, effect > margin, margin, base_figs, cand_figs, figures, inside)


def _classes(baseline: Arm, candidate: Arm) -> int:
    """The number of classes both arms' probabilities cover (an empty arm takes the other's)."""
    widths = {arm.values.shape[1] for arm in (baseline, candidate) if arm.rows}
    if len(widths) > 1:
        raise ValueError(
            f"the arms' probabilities have {sorted(widths)} columns: both releases must answer over the same "
            "classes (compare releases of one pipeline)"
        )
    return max(widths, default=1)


def _require_predicted(arm: Arm, side: str) -> IntArray:
    if arm.predicted is None:
        raise ValueError(f"the {side} arm of a classification has predicted=None: give the predicted class per row")
    return arm.predicted


def _ks_check(name: str, b: FloatArray, c: FloatArray, policy: Policy, level: float, what: str) -> Check:
    margin = policy.drift_min_effect
    d, p = ks_2samp(b, c)
    base_figs = {"rows": float(b.size), "mean": float(np.mean(b))}
    cand_figs = {"rows": float(c.size), "mean": float(np.mean(c))}
    figures = f"{what}: KS D={d:.3f} (means {cand_figs['mean']:.4g} vs {base_figs['mean']:.4g})"
    inside = f"D within the margin of {margin:g}"
    return _decide(name, p, level, d, d > margin, margin, base_figs, cand_figs, figures, inside)


def _prediction_drift(baseline: Arm, candidate: Arm, task: str, policy: Policy, level: float) -> Check:
    name, margin = "prediction_drift", policy.drift_min_effect
    short = _too_few(name, level, margin, "rows", (candidate.rows, baseline.rows), policy.min_rows, {})
    if short is not None:
        return short
    if task == "regression":
        return _ks_check(name, baseline.values[:, 0], candidate.values[:, 0], policy, level, "predictions")
    b_pred, c_pred = _require_predicted(baseline, "baseline"), _require_predicted(candidate, "candidate")
    width = max(_classes(baseline, candidate), 2)
    b_counts = np.bincount(b_pred, minlength=width)
    c_counts = np.bincount(c_pred, minlength=width)
    b_share, c_share = b_counts / b_counts.sum(), c_counts / c_counts.sum()
    effect = float(0.5 * np.sum(np.abs(c_share - b_share)))
    b_cells, c_cells = two_sample_cells(b_counts, c_counts)
    p = chi_square(b_cells, c_cells)[1] if b_cells.size >= 2 else 1.0
    base_figs = {f"share_{k}": float(s) for k, s in enumerate(b_share)} | {"rows": float(baseline.rows)}
    cand_figs = {f"share_{k}": float(s) for k, s in enumerate(c_share)} | {"rows": float(candidate.rows)}
    top = int(np.argmax(np.abs(c_share - b_share)))
    figures = (
        f"predicted classes: TV {effect:.3f} (class {top}: {c_share[top]:.1%} vs {b_share[top]:.1%}), "
        f"{b_cells.size} cells"
    )
    inside = f"TV within the margin of {margin:g}"
    return _decide(name, p, level, effect, effect > margin, margin, base_figs, cand_figs, figures, inside)


def _scores(arm: Arm, task: str) -> FloatArray:
    """Binary: the probability of class 1 (the only column of a one-column arm); multiclass: the largest one."""
    if task == "binary":
        return arm.values[:, 1] if arm.values.shape[1] >= 2 else arm.values[:, 0]
    return np.max(arm.values, axis=1) if arm.values.shape[1] else np.zeros(arm.rows)


def _score_drift(baseline: Arm, candidate: Arm, task: str, policy: Policy, level: float) -> Check:
    name = "score_drift"
    short = _too_few(name, level, policy.drift_min_effect, "rows", (candidate.rows, baseline.rows), policy.min_rows, {})
    if short is not None:
        return short
    _classes(baseline, candidate)
    what = "P(class 1)" if task == "binary" else "top-class probability"
    return _ks_check(name, _scores(baseline, task), _scores(candidate, task), policy, level, what)


def _confidence(arm: Arm, side: str) -> FloatArray:
    """Each row's probability of its predicted class (a binary one-column arm: ``p`` or ``1 - p``)."""
    predicted = _require_predicted(arm, side)
    if arm.values.shape[1] == 1:
        p1 = arm.values[:, 0]
        return np.where(predicted == 1, p1, 1.0 - p1)
    return arm.values[np.arange(arm.rows), predicted]


def _estimated_quality(baseline: Arm, candidate: Arm, policy: Policy, level: float) -> Check:
    name, margin = "estimated_quality", policy.quality_margin
    need = max(policy.min_rows, 2)
    short = _too_few(name, level, margin, "rows", (candidate.rows, baseline.rows), need, {})
    if short is not None:
        return short
    _classes(baseline, candidate)
    b, c = _confidence(baseline, "baseline"), _confidence(candidate, "candidate")
    b_mean, c_mean = float(np.mean(b)), float(np.mean(c))
    b_var, c_var = float(np.var(b, ddof=1)), float(np.var(c, ddof=1))
    effect = b_mean - c_mean
    if b_var == 0.0 and c_var == 0.0:  # constant on both sides: the difference of means is exact
        p = 0.0 if c_mean < b_mean else 1.0
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            result = ttest_ind_from_stats(
                c_mean, math.sqrt(c_var), c.size, b_mean, math.sqrt(b_var), b.size, equal_var=False, alternative="less"
            )
        p = float(result.pvalue)
        p = p if math.isfinite(p) else 1.0
    base_figs = {"estimated_accuracy": b_mean, "rows": float(b.size)}
    cand_figs = {"estimated_accuracy": c_mean, "rows": float(c.size)}
    figures = f"estimated accuracy {c_mean:.2%} vs {b_mean:.2%} (drop {effect:+.2%})"
    inside = f"drop within the margin of {margin:.2%}"
    return _decide(name, p, level, effect, effect > margin, margin, base_figs, cand_figs, figures, inside)


def _agreement(paired: Paired, task: str, policy: Policy, level: float) -> Check:
    name, margin = "agreement", policy.max_disagreement
    pairs = int(paired.baseline.size)
    short = _too_few(name, level, margin, "pairs", (pairs, pairs), policy.min_rows, {})
    if short is not None:
        return short
    if task == "regression":
        b = np.asarray(paired.baseline, dtype=np.float64)
        c = np.asarray(paired.candidate, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            agree = (np.abs(c - b) <= policy.regression_tolerance * (1.0 + np.abs(b))) | (np.isnan(b) & np.isnan(c))
    else:
        agree = np.asarray(paired.baseline) == np.asarray(paired.candidate)
    disagree = int(pairs - np.count_nonzero(agree))
    share = disagree / pairs
    p = float(binomtest(disagree, pairs, margin, alternative="greater").pvalue)
    figs = {"pairs": float(pairs), "disagreeing": float(disagree)}
    figures = f"{share:.2%} of {pairs} shadow pairs disagree (allowed {margin:.2%})"
    return _decide(name, p, level, share, True, margin, figs, dict(figs), figures, "")


def _not_applicable(name: str, why: str, margin: float) -> Check:
    return Check(name, "not_applicable", None, 0.0, None, margin, {}, {}, f"{why}: not_applicable")


# --------------------------------------------------------------------------------------------------- a step


def decide_step(
    step: int, baseline: Arm, candidate: Arm, task: str, policy: Policy, paired: Paired | None = None
) -> StepDecision:
    """The verdict of look ``step`` (0-based) of a rollout under ``policy``: every check of the module docstring,
    each held to ``policy.alpha / policy.steps / C`` with ``C`` the number of checks that apply to ``task`` (and to
    shadow pairs when ``paired`` is given)."""
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or not 0 <= step < policy.steps:
        raise ValueError(
            f"step must be a look index in 0..{policy.steps - 1} (Policy.steps={policy.steps}), got {step!r}: "
            "a rollout with more looks needs a policy with more steps, declared before it starts"
        )
    names = applicable_checks(task, paired is not None, policy)
    level = policy.step_alpha / len(names)
    latency = _latency(baseline, candidate, policy, level if paired is None else 0.0)
    if paired is not None:  # figures only: see the module docstring
        shown = latency.message.rsplit(":", 1)[0]
        latency = replace(
            latency, status="not_applicable", p_value=None, alpha=0.0,
            message=f"{shown}; a shadow's copies are sent in batches off the request path, so their latency is not "
            "what callers would get: the canary decides latency: not_applicable",
        )  # fmt: skip
    checks = [latency, _errors(baseline, candidate, policy, level)]
    checks.append(_prediction_drift(baseline, candidate, task, policy, level))
    if task == "regression":
        checks.append(
            _not_applicable("score_drift", "a regression has no class probabilities", policy.drift_min_effect)
        )
        checks.append(
            _not_applicable("estimated_quality", "no label-free estimate for a regression", policy.quality_margin)
        )
    else:
        checks.append(_score_drift(baseline, candidate, task, policy, level))
        checks.append(_estimated_quality(baseline, candidate, policy, level))
    if paired is None:
        checks.append(_not_applicable("agreement", "no shadow pairs", policy.max_disagreement))
    else:
        checks.append(_agreement(paired, task, policy, level))
    statuses = {check.status for check in checks}
    verdict = "breach" if "breach" in statuses else "wait" if "not_enough_data" in statuses else "pass"
    return StepDecision(int(step), verdict, policy.step_alpha, tuple(checks))


# --------------------------------------------------------------------------------------------------- simulation


def _check_shares(shares: Sequence[float], policy: Policy) -> list[float]:
    values = [float(share) for share in shares]
    if len(values) != policy.steps or not all(0.0 < share < 1.0 for share in values):
        raise ValueError(
            f"shares must hold one candidate traffic share in (0, 1) per step ({policy.steps}), got {list(shares)!r}"
        )
    return values


def _draw(pool: Arm, rows: int, latencies: int, rng: np.random.Generator) -> Arm:
    """An arm resampled from ``pool`` with replacement: ``rows`` rows (values and predicted of the same rows),
    ``latencies`` latencies, and ``round(rows * pool requests / pool rows)`` requests (``rows`` when the pool has
    no counters) whose failures are ``Binomial(requests, pool error rate)``."""
    if pool.rows == 0 or pool.latency_s.size == 0:
        raise ValueError(f"a pool to resample needs rows and latencies, got {pool.rows} rows, {pool.latency_s.size}")
    index = rng.integers(0, pool.rows, size=rows)
    latency = pool.latency_s[rng.integers(0, pool.latency_s.size, size=latencies)]
    requests = max(round(rows * pool.requests / pool.rows), 1) if pool.requests else rows
    rate = pool.failed_requests / pool.requests if pool.requests else 0.0
    failed = int(rng.binomial(requests, rate))
    predicted = None if pool.predicted is None else pool.predicted[index]
    return Arm(latency, requests - failed, failed, pool.values[index], predicted)


def _baseline_size(count: int, share: float) -> int:
    return max(round(count * (1.0 - share) / share), 1)


def _answers(arm: Arm, task: str) -> npt.NDArray[Any]:
    if task == "regression":
        return arm.values[:, 0]
    return _require_predicted(arm, "pool")


def simulate_false_alarms(
    pool: Arm,
    task: str,
    policy: Policy,
    shares: Sequence[float],
    runs: int,
    seed: int = 0,
    paired: bool = False,
) -> dict[str, Any]:
    """The whole rollout's false-alarm rate for an IDENTICAL candidate, by simulation on one pool of real answers.

    Each of ``runs`` rollouts takes ``policy.steps`` looks; at look ``k`` the candidate arm is resampled from
    ``pool`` with exactly ``policy.min_rows`` rows and ``policy.min_requests`` latencies, the baseline arm from the
    same pool with ``(1 - share_k) / share_k`` times as many (see :func:`_draw` for requests and failures), and
    :func:`decide_step` decides; a run stops at its first breach (a false alarm). ``paired=True`` adds shadow pairs
    whose candidate answers equal the baseline's (the candidate arm's rows answered by both). Returns ``runs``,
    ``false_alarms``, ``rate``, ``alpha``, ``by_check`` (breaches per check name) and ``rows_per_run`` (the rows
    each arm draws in a run that takes every look: ``{"candidate": ..., "baseline": ...}``).
    """
    step_shares = _check_shares(shares, policy)
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an int >= 1, got {runs!r}")
    applicable_checks(task, paired, policy)
    rng = np.random.default_rng(seed)
    false_alarms = 0
    by_check: dict[str, int] = {}
    for _ in range(runs):
        for k, share in enumerate(step_shares):
            candidate = _draw(pool, policy.min_rows, policy.min_requests, rng)
            baseline = _draw(
                pool, _baseline_size(policy.min_rows, share), _baseline_size(policy.min_requests, share), rng
            )
            pairs = None
            if paired:
                answers = _answers(candidate, task)
                pairs = Paired(answers, answers.copy())
            decision = decide_step(k, baseline, candidate, task, policy, pairs)
            if decision.verdict == "breach":
                false_alarms += 1
                for check in decision.breaches:
                    by_check[check.name] = by_check.get(check.name, 0) + 1
                break
    return {
        "runs": runs,
        "false_alarms": false_alarms,
        "rate": false_alarms / runs,
        "alpha": policy.alpha,
        "by_check": by_check,
        "rows_per_run": {
            "candidate": policy.min_rows * policy.steps,
            "baseline": sum(_baseline_size(policy.min_rows, share) for share in step_shares),
        },
    }


def rows_to_stop(
    pool: Arm, bad: Arm, task: str, policy: Policy, shares: Sequence[float], seed: int = 0
) -> dict[str, Any]:
    """One simulated rollout of a bad candidate: the candidate arm resampled from ``bad``, the baseline from
    ``pool``, with the sizes of :func:`simulate_false_alarms`. Returns ``stopped_at_step`` (the first look that
    breached, or None), ``candidate_rows`` (the rows the candidate had answered by then: every look's when it was
    never stopped) and ``checks`` (the names that breached at that look)."""
    step_shares = _check_shares(shares, policy)
    applicable_checks(task, False, policy)
    rng = np.random.default_rng(seed)
    answered = 0
    for k, share in enumerate(step_shares):
        candidate = _draw(bad, policy.min_rows, policy.min_requests, rng)
        baseline = _draw(pool, _baseline_size(policy.min_rows, share), _baseline_size(policy.min_requests, share), rng)
        answered += candidate.rows
        decision = decide_step(k, baseline, candidate, task, policy)
        if decision.verdict == "breach":
            return {"stopped_at_step": k, "candidate_rows": answered, "checks": [c.name for c in decision.breaches]}
    return {"stopped_at_step": None, "candidate_rows": answered, "checks": []}
