"""Stacking that cannot fall below its best member beyond noise.

Stage 1 are the members' out-of-fold predictions ``Z`` ``(n, m)`` over grouped folds (no group
on both sides of a split: a member never sees another utterance of the system, sentence or
speaker it predicts). On them:

1. **Pruning by out-of-fold evidence.** A member enters only when its out-of-fold predictions
   are finite, not constant and correlate with the labels above ``min_corr`` (Pearson); of
   those, the ``max_members`` best by out-of-fold SRCC.
2. **Stage 2: candidates, each on the label scale and each out of fold** (second-level CV on
   the same folds, every choice remade inside each fold):

   * ``best-member``: the member with the best SRCC on the fold's training rows, as it is;
   * ``convex``: a convex combination of the kept members (weights >= 0 summing to one, least
     squares; Breiman, "Stacked regressions", Machine Learning 24, 1996, with the sum-to-one
     constraint of a mixture) - no intercept, no slope;
   * ``mean``: the equal-weight mean of the ``mean_members`` best members;
   * optional ``stage2`` learners (``nnls``, ``ridge``, ``gp``...) on the standardised columns.

   A candidate whose out-of-fold MSE is above the labels' variance, or whose correlation is
   not positive, is dropped and reported as degenerate.
3. **Stage 3**: the mean of the surviving candidates (``stage3: equal``, the default) or their
   convex least-squares combination (``stage3: convex``); ``shrink`` moves the weights that
   share of the way towards ``best-member``.
4. Every prediction is clipped to the score range.

Why these choices (measured on the listening-test-like sets of
``tests/predictors/test_acceptance_listening.py``, docs/benchmarks.md):

* *No calibration.* A least-squares slope fit per training set shrinks predictions by a
  different factor each time; scores pooled over several trainings (outer folds, or a
  listening test's quarters each predicted by its own bundle) then rank worse than any member.
  Candidates stay on the members' own label scale.
* *The best member is chosen inside each fold.* With ~100 items the member that looks best out
  of fold often is not; choosing it on all rows first made its candidate look better than it
  is, and stage 3 trusted it.
* *Equal weights at stage 3, averages at stage 2.* Weights fitted on ~100 out-of-fold rows lose
  to equal weights out of sample (the "forecast combination puzzle", Smith & Wallis 2009).

How well the whole procedure does on data it never saw is measured by the nested estimate in
:mod:`speechqe.predictors.train` (this function run inside outer folds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from speechqe.errors import ConfigError

from .config import LearnerSpec, StackingConfig
from .weak.learners import Learner

Fold = tuple[np.ndarray, np.ndarray]

BEST = "best-member"
CONVEX = "convex"
MEAN = "mean"


def make_folds(groups: Sequence[str], n_folds: int, seed: int = 0) -> list[Fold]:
    """Grouped K-fold splits (each group in exactly one test fold), shuffled by ``seed``.

    Raises:
        ConfigError: fewer than 2 folds, or fewer groups than folds.
    """
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_folds < 2:
        raise ConfigError("stacking needs at least 2 folds")
    if n_groups < n_folds:
        raise ConfigError(
            f"only {n_groups} groups for {n_folds} folds; lower 'folds' or group by a finer unit"
        )
    splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(groups)), groups=groups)]


def out_of_fold(
    fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], n: int, folds: Sequence[Fold]
) -> np.ndarray:
    """``fit_predict(train_idx, test_idx) -> predictions for test_idx``, assembled per item."""
    out = np.full(n, np.nan)
    for tr, te in folds:
        out[te] = np.asarray(fit_predict(tr, te), dtype=np.float64).reshape(-1)
    if np.isnan(out).any():
        raise RuntimeError("out-of-fold predictions left items unpredicted")
    return out


def column_check(z: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Out-of-fold statistics of one column: ``lcc``, ``srcc``, ``mse`` and ``problem`` (why
    it can never enter: non-finite or constant predictions; ``""`` otherwise)."""
    from scipy.stats import spearmanr

    z = np.asarray(z, dtype=np.float64)
    if not np.isfinite(z).all():
        return {"lcc": float("nan"), "srcc": float("nan"), "mse": float("nan"),
                "problem": "non-finite out-of-fold predictions"}
    mse = float(np.mean((z - y) ** 2))
    if np.ptp(z) <= 1e-12 * max(1.0, float(np.abs(z).max())):
        return {"lcc": float("nan"), "srcc": float("nan"), "mse": mse,
                "problem": "constant out-of-fold predictions (correlation undefined)"}
    return {"lcc": float(np.corrcoef(z, y)[0, 1]), "srcc": float(spearmanr(z, y)[0]), "mse": mse,
            "problem": ""}


