"""The rollout decision (monitor.rollout_decision): an identical candidate passes and the whole rollout's false-alarm
rate stays within alpha (by simulation on resampled answers); slow, failing, flipped and re-thresholded candidates
breach the check that describes them; differences inside the margins do not; too little data waits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from inferline.monitor.rollout_decision import (
    Arm,
    Check,
    Paired,
    Policy,
    StepDecision,
    decide_step,
    rows_to_stop,
    simulate_false_alarms,
)

SHARES = (0.05, 0.1, 0.25, 0.5)  # the candidate's traffic share at each of the 4 looks


def classifier_arm(
    rng: np.random.Generator,
    rows: int,
    requests: int,
    *,
    beta: tuple[float, float] = (0.1, 3.23),  # mean 0.03: a 3 % positive rate (0.6 % predicted at 0.5), calibrated
    reversed_head: bool = False,
    threshold: float = 0.5,
    slow_s: float = 0.0,
    failed_rate: float = 0.0,
) -> Arm:
    """A binary classifier's step: lognormal latencies around 2 ms (plus ``slow_s``), P(class 1) from a beta."""
    latency = rng.lognormal(math.log(0.002), 0.4, size=requests) + slow_s
    p1 = rng.beta(*beta, size=rows)
    if reversed_head:
        p1 = 1.0 - p1
    values = np.column_stack([1.0 - p1, p1])
    failed = int(rng.binomial(max(rows, requests), failed_rate))
    return Arm(latency, max(rows, requests) - failed, failed, values, (p1 > threshold).astype(np.int64))


def multiclass_arm(rng: np.random.Generator, rows: int, requests: int) -> Arm:
    """Three classes (shares about 60/30/10 %), probabilities from a Dirichlet around them, predicted = argmax."""
    values = rng.dirichlet([3.0, 1.5, 0.5], size=rows)
    latency = rng.lognormal(math.log(0.002), 0.4, size=requests)
    return Arm(latency, max(rows, requests), 0, values, np.argmax(values, axis=1).astype(np.int64))


def regression_arm(rng: np.random.Generator, rows: int, shift: float = 0.0) -> Arm:
    return Arm(rng.lognormal(math.log(0.002), 0.4, size=rows), rows, 0, rng.normal(shift, 1.0, size=(rows, 1)), None)


def statuses(decision: StepDecision) -> dict[str, str]:
    return {check.name: check.status for check in decision.checks}


# --------------------------------------------------------------------------------------------------- identical


def test_identical_candidate_passes_every_check() -> None:
    rng = np.random.default_rng(1)
    baseline, candidate = classifier_arm(rng, 4000, 4000), classifier_arm(rng, 1000, 1000)
    decision = decide_step(3, baseline, candidate, "binary", Policy())
    assert decision.verdict == "pass", [c.message for c in decision.checks]
    applied = [c for c in decision.checks if c.status != "not_applicable"]
    assert [c.status for c in applied] == ["pass"] * 5  # every applicable check ran: the pass is not vacuous
    assert all(c.alpha == pytest.approx(0.05 / 4 / 5) for c in applied)
    assert statuses(decision)["agreement"] == "not_applicable"


@pytest.mark.parametrize(("task", "paired"), [("binary", False), ("binary", True), ("multiclass", False)])
def test_false_alarm_rate_of_a_whole_rollout_is_within_alpha(task: str, paired: bool) -> None:
    rng = np.random.default_rng(2)
    if task == "binary":
        pool = classifier_arm(rng, 20_000, 20_000, failed_rate=0.01)
    else:
        pool = multiclass_arm(rng, 20_000, 20_000)
    policy = Policy(alpha=0.05, steps=4)
    result = simulate_false_alarms(pool, task, policy, SHARES, runs=300, seed=3, paired=paired)
    assert result["runs"] == 300 and result["alpha"] == 0.05
    assert result["rate"] <= 0.05, f"false-alarm rate {result['rate']:.3f} > alpha 0.05: {result}"
    assert result["rate"] == result["false_alarms"] / 300
    assert result["rows_per_run"]["candidate"] == 4 * policy.min_rows
    json.dumps(result, allow_nan=False)


# --------------------------------------------------------------------------------------------------- breaches


def test_a_release_that_sleeps_20_ms_breaches_latency_at_step_0() -> None:
    rng = np.random.default_rng(4)
    policy = Policy()
    baseline = classifier_arm(rng, 4000, 3800)
    slow = classifier_arm(rng, policy.min_rows, policy.min_requests, slow_s=0.020)
    decision = decide_step(0, baseline, slow, "binary", policy)
    assert decision.verdict == "breach"
    assert [c.name for c in decision.breaches] == ["latency_p99"]
    latency = decision.checks[0]
    assert latency.effect is not None and latency.effect > 5
    assert latency.p_value is not None and latency.p_value < latency.alpha
    assert "ms vs" in latency.message and latency.message.endswith("breach")


