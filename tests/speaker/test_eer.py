"""Equal error rate: hand-computed cases and scikit-learn's ROC curve."""

from __future__ import annotations

import numpy as np
import pytest

from speechqe.speaker import cosine_similarity, eer, trial_scores


def test_hand_computed_crossing_on_a_roc_point():
    # sorted: .9 T, .8 T, .7 N, .4 T, .3 N, .2 N. Accepting >= .7: FAR 1/3, FRR 1/3.
    r = eer([0.9, 0.8, 0.4, 0.7, 0.3, 0.2], [1, 1, 1, 0, 0, 0])
    assert r.eer == pytest.approx(1 / 3) and r.threshold == 0.7
    assert (r.n_target, r.n_nontarget) == (3, 3)


def test_hand_computed_crossing_between_points():
    # a tie at .5 (one target, one non-target) joins (FAR 0, FRR 1/2) to (FAR 1/2, FRR 0):
    # the line crosses FAR = FRR at 1/4
    r = eer([0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0])
    assert r.eer == pytest.approx(0.25) and r.threshold == 0.5


def test_perfect_and_inverted_separation():
    assert eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]).eer == 0.0
    assert eer([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]).eer == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_roc_curve(seed):
    from scipy.optimize import brentq
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.3
    s = np.round(rng.normal(size=300) + 1.2 * y, 1)  # rounding makes ties
    fpr, tpr, _ = roc_curve(y, s)
    expected = brentq(lambda x: 1.0 - x - np.interp(x, fpr, tpr), 0.0, 1.0)
    assert eer(s, y).eer == pytest.approx(expected, abs=1e-9)


def test_bad_trials_are_refused():
    with pytest.raises(ValueError, match="both"):
        eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        eer([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="finite"):
        eer([np.nan, 0.2], [1, 0])


def test_trials_and_cosine():
    e = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    s, y = trial_scores(e, ["a", "a", "b"])
    np.testing.assert_allclose(s, [1.0, 0.0, 0.0])
    assert y.tolist() == [True, False, False]
    assert cosine_similarity([1, 1], [1, 0]) == pytest.approx(np.sqrt(0.5))
    with pytest.raises(ValueError):
        cosine_similarity([0, 0], [1, 0])
