"""Learners for ~100-10000 items and 4-1000-dimensional features (UTMOS's "basic machine-learning
methods", made to behave on small listening tests), persisted without pickle.

Every learner is a scikit-learn estimator built from a :class:`~speechqe.predictors.config.
LearnerSpec`:

* inputs are standardised, then optionally reduced by PCA (``pca``), inside the learner, so
  each fit learns its scaling from its own training rows only;
* ``svr`` and ``gp`` standardise the target too, so ``C``, ``epsilon`` and the noise level are
  in units of the label's standard deviation and suit any score range (1-5, 0-100);
* ``gp`` has a noise term and bounded length scales (relative to the square root of the input
  dimension, the typical distance between standardised points), so it cannot collapse into an
  interpolator or a constant unnoticed;
* hyper-parameters (``tune``) are chosen by grouped K-fold inside the fit
  (``GridSearchCV`` with ``GroupKFold`` on the fit's own groups), never on held-out data;
* a fit whose training predictions are constant is flagged :attr:`Learner.degenerate`.

Persistence: scikit-learn estimators are written with ``skops.io`` (a zip of JSON and numpy
arrays; loading instantiates only types on an explicit allow-list, :data:`TRUSTED_TYPES`, plus
skops' defaults of scikit-learn's own estimators, and is checked before anything is built);
LightGBM boosters are written in LightGBM's own text model format. Every saved learner also
stores probe rows and their predictions, re-predicted on load: a scikit-learn or LightGBM
version that predicts differently from the one that trained the bundle is refused, never
used silently. We chose skops over re-implementing the estimators' prediction from their
internals (the previous format): skops is made for exactly this, covers pipelines, PCA and the
hyper-parameter search result without code of ours, and the probe check catches the one risk
left (a library change between versions).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from speechqe.errors import ConfigError

from ..config import LEARNER_KINDS, LearnerSpec

KINDS = LEARNER_KINDS

#: Types a saved learner may contain beyond skops' default trust (scikit-learn estimators,
#: numpy and builtins): the Gaussian-process kernels and the decision-tree arrays.
TRUSTED_TYPES = (
    "sklearn.gaussian_process.kernels.ConstantKernel",
    "sklearn.gaussian_process.kernels.Product",
    "sklearn.gaussian_process.kernels.RBF",
    "sklearn.gaussian_process.kernels.Sum",
    "sklearn.gaussian_process.kernels.WhiteKernel",
    "sklearn.tree._tree.Tree",
)

#: Relative tolerance of the probe check on load.
PROBE_RTOL = 1e-6


class Learner:
    """A fitted (or restored) learner.

    Attributes:
        spec: the configuration.
        best_params: hyper-parameters chosen by the inner grouped search (``{}``: none).
        degenerate: why the fit is useless (``""`` when it is not): constant predictions.
    """

    def __init__(self, spec: LearnerSpec):
        self.spec = spec
        self.model: Any = None
        self.best_params: dict[str, Any] = {}
        self.degenerate = ""

    @property
    def kind(self) -> str:
        return self.spec.kind

    # --- fitting ------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray, groups: Sequence | None = None) -> "Learner":
        """Fit on ``X`` ``(n, d)`` and labels ``y`` ``(n,)``; ``groups`` (length ``n``) are the
        units of the inner hyper-parameter search (default: every row its own group)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (n, d) aligned with y; got {X.shape}, {y.shape}")
        if not (np.isfinite(X).all() and np.isfinite(y).all()):
            raise ValueError("features and labels must be finite")
        groups = np.asarray(groups if groups is not None else np.arange(len(y)))
        n_groups = len(np.unique(groups))
        n_fit = len(y)
        if self.spec.grid() and n_groups >= 3:
            # the search fits on its inner training folds: size PCA (and kNN) for the smallest
            from sklearn.model_selection import GroupKFold

            k = min(3, n_groups)
            n_fit = min(len(tr) for tr, _ in GroupKFold(n_splits=k).split(X, y, groups))
        est = _build(self.spec, n=n_fit, d=X.shape[1])
        grid = _grid(self.spec, est, n_train=len(y), n_groups=n_groups)
        with warnings.catch_warnings():
            # A GP hyper-parameter at its bound is a valid optimum; LightGBM's "no further
            # splits" on tiny folds is its normal stop.
            warnings.simplefilter("ignore")
            if grid:
                from sklearn.model_selection import GridSearchCV, GroupKFold

                k = min(3, len(np.unique(groups)))
                search = GridSearchCV(est, grid, cv=GroupKFold(n_splits=k),
                                      scoring="neg_mean_squared_error", refit=True, n_jobs=1)
                search.fit(X, y, groups=groups)
                self.model = search.best_estimator_
                self.best_params = {k.split("__")[-1]: _plain(v) for k, v in search.best_params_.items()}
            else:
                self.model = est.fit(X, y)
        fitted = self.predict(X)
        if np.std(fitted) <= 1e-9 * max(1.0, float(np.std(y))):
            self.degenerate = "constant predictions on its own training data"
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``(n, d)`` -> ``(n,)`` predictions on the label scale."""
        X = np.asarray(X, dtype=np.float64)
        out = self.model.predict(X)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    # --- files --------------------------------------------------------------------------------
    def save(self, folder: str | Path, name: str, probe: np.ndarray) -> list[str]:
        """Write ``name.json`` and ``name.skops`` (or ``name.lgb.txt``); ``probe`` ``(k, d)``:
        rows whose predictions are stored and checked on load. Returns the file names."""
        import sklearn

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        probe = np.asarray(probe, dtype=np.float64)
        meta = {"spec": self.spec.model_dump(mode="json"), "best_params": self.best_params,
                "degenerate": self.degenerate, "probe_X": probe.tolist(),
                "probe_y": self.predict(probe).tolist() if len(probe) else []}
        if self.kind == "lightgbm":
            import lightgbm

            meta["library"] = {"lightgbm": lightgbm.__version__}
            model_file = f"{name}.lgb.txt"
            booster = getattr(self.model, "booster_", self.model)
            (folder / model_file).write_text(booster.model_to_string(), encoding="utf-8")
        else:
            import skops
            import skops.io as sio

            meta["library"] = {"scikit-learn": sklearn.__version__, "skops": skops.__version__}
            model_file = f"{name}.skops"
            sio.dump(self.model, folder / model_file)
        (folder / f"{name}.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return [f"{name}.json", model_file]

    @classmethod
    def load(cls, folder: str | Path, name: str) -> "Learner":
        """Read a learner written by :meth:`save`.

        Raises:
            ConfigError: a missing file, a type outside the allow-list, or predictions on the
                stored probe rows that differ from the ones recorded at training (another
                scikit-learn / LightGBM version behaving differently: retrain the bundle).
        """
        folder = Path(folder)
        meta_path = folder / f"{name}.json"
        if not meta_path.is_file():
            raise ConfigError(f"learner file missing: {meta_path}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        from speechqe.config import validate

        obj = cls(validate(LearnerSpec, meta["spec"], str(meta_path)))
        obj.best_params = dict(meta.get("best_params") or {})
        obj.degenerate = meta.get("degenerate", "")
        if obj.kind == "lightgbm":
            import lightgbm as lgb

            path = folder / f"{name}.lgb.txt"
            if not path.is_file():
                raise ConfigError(f"learner file missing: {path}")
            obj.model = lgb.Booster(model_str=path.read_text(encoding="utf-8"))
        else:
            obj.model = _load_skops(folder / f"{name}.skops")
        probe = np.asarray(meta["probe_X"], dtype=np.float64)
        if probe.size:
            want = np.asarray(meta["probe_y"], dtype=np.float64)
            got = obj.predict(probe)
            if not np.allclose(got, want, rtol=PROBE_RTOL, atol=PROBE_RTOL * (1 + np.abs(want).max())):
                lib = meta.get("library", {})
                raise ConfigError(
                    f"{meta_path}: the restored {obj.kind} learner predicts differently from the one "
                    f"trained (max difference {np.abs(got - want).max():.3g}); it was written with "
                    f"{', '.join(f'{k} {v}' for k, v in lib.items())} and this machine has "
                    f"{_versions(lib)}. Retrain the bundle with this version, or install those versions."
                )
        return obj


def _versions(lib: dict) -> str:
    out = []
    for k in lib:
        try:
            mod = __import__({"scikit-learn": "sklearn"}.get(k, k))
            out.append(f"{k} {mod.__version__}")
        except ImportError:
            out.append(f"no {k}")
    return ", ".join(out)


def _load_skops(path: Path):
    import skops.io as sio

    if not path.is_file():
        raise ConfigError(f"learner file missing: {path}")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001 - a damaged zip / schema
        raise ConfigError(f"{path}: not a readable skops file ({exc})") from None
    bad = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if bad:
        raise ConfigError(f"{path} contains types outside speechqe's allow-list: {bad}; refusing to load it")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # version differences are checked by the probe rows
        return sio.load(path, trusted=list(untrusted))


def make_learner(spec: LearnerSpec) -> Learner:
    return Learner(spec)


def _plain(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


# ------------------------------------------------------------------------------------------
# Estimators
# ------------------------------------------------------------------------------------------
def _pca_components(size: int | float, n: int, d: int) -> int | float | None:
    """PCA components for ``n`` training rows of dimension ``d`` (``None``: no PCA)."""
    if not size:
        return None
    if isinstance(size, float) and size < 1:
        return size
    k = min(int(size), d, max(1, n - 1))
    return None if k >= d else k


def _build(spec: LearnerSpec, *, n: int, d: int):
    """The scikit-learn estimator (or pipeline) of ``spec`` for ``n`` rows of dimension ``d``.
    The final step is named ``model``; the grid's keys address it."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    p = spec.resolved()
    kind = spec.kind
    if kind == "lightgbm":
        import lightgbm as lgb

        return lgb.LGBMRegressor(**p)
    if kind == "rf":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(
            n_estimators=int(p["n_estimators"]), max_features=p["max_features"],
            min_samples_leaf=int(p["min_samples_leaf"]), random_state=p["random_state"], n_jobs=1)
    steps: list = [("scale", StandardScaler())]
    k = _pca_components(spec.pca_size(), n, d)
    d_eff = d
    if k is not None:
        steps.append(("pca", PCA(n_components=k, svd_solver="full", random_state=0)))
        d_eff = k if isinstance(k, int) else min(d, n - 1)
    target_scaled = False
    if kind == "ridge":
        from sklearn.linear_model import Ridge

        model = Ridge(alpha=float(p["alpha"]))
    elif kind == "nnls":
        from sklearn.linear_model import LinearRegression

        model = LinearRegression(positive=True)
    elif kind == "svr":
        from sklearn.svm import SVR

        model = SVR(kernel="rbf", C=float(p["C"]), epsilon=float(p["epsilon"]), gamma=p["gamma"])
        target_scaled = True
    elif kind == "knn":
        from sklearn.neighbors import KNeighborsRegressor

        model = KNeighborsRegressor(n_neighbors=min(int(p["n_neighbors"]), n), weights=p["weights"],
                                    algorithm="brute")
    elif kind == "gp":
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        r = float(np.sqrt(max(1, d_eff)))
        lo, hi = (float(b) * r for b in p["length_scale_bounds"])
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * RBF(
            length_scale=float(np.clip(float(p["length_scale"]) * r, lo, hi)), length_scale_bounds=(lo, hi),
        ) + WhiteKernel(noise_level=float(p["noise_level"]),
                        noise_level_bounds=tuple(float(b) for b in p["noise_level_bounds"]))
        model = GaussianProcessRegressor(kernel=kernel, normalize_y=True,
                                         n_restarts_optimizer=int(p["n_restarts_optimizer"]),
                                         random_state=p["random_state"])
    else:  # pragma: no cover - LearnerSpec validates kinds
        raise ConfigError(f"unknown learner kind {kind!r}")
    steps.append(("model", model))
    pipe = Pipeline(steps)
    if target_scaled:
        from sklearn.compose import TransformedTargetRegressor

        return TransformedTargetRegressor(regressor=pipe, transformer=StandardScaler())
    return pipe


def _grid(spec: LearnerSpec, est, *, n_train: int, n_groups: int) -> dict[str, list]:
    """The grid in the estimator's parameter names (``{}``: no search). ``n_neighbors`` values
    above the inner training size are dropped; no search with fewer than 3 groups."""
    g = spec.grid()
    if not g or n_groups < 3:
        return {}
    if spec.kind in ("lightgbm", "rf"):
        prefix = ""
    elif spec.kind == "svr":
        prefix = "regressor__model__"
    else:
        prefix = "model__"
    out = {}
    inner_train = int(n_train * (1 - 1 / min(3, n_groups)))
    for k, values in g.items():
        if k == "n_neighbors":
            values = sorted({min(int(v), max(1, inner_train)) for v in values})
        out[prefix + k] = list(values)
    if all(len(v) == 1 for v in out.values()):
        # nothing to choose: fix the values instead of searching
        est.set_params(**{k: v[0] for k, v in out.items()})
        return {}
    return out
