"""Label-free performance estimates (issue 18, CBPE): on windows whose scores are calibrated, the estimates from
the scores alone land within 0.03 of what the labels give, undrifted and drifted; on miscalibrated scores the
calibration error says so."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from inferline.core.calibration import calibration_error, classwise_calibration_error
from inferline.monitor.performance import estimate_binary, realized_binary, window_performance


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


def test_multiclass_estimates_are_one_vs_rest_macro_averages() -> None:
    """Three classes, probabilities calibrated by construction (labels drawn from them), under two class mixes: the
    macro estimates land within 0.03 of the macro realized figures, and each is the mean of its per-class ones."""
    rng = np.random.default_rng(13)
    for alpha in ([1.0, 1.0, 1.0], [4.0, 1.0, 0.5]):
        p = rng.dirichlet(alpha, 60_000)
        labels = (rng.random(len(p))[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
        predicted = p.argmax(axis=1)
        window = window_performance(p, predicted, labels)
        estimated, realized = window["estimated"], window["realized"]
        for name in ("roc_auc", "precision", "recall"):
            assert abs(estimated[name] - realized[name]) < 0.03, (alpha, name, estimated, realized)
        per_class = [estimate_binary(p[:, k], predicted=predicted == k) for k in range(3)]
        assert estimated["precision"] == pytest.approx(np.mean([e.precision for e in per_class]))
        assert classwise_calibration_error(p, labels) < 0.01
    # binary: the positive class alone, and realized figures only from enough labels with both classes present
    score = rng.random(200)
    p = np.stack([1 - score, score], axis=1)
    assert window_performance(p, p[:, 1] >= 0.5, np.ones(200))["realized"] is None
    assert window_performance(p[:20], p[:20, 1] >= 0.5, np.arange(20) % 2)["realized"] is None
    window = window_performance(p, p[:, 1] >= 0.5, rng.random(200) < p[:, 1])
    assert window["estimated"]["roc_auc"] == pytest.approx(estimate_binary(p[:, 1]).roc_auc)
    assert window["realized"] is not None and window["realized_rows"] == window["rows"] == 200