def test_latency_keeps_its_power_with_small_balanced_arms() -> None:
    """200 vs 200 requests (a 50 % step): a Fisher test on the pooled p99 would see 4 exceedances and could not
    reach the level; the placement test above the current release's p99 sees all 200 of the candidate's."""
    rng = np.random.default_rng(5)
    baseline = classifier_arm(rng, 500, 200)
    slow = classifier_arm(rng, 500, 200, slow_s=0.020)
    check = decide_step(0, baseline, slow, "binary", Policy()).checks[0]
    assert check.status == "breach" and check.p_value is not None and check.p_value < 1e-50, check.message


def test_the_latency_p_value_is_exact() -> None:
    """The placement law against its closed form (all candidates above the baseline's maximum: 1 / C(n_b + n_c,
    n_c)) and against permutations of one identically distributed sample."""
    from scipy.special import comb

    from inferline.monitor.rollout_decision import placement_p_value

    assert placement_p_value(100, 100, 100, 1) == pytest.approx(1 / comb(200, 100), rel=1e-9)
    assert placement_p_value(0, 100, 100, 1) == 1.0
    rng = np.random.default_rng(11)
    rejected = 0
    for _ in range(4_000):
        b, c = rng.random(150), rng.random(50)
        threshold = np.sort(b)[150 - 2]
        rejected += placement_p_value(int((c > threshold).sum()), 50, 150, 2) < 0.05
    assert rejected / 4_000 <= 0.05 + 3 * (0.05 * 0.95 / 4_000) ** 0.5, rejected / 4_000


def test_reversed_head_breaches_prediction_and_score_drift_and_agreement() -> None:
    rng = np.random.default_rng(6)
    baseline = classifier_arm(rng, 4000, 4000)
    shared = classifier_arm(rng, 500, 500)  # the candidate's rows, answered by both releases in shadow
    flipped = Arm(shared.latency_s, shared.ok_requests, 0, shared.values[:, ::-1].copy(), 1 - shared.predicted)
    paired = Paired(shared.predicted, flipped.predicted)
    decision = decide_step(1, baseline, flipped, "binary", Policy(), paired)
    breached = {c.name for c in decision.breaches}
    assert {"prediction_drift", "score_drift", "agreement"} <= breached, [c.message for c in decision.checks]
    assert statuses(decision)["latency_p99"] == "not_applicable"  # a shadow: the canary decides latency
    assert decision.checks[-1].alpha == pytest.approx(0.05 / 4 / 5)  # the pairs add agreement, latency leaves


def test_threshold_change_breaches_prediction_drift_not_score_drift() -> None:
    rng = np.random.default_rng(7)
    baseline = classifier_arm(rng, 4000, 4000, beta=(2, 5))
    lower = classifier_arm(rng, 1000, 1000, beta=(2, 5), threshold=0.2)
    decision = decide_step(0, baseline, lower, "binary", Policy())
    result = statuses(decision)
    assert result["prediction_drift"] == "breach", decision.checks[2].message
    assert result["score_drift"] == "pass", decision.checks[3].message


def test_five_percent_failed_requests_breach_errors() -> None:
    rng = np.random.default_rng(8)
    baseline = classifier_arm(rng, 4000, 4000)
    failing = classifier_arm(rng, 1000, 1000, failed_rate=0.05)
    assert failing.failed_requests > 0 and baseline.failed_requests == 0
    decision = decide_step(0, baseline, failing, "binary", Policy())
    assert [c.name for c in decision.breaches] == ["errors"]


def test_differences_inside_the_margins_do_not_breach() -> None:
    """Latency 5 % slower with 200,000 requests each is significant, but inside the 20 % margin."""
    rng = np.random.default_rng(9)
    latency = rng.lognormal(math.log(0.002), 0.4, size=200_000)
    baseline = Arm(latency, 200_000, 0, np.full((600, 1), 0.5), None)
    candidate = Arm(rng.lognormal(math.log(0.002), 0.4, size=200_000) * 1.05, 200_000, 0, np.full((600, 1), 0.5), None)
    check = decide_step(0, baseline, candidate, "regression", Policy()).checks[0]
    assert check.p_value is not None and check.p_value < check.alpha  # significant ...
    assert check.effect is not None and 1.0 < check.effect < 1.2  # ... but inside the margin
    assert check.status == "pass" and "within the margin" in check.message