@dataclass
class Stack:
    """A fitted ensemble over named stage-1 columns (see the module docstring).

    Attributes:
        columns: every stage-1 column of the bundle, in order (the input of :meth:`predict`).
        used: the members that entered; ``mean``/``scale`` standardise them.
        best: the best member.
        convex: convex weights over ``used`` (the :data:`CONVEX` candidate).
        stage2: fitted stage-2 learners by name.
        weights: stage-3 convex weights over :data:`BEST`, :data:`CONVEX` and stage-2 names.
        score_range: predictions are clipped to it.
        members: per column: ``status`` (kept, pruned, degenerate), ``reason``, ``lcc``,
            ``srcc``, ``mse`` (out of fold), ``weight`` (its share of the ensemble).
        candidates: per stage-2 name and :data:`BEST`: ``status`` and ``reason``.
        candidates_oof: their out-of-fold predictions (fitting only; not saved).
    """

    columns: list[str]
    used: list[str]
    mean: np.ndarray
    scale: np.ndarray
    best: str
    convex: dict[str, float]
    mean_of: dict[str, float]
    stage2: list[tuple[str, Learner]]
    weights: dict[str, float]
    score_range: tuple[float, float]
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    candidates_oof: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def _inputs(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != len(self.columns):
            raise ValueError(f"expected (n, {len(self.columns)}) stage-1 predictions, got {Z.shape}")
        idx = [self.columns.index(c) for c in self.used]
        U = Z[:, idx]
        return U, (U - self.mean) / self.scale

    def candidate_predict(self, Z: np.ndarray) -> dict[str, np.ndarray]:
        """The stage-2 candidates' predictions of ``Z`` ``(n, columns)``, clipped to the score
        range."""
        U, S = self._inputs(Z)
        lo, hi = self.score_range
        out = {BEST: np.clip(U[:, self.used.index(self.best)], lo, hi),
               CONVEX: np.clip(U @ np.array([self.convex.get(c, 0.0) for c in self.used]), lo, hi),
               MEAN: np.clip(U @ np.array([self.mean_of.get(c, 0.0) for c in self.used]), lo, hi)}
        for name, m in self.stage2:
            out[name] = np.clip(m.predict(S), lo, hi)
        return out

    def predict(self, Z: np.ndarray) -> np.ndarray:
        """``Z``: ``(n, len(columns))`` stage-1 predictions -> ``(n,)`` ensemble scores."""
        cand = self.candidate_predict(Z)
        lo, hi = self.score_range
        pred = sum(w * cand[name] for name, w in self.weights.items() if w > 0)
        return np.clip(np.asarray(pred, dtype=np.float64), lo, hi)

    # --- files --------------------------------------------------------------------------------
    def save(self, folder: str | Path, probe_Z: np.ndarray) -> dict:
        """Write the stage-2 learners (``stage2_<name>.*``); returns the JSON record of the rest.
        ``probe_Z``: a few stage-1 rows whose predictions each learner checks on load."""
        folder = Path(folder)
        _, S = self._inputs(probe_Z)
        files = {}
        for name, m in self.stage2:
            files[name] = m.save(folder, f"stage2_{name}", S)
        return {"columns": self.columns, "used": self.used, "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "best": self.best, "convex": self.convex, "mean_of": self.mean_of,
                "stage2": [name for name, _ in self.stage2], "weights": self.weights,
                "score_range": list(self.score_range), "members": self.members,
                "candidates": self.candidates}

    @classmethod
    def load(cls, folder: str | Path, meta: dict) -> "Stack":
        folder = Path(folder)
        stage2 = [(name, Learner.load(folder, f"stage2_{name}")) for name in meta["stage2"]]
        return cls(list(meta["columns"]), list(meta["used"]), np.asarray(meta["mean"], float),
                   np.asarray(meta["scale"], float), meta["best"],
                   {k: float(v) for k, v in meta["convex"].items()},
                   {k: float(v) for k, v in meta["mean_of"].items()}, stage2,
                   {k: float(v) for k, v in meta["weights"].items()}, tuple(meta["score_range"]),
                   dict(meta.get("members") or {}), dict(meta.get("candidates") or {}))


def _srcc(z: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(z) <= 0:
        return -2.0
    r = spearmanr(z, y)[0]
    return float(r) if np.isfinite(r) else -2.0


def convex_weights(C: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``argmin_w |y - C w|^2`` subject to ``w >= 0``, ``sum(w) = 1`` (SLSQP from the equal
    weights; ``C`` ``(n, c)``)."""
    from scipy.optimize import minimize

    c = C.shape[1]
    if c == 1:
        return np.ones(1)
    scale = float(np.mean(y ** 2)) or 1.0
    res = minimize(lambda w: float(np.mean((y - C @ w) ** 2)) / scale, np.full(c, 1.0 / c),
                   jac=lambda w: -2.0 * C.T @ (y - C @ w) / len(y) / scale,
                   bounds=[(0.0, 1.0)] * c, constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0},),
                   method="SLSQP", options={"maxiter": 500, "ftol": 1e-12})
    w = np.clip(res.x, 0.0, None)
    w[w < 1e-6] = 0.0
    return w / w.sum()


def _unique_names(kinds: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for k in kinds:
        seen[k] = seen.get(k, 0) + 1
        out.append(k if seen[k] == 1 else f"{k}{seen[k]}")
    return out


def fit_stack(
    Z: np.ndarray, y: np.ndarray, columns: Sequence[str], folds: Sequence[Fold],
    cfg: StackingConfig | None = None, *, score_range: tuple[float, float] = (-np.inf, np.inf),
    groups: Sequence | None = None,
) -> Stack:
    """Fit the ensemble on the stage-1 out-of-fold matrix ``Z`` ``(n, m)`` and labels ``y``,
    using the same grouped ``folds`` for its own out-of-fold choices.

    Raises:
        ConfigError: no member's out-of-fold predictions correlate positively with the labels
            (there is nothing to stack: check the labels, the features and the grouping).
    """
    cfg = cfg or StackingConfig()
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    columns = list(columns)
    groups = np.asarray(groups) if groups is not None else np.arange(len(y))
    lo, hi = score_range
    var_y = float(np.var(y))

    # 1. members
    members: dict[str, dict[str, Any]] = {}
    ok = []
    for j, c in enumerate(columns):
        chk = column_check(Z[:, j], y)
        if chk["problem"]:
            members[c] = {**chk, "status": "degenerate", "reason": chk.pop("problem")}
        elif not chk["lcc"] > cfg.min_corr:
            members[c] = {**chk, "status": "pruned",
                          "reason": f"out-of-fold correlation {chk['lcc']:.3f} <= min_corr {cfg.min_corr}"}
        else:
            members[c] = {**chk, "status": "kept", "reason": ""}
            ok.append(j)
        members[c].pop("problem", None)
        members[c]["weight"] = 0.0
    if not ok:
        raise ConfigError(
            "no member's out-of-fold predictions correlate positively with the labels: there is "
            "nothing to stack (check the labels, the features and group_by)"
        )
    ok.sort(key=lambda j: (-members[columns[j]]["srcc"], -members[columns[j]]["lcc"], j))
    for j in ok[cfg.max_members:]:
        members[columns[j]].update(status="pruned", reason=f"not among the {cfg.max_members} best by out-of-fold SRCC")
    keep = sorted(ok[: cfg.max_members])
    used = [columns[j] for j in keep]
    best = columns[ok[0]]
    U = Z[:, keep]
    mean = U.mean(axis=0)
    sd = U.std(axis=0)
    scale = np.where(sd > 1e-12, sd, 1.0)
    S = (U - mean) / scale

    # 2. candidates, out of fold. BEST and CONVEX keep the label scale (no intercept, no
    # slope): a calibration fit per training set shrinks predictions by a different factor
    # each time, which scrambles ranks pooled over several trainings (outer folds, or a
    # listening test's quarters predicted by four bundles).
    names = _unique_names([s.kind for s in cfg.stage2])
    oof: dict[str, np.ndarray] = {BEST: np.full(len(y), np.nan), CONVEX: np.full(len(y), np.nan),
                                  MEAN: np.full(len(y), np.nan)}
    k_mean = min(cfg.mean_members, len(keep))
    for name in names:
        oof[name] = np.full(len(y), np.nan)
    for tr, te in folds:
        # the best member is chosen inside the fold too, so that its out-of-fold predictions
        # carry the noise of choosing it (with ~100 items the member that looks best often is
        # not; stage 3 must see that, or it trusts the choice too much)
        ranked = sorted(range(len(keep)), key=lambda j: (-_srcc(U[tr, j], y[tr]), j))
        oof[BEST][te] = U[te, ranked[0]]
        oof[MEAN][te] = U[te][:, ranked[:k_mean]].mean(axis=1)
        oof[CONVEX][te] = U[te] @ convex_weights(U[tr], y[tr])
        # standardisation from the fold's own rows: no information from te enters the fit
        m_tr, s_tr = U[tr].mean(0), U[tr].std(0)
        s_tr = np.where(s_tr > 1e-12, s_tr, 1.0)
        for name, spec in zip(names, cfg.stage2):
            model = Learner(spec).fit((U[tr] - m_tr) / s_tr, y[tr], groups[tr])
            oof[name][te] = model.predict((U[te] - m_tr) / s_tr)
    candidates: dict[str, dict[str, Any]] = {}
    alive = []
    for name, p in oof.items():
        p = np.clip(p, lo, hi)
        oof[name] = p
        chk = column_check(p, y)
        status, reason = "kept", ""
        if chk["problem"]:
            status, reason = "degenerate", chk["problem"]
        elif chk["mse"] > var_y:
            status, reason = "degenerate", f"out-of-fold MSE {chk['mse']:.4g} above the labels' variance {var_y:.4g}"
        elif not chk["lcc"] > 0:
            status, reason = "degenerate", f"out-of-fold correlation {chk['lcc']:.3f} is not positive"
        chk.pop("problem")
        candidates[name] = {**chk, "status": status, "reason": reason, "weight": 0.0}
        if status == "kept":
            alive.append(name)
    if BEST not in alive:
        alive.insert(0, BEST)  # the fallback: the best member alone
        candidates[BEST]["status"] = "kept"
        candidates[BEST]["reason"] += " (kept as the fallback)"

    # 3. stage 3
    C = np.column_stack([oof[n] for n in alive])
    w = convex_weights(C, y) if cfg.stage3 == "convex" else np.full(len(alive), 1.0 / len(alive))
    if cfg.shrink:
        w = (1 - cfg.shrink) * w + cfg.shrink * np.array([n == BEST for n in alive], dtype=float)
    w = w / w.sum()
    weights = {n: float(x) for n, x in zip(alive, w)}
    for n in candidates:
        candidates[n]["weight"] = weights.get(n, 0.0)

    # final fits on every row
    convex = {c: float(v) for c, v in zip(used, convex_weights(U, y))}
    top = [used[j] for j in sorted(range(len(keep)), key=lambda j: (-_srcc(U[:, j], y), j))[:k_mean]]
    mean_of = {c: 1.0 / len(top) for c in top}
    stage2 = []
    for name, spec in zip(names, cfg.stage2):
        if weights.get(name, 0.0) > 0:
            stage2.append((name, Learner(spec).fit(S, y, groups)))
    weights = {n: x for n, x in weights.items() if x > 0}
    stack = Stack(columns, used, mean, scale, best, convex, mean_of, stage2, weights, (lo, hi),
                  members, candidates, oof)
    _member_shares(stack, S)
    return stack


def _member_shares(stack: Stack, S: np.ndarray) -> None:
    """Each kept member's share of the ensemble: stage-3 weight of the best member plus, for
    linear stage-2 learners, their normalised absolute coefficients times their stage-3 weight
    (reported to show what the ensemble leans on; not used for prediction)."""
    share = {c: 0.0 for c in stack.used}
    share[stack.best] += stack.weights.get(BEST, 0.0)
    for c, v in stack.convex.items():
        share[c] += stack.weights.get(CONVEX, 0.0) * v
    for c, v in stack.mean_of.items():
        share[c] += stack.weights.get(MEAN, 0.0) * v
    for name, m in stack.stage2:
        w3 = stack.weights.get(name, 0.0)
        coef = _linear_coef(m)
        if coef is None or not np.abs(coef).sum():
            for c in stack.used:
                share[c] += w3 / len(stack.used)
            continue
        coef = np.abs(coef) / np.abs(coef).sum()
        for c, v in zip(stack.used, coef):
            share[c] += w3 * float(v)
    for c, v in share.items():
        stack.members[c]["weight"] = round(v, 4)


def _linear_coef(m: Learner) -> np.ndarray | None:
    est = getattr(m.model, "named_steps", {}).get("model") if hasattr(m.model, "named_steps") else None
    if est is None or not hasattr(est, "coef_") or "pca" in m.model.named_steps:
        return None
    return np.asarray(est.coef_, dtype=np.float64).reshape(-1) / m.model.named_steps["scale"].scale_
