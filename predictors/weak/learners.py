"""Weak learners (UTMOS's "basic machine-learning methods") with pickle-free persistence.

Each learner fits with scikit-learn or LightGBM and exports what prediction needs as JSON
parameters plus numpy arrays (``.npz`` read with ``allow_pickle=False``) or, for LightGBM, its
own text model format. Nothing is ever unpickled on load:

* ``ridge``: coefficients and intercept; prediction ``X @ coef + b``.
* ``svr``: support vectors, dual coefficients, intercept and the RBF ``gamma``; prediction
  ``sum_i a_i exp(-gamma |x - s_i|^2) + b``, as libsvm computes it.
* ``knn``: the training set (a kNN model *is* its training set); restored by refitting
  ``KNeighborsRegressor``, which only stores it, so predictions are identical.
* ``rf``: every tree's node arrays (children, feature, threshold, leaf value); prediction by
  traversing them with scikit-learn's rule (``float32(x[f]) <= threshold`` goes left).
* ``gp``: the training inputs, ``alpha_ = K^-1 y`` and the fitted kernel hyper-parameters;
  the kernel is rebuilt from its fixed structure and ``theta``; prediction
  ``y_std * k(x, X) @ alpha + y_mean`` (the posterior mean, as scikit-learn computes it).
* ``lightgbm``: ``Booster.model_to_string()`` text, loaded with ``Booster(model_str=...)``.

Each export is checked against the fitted estimator's own ``predict`` in the tests.
Distance- and scale-sensitive learners (ridge, svr, knn, gp) standardise features first; the
scaler's mean and scale are exported with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from speechqe.errors import ConfigError

KINDS = ("ridge", "svr", "knn", "rf", "gp", "lightgbm")

#: Defaults of each learner's parameters (the only place they are set).
DEFAULTS: dict[str, dict[str, Any]] = {
    "ridge": {"alpha": 1.0},
    "svr": {"C": 1.0, "epsilon": 0.1, "gamma": "scale"},
    "knn": {"n_neighbors": 10, "weights": "distance"},
    "rf": {"n_estimators": 200, "max_features": 0.33, "min_samples_leaf": 2, "random_state": 0},
    "gp": {"length_scale": 10.0, "noise_level": 0.1, "n_restarts_optimizer": 0, "random_state": 0},
    "lightgbm": {"n_estimators": 300, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 5,
                 "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.5, "random_state": 0,
                 "n_jobs": 1, "verbose": -1},
}


@dataclass(frozen=True)
class LearnerSpec:
    """A weak learner in a config: ``kind`` and parameters overriding :data:`DEFAULTS`."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown learner '{self.kind}'; known: {', '.join(KINDS)}")
        unknown = set(self.params) - set(DEFAULTS[self.kind])
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {sorted(unknown)} for learner '{self.kind}' "
                f"(known: {sorted(DEFAULTS[self.kind])})"
            )

    def resolved(self) -> dict[str, Any]:
        return {**DEFAULTS[self.kind], **self.params}