# --------------------------------------------------------------------------------------------------- edges


def test_too_few_rows_waits() -> None:
    rng = np.random.default_rng(10)
    decision = decide_step(0, classifier_arm(rng, 100, 50), classifier_arm(rng, 100, 50), "binary", Policy())
    assert decision.verdict == "wait"
    assert {c.status for c in decision.checks} == {"not_enough_data", "not_applicable"}
    assert not decision.breaches


def test_regression_drift_by_ks_and_classification_checks_not_applicable() -> None:
    rng = np.random.default_rng(11)
    baseline = regression_arm(rng, 4000)
    same = decide_step(0, baseline, regression_arm(rng, 1000), "regression", Policy())
    assert same.verdict == "pass", [c.message for c in same.checks]
    shifted = decide_step(0, baseline, regression_arm(rng, 1000, shift=0.5), "regression", Policy())
    result = statuses(shifted)
    assert result["prediction_drift"] == "breach" and "KS D" in shifted.checks[2].message
    assert result["score_drift"] == result["estimated_quality"] == result["agreement"] == "not_applicable"
    assert shifted.checks[2].alpha == pytest.approx(0.05 / 4 / 3)


def test_regression_shadow_pairs_agree_within_tolerance() -> None:
    rng = np.random.default_rng(12)
    answers = rng.normal(size=1000)
    arm = regression_arm(rng, 1000)
    close = decide_step(0, arm, arm, "regression", Policy(), Paired(answers, answers * (1 + 1e-5)))
    assert statuses(close)["agreement"] == "pass"
    far = decide_step(0, arm, arm, "regression", Policy(), Paired(answers, answers + 0.1))
    assert statuses(far)["agreement"] == "breach"


@pytest.mark.parametrize("alpha", [0, 1.5])
def test_policy_rejects_alpha_outside_0_1(alpha: float) -> None:
    with pytest.raises(ValueError, match=r"Policy\.alpha must be a number in \(0, 1\), got"):
        Policy(alpha=alpha)


def test_decide_step_rejects_a_step_beyond_the_policy_and_an_unknown_task() -> None:
    rng = np.random.default_rng(13)
    arm = classifier_arm(rng, 10, 10)
    with pytest.raises(ValueError, match=r"step must be a look index in 0\.\.3"):
        decide_step(4, arm, arm, "binary", Policy(steps=4))
    with pytest.raises(ValueError, match="task must be one of"):
        decide_step(0, arm, arm, "ranking", Policy())


def test_degenerate_arms_give_a_defined_json_safe_result() -> None:
    """Constant latencies of 0 s and constant probabilities: no NaN, no exception, and as_dict is strict JSON."""
    values = np.tile([0.7, 0.3], (600, 1))
    arm = Arm(np.zeros(600), 600, 0, values, np.zeros(600, dtype=np.int64))
    decision = decide_step(0, arm, arm, "binary", Policy())
    assert decision.verdict == "pass", [c.message for c in decision.checks]
    text = json.dumps(decision.as_dict(), allow_nan=False)
    assert json.loads(text)["checks"][0]["name"] == "latency_p99"
    empty = Arm(np.zeros(0), 0, 0, np.zeros((0, 2)), np.zeros(0, dtype=np.int64))
    assert decide_step(0, empty, empty, "multiclass", Policy()).verdict == "wait"


def test_as_dict_maps_numpy_and_infinities_to_json() -> None:
    check = Check("latency_p99", "breach", np.float64(1e-9), 0.001, math.inf, 0.2, {"p99_ms": np.float64(3.0)}, {}, "x")
    data = check.as_dict()
    assert data["effect"] is None and type(data["p_value"]) is float and type(data["baseline"]["p99_ms"]) is float
    json.dumps(data, allow_nan=False)


def test_rows_to_stop_for_a_slow_candidate_is_step_0() -> None:
    rng = np.random.default_rng(14)
    policy = Policy()
    pool, slow = classifier_arm(rng, 5000, 5000), classifier_arm(rng, 5000, 5000, slow_s=0.020)
    result = rows_to_stop(pool, slow, "binary", policy, SHARES, seed=15)
    assert result["stopped_at_step"] == 0 and result["candidate_rows"] == policy.min_rows
    assert "latency_p99" in result["checks"]
    never = rows_to_stop(pool, pool, "binary", policy, SHARES, seed=16)
    assert never["stopped_at_step"] is None and never["candidate_rows"] == 4 * policy.min_rows
