"""Weak learners: their pickle-free exports predict exactly what the fitted estimators do."""

from __future__ import annotations

import numpy as np
import pytest

from speechqe.errors import ConfigError
from speechqe.predictors.weak.learners import (
    KINDS, LearnerSpec, load_learner, make_learner, save_learner,
)


def _data(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 10, d) + rng.uniform(-5, 5, d)
    y = 3 + np.tanh(X[:, 0] / 5) + 0.3 * np.sin(X[:, 1]) + 0.1 * rng.standard_normal(n)
    return X, y


@pytest.mark.parametrize("kind", KINDS)
def test_export_restores_identical_predictions(kind, tmp_path):
    X, y = _data()
    params = {"n_estimators": 20} if kind in ("rf", "lightgbm") else {}
    learner = make_learner(LearnerSpec(kind, params)).fit(X[:90], y[:90])
    Xt = X[90:]
    sk = learner._sk
    reference = sk.predict(learner._scale(Xt))
    np.testing.assert_allclose(learner.predict(Xt), reference, rtol=1e-9, atol=1e-9)
    files = save_learner(learner, tmp_path, "m")
    assert all((tmp_path / f).is_file() for f in files)
    again = load_learner(tmp_path, "m")
    np.testing.assert_allclose(again.predict(Xt), reference, rtol=1e-9, atol=1e-9)
    # the learners learn: better than predicting the mean on held-out rows
    assert np.mean((again.predict(Xt) - y[90:]) ** 2) < np.var(y[90:])


def test_bad_specs():
    with pytest.raises(ConfigError, match="unknown learner"):
        LearnerSpec("xgboost")
    with pytest.raises(ConfigError, match="unknown parameter"):
        LearnerSpec("ridge", {"alpah": 1.0})