class Learner:
    """Base class: ``fit``, ``predict``, ``export`` -> ``(meta, arrays, text)``, ``restore``."""

    kind: ClassVar[str]
    scaled: ClassVar[bool] = True

    def __init__(self, params: dict[str, Any]):
        self.params = dict(params)
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    # --- scaling ----------------------------------------------------------------------------
    def _fit_scaler(self, X: np.ndarray) -> np.ndarray:
        if not self.scaled:
            return X
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        return self._scale(X)

    def _scale(self, X: np.ndarray) -> np.ndarray:
        if not self.scaled:
            return X
        return (X - self.mean_) / self.scale_

    # --- API --------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> "Learner":
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (n, d) aligned with y; got {X.shape}, {y.shape}")
        self._fit(self._fit_scaler(X), y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return np.asarray(self._predict(self._scale(X)), dtype=np.float64).reshape(-1)

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray], str | None]:
        meta = {"kind": self.kind, "params": self.params}
        arrays = {}
        if self.scaled:
            arrays = {"scaler_mean": self.mean_, "scaler_scale": self.scale_}
        m2, a2, text = self._export()
        meta.update(m2)
        arrays.update(a2)
        return meta, arrays, text

    @classmethod
    def restore(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], text: str | None) -> "Learner":
        kind = meta["kind"]
        sub = _CLASSES[kind]
        obj = sub(meta["params"])
        if sub.scaled:
            obj.mean_, obj.scale_ = arrays["scaler_mean"], arrays["scaler_scale"]
        obj._restore(meta, arrays, text)
        return obj

    # --- to implement -----------------------------------------------------------------------
    def _fit(self, X, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, X):  # pragma: no cover - abstract
        raise NotImplementedError

    def _export(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _restore(self, meta, arrays, text):  # pragma: no cover - abstract
        raise NotImplementedError


class RidgeLearner(Learner):
    kind = "ridge"

    def _fit(self, X, y):
        from sklearn.linear_model import Ridge

        m = Ridge(alpha=float(self.params["alpha"])).fit(X, y)
        self.coef_, self.intercept_ = np.asarray(m.coef_, np.float64), float(m.intercept_)
        self._sk = m

    def _predict(self, X):
        return X @ self.coef_ + self.intercept_

    def _export(self):
        return {"intercept": self.intercept_}, {"coef": self.coef_}, None

    def _restore(self, meta, arrays, text):
        self.coef_, self.intercept_ = arrays["coef"], float(meta["intercept"])


class SVRLearner(Learner):
    kind = "svr"

    def _fit(self, X, y):
        from sklearn.svm import SVR

        p = self.params
        m = SVR(kernel="rbf", C=float(p["C"]), epsilon=float(p["epsilon"]), gamma=p["gamma"]).fit(X, y)
        self.sv_ = np.asarray(m.support_vectors_, np.float64)
        self.dual_ = np.asarray(m.dual_coef_, np.float64).reshape(-1)
        self.intercept_ = float(np.asarray(m.intercept_).reshape(-1)[0])
        self.gamma_ = float(m._gamma)
        self._sk = m

    def _predict(self, X):
        d2 = (X**2).sum(1)[:, None] + (self.sv_**2).sum(1)[None, :] - 2.0 * X @ self.sv_.T
        return np.exp(-self.gamma_ * np.maximum(d2, 0.0)) @ self.dual_ + self.intercept_

    def _export(self):
        return ({"intercept": self.intercept_, "gamma": self.gamma_},
                {"support_vectors": self.sv_, "dual_coef": self.dual_}, None)

    def _restore(self, meta, arrays, text):
        self.sv_, self.dual_ = arrays["support_vectors"], arrays["dual_coef"]
        self.intercept_, self.gamma_ = float(meta["intercept"]), float(meta["gamma"])


class KNNLearner(Learner):
    kind = "knn"

    def _make(self, n):
        from sklearn.neighbors import KNeighborsRegressor

        k = min(int(self.params["n_neighbors"]), n)
        return KNeighborsRegressor(n_neighbors=k, weights=self.params["weights"])

    def _fit(self, X, y):
        self.X_, self.y_ = X, y
        self._sk = self._make(len(X)).fit(X, y)

    def _predict(self, X):
        return self._sk.predict(X)

    def _export(self):
        return {}, {"X": self.X_, "y": self.y_}, None

    def _restore(self, meta, arrays, text):
        self._fit(arrays["X"], arrays["y"])


class RFLearner(Learner):
    kind = "rf"
    scaled = False

    def _fit(self, X, y):
        from sklearn.ensemble import RandomForestRegressor

        p = self.params
        m = RandomForestRegressor(
            n_estimators=int(p["n_estimators"]), max_features=p["max_features"],
            min_samples_leaf=int(p["min_samples_leaf"]), random_state=p["random_state"], n_jobs=1,
        ).fit(X, y)
        self.trees_ = [
            (t.tree_.children_left.astype(np.int64), t.tree_.children_right.astype(np.int64),
             t.tree_.feature.astype(np.int64), t.tree_.threshold.astype(np.float64),
             t.tree_.value[:, 0, 0].astype(np.float64))
            for t in m.estimators_
        ]
        self._sk = m

    def _predict(self, X):
        X32 = X.astype(np.float32).astype(np.float64)  # scikit-learn trees compare float32 inputs
        rows = np.arange(len(X))
        total = np.zeros(len(X))
        for left, right, feat, thr, val in self.trees_:
            node = np.zeros(len(X), dtype=np.int64)
            while True:
                active = left[node] != -1
                if not active.any():
                    break
                f = feat[node[active]]
                go_left = X32[rows[active], f] <= thr[node[active]]
                node[active] = np.where(go_left, left[node[active]], right[node[active]])
            total += val[node]
        return total / len(self.trees_)

    def _export(self):
        arrays = {}
        for i, (l, r, f, t, v) in enumerate(self.trees_):
            arrays.update({f"t{i}_left": l, f"t{i}_right": r, f"t{i}_feature": f,
                           f"t{i}_threshold": t, f"t{i}_value": v})
        return {"n_trees": len(self.trees_)}, arrays, None

    def _restore(self, meta, arrays, text):
        self.trees_ = [
            tuple(arrays[f"t{i}_{k}"] for k in ("left", "right", "feature", "threshold", "value"))
            for i in range(int(meta["n_trees"]))
        ]


class GPLearner(Learner):
    kind = "gp"

    def _kernel(self):
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        p = self.params
        return ConstantKernel(1.0) * RBF(length_scale=float(p["length_scale"])) + WhiteKernel(
            noise_level=float(p["noise_level"])
        )

    def _fit(self, X, y):
        from sklearn.gaussian_process import GaussianProcessRegressor

        import warnings

        from sklearn.exceptions import ConvergenceWarning

        p = self.params
        gp = GaussianProcessRegressor(
            kernel=self._kernel(), normalize_y=True,
            n_restarts_optimizer=int(p["n_restarts_optimizer"]), random_state=p["random_state"],
        )
        with warnings.catch_warnings():
            # A hyper-parameter at its bound (e.g. a near noise-free fit) is a fine optimum.
            warnings.simplefilter("ignore", ConvergenceWarning)
            m = gp.fit(X, y)
        self.theta_ = np.asarray(m.kernel_.theta, np.float64)
        self.X_ = np.asarray(m.X_train_, np.float64)
        self.alpha_ = np.asarray(m.alpha_, np.float64).reshape(-1)
        self.y_mean_ = float(np.asarray(m._y_train_mean).reshape(-1)[0])
        self.y_std_ = float(np.asarray(m._y_train_std).reshape(-1)[0])
        self.k_ = m.kernel_
        self._sk = m

    def _predict(self, X):
        return self.y_std_ * (self.k_(X, self.X_) @ self.alpha_) + self.y_mean_

    def _export(self):
        return ({"y_mean": self.y_mean_, "y_std": self.y_std_},
                {"theta": self.theta_, "X": self.X_, "alpha": self.alpha_}, None)

    def _restore(self, meta, arrays, text):
        self.theta_, self.X_, self.alpha_ = arrays["theta"], arrays["X"], arrays["alpha"]
        self.y_mean_, self.y_std_ = float(meta["y_mean"]), float(meta["y_std"])
        self.k_ = self._kernel().clone_with_theta(self.theta_)


class LightGBMLearner(Learner):
    kind = "lightgbm"
    scaled = False

    def _fit(self, X, y):
        import lightgbm as lgb

        m = lgb.LGBMRegressor(**self.params).fit(X, y)
        self.booster_ = m.booster_
        self._sk = m

    def _predict(self, X):
        return self.booster_.predict(X)

    def _export(self):
        return {}, {}, self.booster_.model_to_string()

    def _restore(self, meta, arrays, text):
        import lightgbm as lgb

        if not text:
            raise ConfigError("LightGBM learner without its model text")
        self.booster_ = lgb.Booster(model_str=text)


_CLASSES: dict[str, type[Learner]] = {
    c.kind: c for c in (RidgeLearner, SVRLearner, KNNLearner, RFLearner, GPLearner, LightGBMLearner)
}


def make_learner(spec: LearnerSpec) -> Learner:
    return _CLASSES[spec.kind](spec.resolved())


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------
def save_learner(learner: Learner, folder, name: str) -> list[str]:
    """Write ``name.json`` (+ ``name.npz``, ``name.lgb.txt``); returns the file names."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta, arrays, text = learner.export()
    files = [f"{name}.json"]
    if arrays:
        np.savez(folder / f"{name}.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        files.append(f"{name}.npz")
    if text is not None:
        (folder / f"{name}.lgb.txt").write_text(text, encoding="utf-8")
        files.append(f"{name}.lgb.txt")
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=1, default=_json_default), encoding="utf-8")
    return files


def load_learner(folder, name: str) -> Learner:
    import json
    from pathlib import Path

    folder = Path(folder)
    meta = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
    arrays: dict[str, np.ndarray] = {}
    npz = folder / f"{name}.npz"
    if npz.is_file():
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    txt = folder / f"{name}.lgb.txt"
    text = txt.read_text(encoding="utf-8") if txt.is_file() else None
    return Learner.restore(meta, arrays, text)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")
