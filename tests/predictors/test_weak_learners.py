"""Learners: skops/LightGBM files restore identical predictions; the allow-list and the probe
check refuse what they must; the small-data behaviour (scaled SVR, bounded GP, inner grouped
search, degenerate fits) is what the docs say."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from speechqe.config import validate
from speechqe.errors import ConfigError
from speechqe.predictors.config import LearnerSpec
from speechqe.predictors.weak.learners import KINDS, Learner


def _data(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 10, d) + rng.uniform(-5, 5, d)
    y = 3 + np.tanh(X[:, 0] / 5) + 0.3 * np.sin(X[:, 1]) + 0.1 * rng.standard_normal(n)
    groups = np.arange(n) // 6
    return X, y, groups


def _spec(kind, **kw):
    params = {"n_estimators": 20} if kind in ("rf", "lightgbm") else {}
    return LearnerSpec(kind=kind, params={**params, **kw.pop("params", {})}, **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_files_restore_identical_predictions(kind, tmp_path):
    X, y, g = _data()
    learner = Learner(_spec(kind)).fit(X[:90], y[:90], g[:90])
    Xt = X[90:]
    before = learner.predict(Xt)
    files = learner.save(tmp_path, "m", X[:4])
    assert all((tmp_path / f).is_file() for f in files)
    assert {f.rsplit(".", 1)[-1] for f in files} <= {"json", "skops", "txt"}
    again = Learner.load(tmp_path, "m")
    np.testing.assert_array_equal(again.predict(Xt), before)
    # the learners learn: better than predicting the mean on held-out rows
    if kind != "nnls":  # a linear non-negative fit cannot use tanh/sin of these columns much
        assert np.mean((before - y[90:]) ** 2) < np.var(y[90:])


def test_probe_rows_catch_a_library_that_predicts_differently(tmp_path):
    X, y, g = _data()
    Learner(_spec("ridge")).fit(X, y, g).save(tmp_path, "m", X[:3])
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["probe_y"][1] += 0.01  # as if this scikit-learn predicted otherwise
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="predicts differently.*Retrain"):
        Learner.load(tmp_path, "m")


def test_types_outside_the_allow_list_are_refused(tmp_path):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    X, y, g = _data()
    Learner(_spec("ridge")).fit(X, y, g).save(tmp_path, "m", X[:0])
    # a file whose object graph holds a function reference (what a malicious file would use)
    sio.dump(FunctionTransformer(func=os.system), tmp_path / "m.skops")
    with pytest.raises(ConfigError, match="outside speechqe's allow-list"):
        Learner.load(tmp_path, "m")
    (tmp_path / "m.skops").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable skops file"):
        Learner.load(tmp_path, "m")
    assert not zipfile.is_zipfile(tmp_path / "m.skops")


def test_svr_and_gp_suit_any_score_range():
    """C, epsilon and the GP noise are in units of the label's standard deviation: labels on
    0-100 give the same predictions, rescaled, as labels on 1-5."""
    X, y, g = _data()
    for kind in ("svr", "gp"):
        spec = _spec(kind, tune={})
        small = Learner(spec).fit(X[:90], y[:90], g[:90]).predict(X[90:])
        big = Learner(spec).fit(X[:90], 25 * (y[:90] - 1), g[:90]).predict(X[90:])
        np.testing.assert_allclose(big, 25 * (small - 1), rtol=1e-3, atol=1e-3 * 25)


def test_gp_length_scale_stays_in_its_bounds_and_keeps_a_noise_term():
    X, y, g = _data(n=80, d=40)
    m = Learner(_spec("gp")).fit(X, y, g)
    kernel = m.model.named_steps["model"].kernel_
    params = kernel.get_params()
    ls = params["k1__k2__length_scale"]
    lo, hi = params["k1__k2__length_scale_bounds"]
    assert lo <= ls <= hi and hi / lo == pytest.approx(400.0)
    assert params["k2__noise_level"] >= 0.01


def test_hyper_parameters_are_chosen_by_grouped_inner_search():
    X, y, g = _data()
    m = Learner(_spec("ridge")).fit(X, y, g)
    assert set(m.best_params) == {"alpha"}
    assert m.best_params["alpha"] in LearnerSpec(kind="ridge").grid()["alpha"]
    m = Learner(_spec("knn", tune={"n_neighbors": [2, 500]})).fit(X, y, g)
    assert m.best_params["n_neighbors"] <= 120  # capped at the inner training size
    # a value fixed in params is not searched
    assert "alpha" not in LearnerSpec(kind="ridge", params={"alpha": 3.0}).grid()


def test_constant_fit_is_flagged_degenerate():
    X, y, g = _data()
    m = Learner(_spec("ridge", tune={})).fit(np.ones_like(X), y, g)
    assert m.degenerate.startswith("constant")
    assert not Learner(_spec("ridge", tune={})).fit(X, y, g).degenerate


def test_bad_specs_name_the_key():
    with pytest.raises(ConfigError, match="kind: Input should be"):
        validate(LearnerSpec, {"kind": "xgboost"}, "cfg")
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['alpah'\]"):
        validate(LearnerSpec, {"kind": "ridge", "params": {"alpah": 1.0}}, "cfg")
    with pytest.raises(ConfigError, match="unknown key 'pcaa'"):
        validate(LearnerSpec, {"kind": "ridge", "pcaa": 3}, "cfg")
    with pytest.raises(ConfigError, match="tune: unknown parameter"):
        validate(LearnerSpec, {"kind": "svr", "tune": {"gama": [1]}}, "cfg")
