"""Label-free performance estimates (issue 18, CBPE): on windows whose scores are calibrated, the estimates from
the scores alone land within 0.03 of what the labels give, undrifted and drifted; on miscalibrated scores the
calibration error says so."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from inferline.monitor.performance import calibration_error, estimate_binary, realized_binary


def _window(rng: np.random.Generator, a: float, b: float, n: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    scores = rng.beta(a, b, n)
    return scores, rng.random(n) < scores  # labels drawn from the scores: calibrated by construction


@pytest.mark.parametrize(("a", "b"), [(1.0, 4.0), (2.0, 2.0), (0.5, 0.5)])  # undrifted, then two drifted score mixes
def test_estimates_from_calibrated_scores_match_the_labels(a: float, b: float) -> None:
    rng = np.random.default_rng(7)
    for _ in range(10):  # windows of 50,000 rows: precision over ~3,000 predicted positives at the rarest
        scores, labels = _window(rng, a, b)
        estimate, realized = estimate_binary(scores, 0.5), realized_binary(scores, labels, 0.5)
        assert abs(estimate.roc_auc - realized.roc_auc) < 0.03
        assert abs(estimate.precision - realized.precision) < 0.03
        assert abs(estimate.recall - realized.recall) < 0.03
        assert estimate.tp + estimate.fp + estimate.fn + estimate.tn == pytest.approx(len(scores))
        assert calibration_error(scores, labels) < 0.03


def test_realized_figures_agree_with_scipy_and_ties_are_handled() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(2000), 2)  # many ties
    labels = rng.random(2000) < scores
    realized = realized_binary(scores, labels)
    u = scipy.stats.mannwhitneyu(scores[labels], scores[~labels]).statistic
    assert realized.roc_auc == pytest.approx(u / (labels.sum() * (~labels).sum()))
    assert realized.tp == float(((scores >= 0.5) & labels).sum())
    # constant scores: no ranking information, an estimated AUC of 0.5
    assert estimate_binary(np.full(100, 0.3)).roc_auc == pytest.approx(0.5)


def test_miscalibrated_scores_show_in_the_calibration_error() -> None:
    rng = np.random.default_rng(11)
    scores, labels = _window(rng, 1.0, 4.0)
    inflated = np.sqrt(scores)  # the same ranking, overconfident about positives
    assert calibration_error(inflated, labels) > 0.1
    assert abs(estimate_binary(inflated).precision - realized_binary(inflated, labels).precision) > 0.1
    with pytest.raises(ValueError, match="probabilities"):
        estimate_binary([0.2, 1.5])
