"""Stacking over the members' out-of-fold predictions: the equal average of three candidates.

Stage 1 are the members' out-of-fold predictions ``Z`` ``(n, m)`` over grouped folds (no group
on both sides of a split: a member never sees another utterance of the system, sentence or
speaker it predicts). On them:

1. **Pruning by out-of-fold evidence.** A member enters only when its out-of-fold predictions
   are finite, not constant and correlate with the labels above ``min_corr`` (Pearson); of
   those, the ``max_members`` best by out-of-fold SRCC.
2. **Stage 2: candidates, each on the label scale and each out of fold** (second-level CV on
   the same folds; everything, pruning included, is refit on each fold's training rows):

   * ``best-member``: the member with the best SRCC, as it is (van der Laan et al., "Super
     Learner", 2007: the *discrete* super learner, i.e. the member chosen by CV);
   * ``convex``: a convex combination of the kept members (weights >= 0 summing to one, least
     squares; Breiman, "Stacked regressions", Machine Learning 24, 1996, with the sum-to-one
     constraint of a mixture) - no intercept, no slope;
   * ``mean``: the equal-weight mean of the ``mean_members`` best members;
   * ``rank-mean`` (optional): the mean of those members' normalised ranks, mapped onto the
     ``mean`` candidate's distribution on the training rows (rank averaging: each member has an
     equal say in the ranking whatever the spread of its predictions);
   * ``greedy`` (optional): Caruana's forward ensemble selection with replacement on SRCC;
   * optional ``stage2`` learners (``nnls``, ``ridge``, ``gp``...) on the standardised columns.

   A candidate whose out-of-fold MSE is above the labels' variance, or whose correlation is
   not positive, is dropped and reported as degenerate.
3. **Stage 3**: the mean of the surviving candidates (``stage3: equal``, the default), their
   convex least-squares combination (``convex``) or the one with the best out-of-fold SRCC
   (``select``); ``shrink`` moves the weights that share of the way towards ``best-member``
   (``cv``: the share with the best out-of-fold SRCC).
4. Every prediction is clipped to the score range.

The default (``best-member``, ``convex``, ``mean`` of 5, equal stage 3) was chosen on nested
estimates over 12 generated listening tests and checked on 12 of a second generator
(``bench/bench_mos_small.py``, docs/benchmarks.md): it had the best or a tied-best mean
difference to the best member on both, and beat the member chosen by CV by +0.029 and +0.011
clip SRCC on average. Selecting one candidate, shrinking towards the best member by CV, fewer
members, rank averaging and Caruana's selection were no better (differences within one
standard error of the seed-to-seed noise, or worse). No rule came within 0.01 of the
*hindsight* best member on every seed: that member is chosen after seeing the labels and is
biased upwards by 0.02-0.04 on these sets. Further reasons:

* *No calibration.* A least-squares slope fit per training set shrinks predictions by a
  different factor each time; scores pooled over several trainings (outer folds, or a
  listening test's quarters each predicted by its own bundle) then rank worse than any member.
  Candidates stay on the members' own label scale.
* *Every choice inside each fold.* With ~100 items the member that looks best out of fold
  often is not; choosing it (or pruning) on all rows makes the candidates look better than
  they are, and lets a fold's held-out labels decide what predicts them.
* *Equal weights at stage 3, averages at stage 2.* Weights fitted on ~100 out-of-fold rows lose
  to equal weights out of sample (the "forecast combination puzzle", Smith & Wallis 2009).

How well the whole procedure does on data it never saw is measured by the nested estimate
(:mod:`speechqe.predictors.nested`: this function run inside outer folds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from speechqe.errors import ConfigError

from .config import StackingConfig
from .weak.learners import Learner

Fold = tuple[np.ndarray, np.ndarray]

BEST = "best-member"
CONVEX = "convex"
MEAN = "mean"
RANK = "rank-mean"
GREEDY = "greedy"
_BUILTIN = (BEST, CONVEX, MEAN, RANK, GREEDY)


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


def _srcc(z: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho, -2 where undefined (constant input): ranks below every real value."""
    from scipy.stats import spearmanr

    if np.ptp(z) <= 0 or np.ptp(y) <= 0:
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


def greedy_weights(U: np.ndarray, y: np.ndarray, steps: int | None = None) -> np.ndarray:
    """Forward ensemble selection with replacement (Caruana et al., "Ensemble selection from
    libraries of models", ICML 2004) on SRCC: start from the column with the best SRCC, then
    repeatedly add the column (again, if it is best) whose addition to the running mean raises
    the SRCC most; stop when no addition raises it or after ``steps`` (default ``2 c``)
    additions. Returns the counts as weights ``(c,)`` summing to one."""
    n, c = U.shape
    counts = np.zeros(c)
    scores = [_srcc(U[:, j], y) for j in range(c)]
    j0 = int(np.argmax(scores))
    counts[j0], total, score = 1, U[:, j0].copy(), scores[j0]
    for _ in range(steps if steps is not None else 2 * c):
        k = counts.sum()
        trial = [_srcc((total + U[:, j]) / (k + 1), y) for j in range(c)]
        j = int(np.argmax(trial))
        if trial[j] <= score + 1e-12:
            break
        counts[j] += 1
        total += U[:, j]
        score = trial[j]
    return counts / counts.sum()


def _quantiles(x: np.ndarray, k: int = 513) -> np.ndarray:
    """The empirical distribution of ``x`` as evenly spaced quantiles: ``x`` sorted when it
    has at most ``k`` values (then a value's CDF is exactly its normalised mid-rank), else
    ``k`` quantiles (kept small in the bundle)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sort(x) if len(x) <= k else np.quantile(x, np.linspace(0.0, 1.0, k))


def _cdf(z: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Empirical CDF, in [0, 1], of the distribution with sorted quantiles ``q``
    (:func:`_quantiles`) at ``z``: a value equal to some of ``q`` gets their mid-level (so ties
    share one value), a value between two gets the linear interpolation of their levels, and
    values outside ``q`` get 0 or 1. Non-decreasing in ``z``."""
    z = np.asarray(z, dtype=np.float64)
    k = len(q) - 1
    if k == 0:
        return np.full(z.shape, 0.5)
    left = np.searchsorted(q, z, side="left")
    right = np.searchsorted(q, z, side="right")
    tie = right > left
    out = np.where(tie, (left + right - 1) / 2.0, 0.0)
    i = np.clip(left, 1, k)
    between = ~tie & (left > 0) & (left <= k)
    frac = (z - q[i - 1]) / np.where(q[i] > q[i - 1], q[i] - q[i - 1], 1.0)
    out = np.where(between, i - 1 + frac, out)
    out = np.where(~tie & (left > k), k, out)
    return out / k


def _mean_level(levels: list[np.ndarray]) -> np.ndarray:
    """The mean of CDF values, rounded so that equal rank sums reached by different members'
    ranks compare equal (floating-point sums differ in the last bits)."""
    return np.round(np.mean(levels, axis=0), 12)


def _inverse_cdf(u: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.interp(u, np.linspace(0.0, 1.0, len(q)), q)


def _check_candidate(p: np.ndarray, y: np.ndarray, var_y: float) -> tuple[dict[str, Any], str]:
    chk = column_check(p, y)
    reason = chk.pop("problem")
    if not reason and chk["mse"] > var_y:
        reason = f"out-of-fold MSE {chk['mse']:.4g} above the labels' variance {var_y:.4g}"
    elif not reason and not chk["lcc"] > 0:
        reason = f"out-of-fold correlation {chk['lcc']:.3f} is not positive"
    return chk, reason


@dataclass
class Stage2:
    """The stage-2 candidates fit on one set of rows (all rows, or one fold's training part).

    Members are pruned on these rows only (:func:`fit_stage2`), so a candidate's out-of-fold
    predictions carry the noise of every choice made for it.

    Attributes:
        used: the members that entered, best first by SRCC on the rows.
        best: ``used[0]``.
        mean, scale: standardisation of ``used`` for the stage-2 learners.
        convex: convex weights over ``used`` (``convex`` candidate).
        mean_of: equal weights over the ``mean_members`` best (``mean``, ``rank-mean``).
        greedy: forward-selection weights over ``used`` (``greedy``).
        rank_ref: per ``mean_of`` member, quantiles of its predictions on the rows; ``rank_mean``:
            quantiles of the mean of their CDF values; ``rank_target``: quantiles of the ``mean``
            candidate on the rows (the scale ``rank-mean`` predicts on).
        learners: fitted stage-2 learners by name.
    """

    used: list[str]
    mean: np.ndarray
    scale: np.ndarray
    convex: dict[str, float]
    mean_of: dict[str, float]
    greedy: dict[str, float] = field(default_factory=dict)
    rank_ref: dict[str, np.ndarray] = field(default_factory=dict)
    rank_mean: np.ndarray | None = None
    rank_target: np.ndarray | None = None
    learners: list[tuple[str, Learner]] = field(default_factory=list)

    @property
    def best(self) -> str:
        return self.used[0]

    def predict(self, Z: np.ndarray, columns: Sequence[str], names: Sequence[str],
                score_range: tuple[float, float]) -> dict[str, np.ndarray]:
        """Predictions of the candidates ``names`` from stage-1 ``Z`` ``(n, len(columns))``,
        each ``(n,)``, clipped to ``score_range``."""
        col = {c: Z[:, list(columns).index(c)] for c in self.used}
        lo, hi = score_range

        def comb(w: dict[str, float]) -> np.ndarray:
            return sum(v * col[c] for c, v in w.items() if v) + np.zeros(len(Z))

        out = {}
        for name in names:
            if name == BEST:
                p = col[self.best]
            elif name == CONVEX:
                p = comb(self.convex)
            elif name == MEAN:
                p = comb(self.mean_of)
            elif name == GREEDY:
                p = comb(self.greedy)
            elif name == RANK:
                u = _mean_level([_cdf(col[c], self.rank_ref[c]) for c in self.mean_of])
                p = _inverse_cdf(_cdf(u, self.rank_mean), self.rank_target)
            else:
                m = dict(self.learners)[name]
                U = np.column_stack([col[c] for c in self.used])
                p = m.predict((U - self.mean) / self.scale)
            out[name] = np.clip(np.asarray(p, dtype=np.float64), lo, hi)
        return out

    def record(self) -> dict[str, Any]:
        return {"used": self.used, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "convex": self.convex, "mean_of": self.mean_of, "greedy": self.greedy,
                "rank_ref": {c: v.tolist() for c, v in self.rank_ref.items()},
                "rank_mean": None if self.rank_mean is None else self.rank_mean.tolist(),
                "rank_target": None if self.rank_target is None else self.rank_target.tolist(),
                "stage2": [name for name, _ in self.learners]}

    @classmethod
    def from_record(cls, meta: dict[str, Any], learners: list[tuple[str, Learner]]) -> "Stage2":
        def arr(v):
            return None if v is None else np.asarray(v, dtype=np.float64)

        return cls(list(meta["used"]), np.asarray(meta["mean"], float), np.asarray(meta["scale"], float),
                   {k: float(v) for k, v in meta["convex"].items()},
                   {k: float(v) for k, v in meta["mean_of"].items()},
                   {k: float(v) for k, v in (meta.get("greedy") or {}).items()},
                   {k: np.asarray(v, float) for k, v in (meta.get("rank_ref") or {}).items()},
                   arr(meta.get("rank_mean")), arr(meta.get("rank_target")), learners)


def member_checks(Z: np.ndarray, y: np.ndarray, columns: Sequence[str],
                  cfg: StackingConfig) -> tuple[dict[str, dict[str, Any]], list[int]]:
    """Every member's statistics on these rows with ``status`` (kept, pruned, degenerate) and
    ``reason``; returns them and the kept members' indices, best first (SRCC, then LCC)."""
    members: dict[str, dict[str, Any]] = {}
    ok = []
    for j, c in enumerate(columns):
        chk = column_check(Z[:, j], y)
        problem = chk.pop("problem")
        if problem:
            members[c] = {**chk, "status": "degenerate", "reason": problem}
        elif not chk["lcc"] > cfg.min_corr:
            members[c] = {**chk, "status": "pruned",
                          "reason": f"out-of-fold correlation {chk['lcc']:.3f} <= min_corr {cfg.min_corr}"}
        else:
            members[c] = {**chk, "status": "kept", "reason": ""}
            ok.append(j)
        members[c]["weight"] = 0.0
    ok.sort(key=lambda j: (-members[columns[j]]["srcc"], -members[columns[j]]["lcc"], j))
    for j in ok[cfg.max_members:]:
        members[columns[j]].update(status="pruned", reason=f"not among the {cfg.max_members} best by out-of-fold SRCC")
    return members, ok[: cfg.max_members]


def fit_stage2(Z: np.ndarray, y: np.ndarray, columns: Sequence[str], cfg: StackingConfig,
               groups: np.ndarray, names: Sequence[str], learner_names: Sequence[str] = ()) -> Stage2:
    """Prune the members on these rows and fit the candidates ``names`` (built-in and the
    stage-2 learners among ``learner_names``). When no member passes here (possible on a
    fold's training part though not on all rows) the best finite, varying member by SRCC
    enters alone.

    Raises:
        ConfigError: no member is finite and varying on these rows.
    """
    _, keep = member_checks(Z, y, columns, cfg)
    if not keep:
        fine = [j for j in range(Z.shape[1]) if not column_check(Z[:, j], y)["problem"]]
        if not fine:
            raise ConfigError("no member has finite, varying out-of-fold predictions: nothing to stack")
        keep = [max(fine, key=lambda j: (_srcc(Z[:, j], y), -j))]
    used = [columns[j] for j in keep]
    U = Z[:, keep]
    mean = U.mean(axis=0)
    sd = U.std(axis=0)
    scale = np.where(sd > 1e-12, sd, 1.0)
    top = used[: min(cfg.mean_members, len(used))]
    st = Stage2(used, mean, scale, convex={}, mean_of={c: 1.0 / len(top) for c in top})
    if CONVEX in names:
        st.convex = {c: float(v) for c, v in zip(used, convex_weights(U, y))}
    if GREEDY in names:
        st.greedy = {c: float(v) for c, v in zip(used, greedy_weights(U, y)) if v > 0}
    if RANK in names:
        st.rank_ref = {c: _quantiles(U[:, used.index(c)]) for c in top}
        u = _mean_level([_cdf(U[:, used.index(c)], st.rank_ref[c]) for c in top])
        st.rank_mean = _quantiles(u)
        st.rank_target = _quantiles(U[:, [used.index(c) for c in top]].mean(axis=1))
    S = (U - mean) / scale
    for name, spec in zip(learner_names, cfg.stage2):
        if name in names:
            st.learners.append((name, Learner(spec).fit(S, y, groups)))
    return st


@dataclass
class Stack:
    """A fitted ensemble over named stage-1 columns (see the module docstring).

    Attributes:
        columns: every stage-1 column of the bundle, in order (the input of :meth:`predict`).
        stage2: the candidates fit on all rows.
        weights: stage-3 convex weights over candidate names.
        score_range: predictions are clipped to it.
        members: per column: ``status`` (kept, pruned, degenerate), ``reason``, ``lcc``,
            ``srcc``, ``mse`` (out of fold), ``weight`` (its share of the ensemble).
        candidates: per candidate: out-of-fold ``lcc``, ``srcc``, ``mse``, ``status``,
            ``reason``, ``weight``.
        shrink: the share moved towards ``best-member`` (chosen by CV with ``shrink: cv``).
        candidates_oof: their out-of-fold predictions (fitting only; not saved).
    """

    columns: list[str]
    stage2: Stage2
    weights: dict[str, float]
    score_range: tuple[float, float]
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    shrink: float = 0.0
    candidates_oof: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def used(self) -> list[str]:
        """The members the ensemble reads (the others need not be computed)."""
        return self.stage2.used

    @property
    def best(self) -> str:
        return self.stage2.best

    @property
    def convex(self) -> dict[str, float]:
        return self.stage2.convex

    def _check(self, Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != len(self.columns):
            raise ValueError(f"expected (n, {len(self.columns)}) stage-1 predictions, got {Z.shape}")
        return Z

    def candidate_predict(self, Z: np.ndarray) -> dict[str, np.ndarray]:
        """Every candidate's predictions of ``Z`` ``(n, columns)`` (those with a stage-3
        weight and the built-in ones), clipped to the score range."""
        Z = self._check(Z)
        names = [n for n in self.candidates if n in _BUILTIN or n in dict(self.stage2.learners)]
        return self.stage2.predict(Z, self.columns, names, self.score_range)

    def predict(self, Z: np.ndarray) -> np.ndarray:
        """``Z``: ``(n, len(columns))`` stage-1 predictions -> ``(n,)`` ensemble scores."""
        Z = self._check(Z)
        names = [n for n, w in self.weights.items() if w > 0]
        cand = self.stage2.predict(Z, self.columns, names, self.score_range)
        lo, hi = self.score_range
        pred = sum(self.weights[n] * cand[n] for n in names)
        return np.clip(np.asarray(pred, dtype=np.float64), lo, hi)

    # --- files --------------------------------------------------------------------------------
    def save(self, folder: str | Path, probe_Z: np.ndarray) -> dict:
        """Write the stage-2 learners (``stage2_<name>.*``); returns the JSON record of the rest.
        ``probe_Z``: a few stage-1 rows whose predictions each learner checks on load."""
        folder = Path(folder)
        Z = self._check(probe_Z)
        st = self.stage2
        S = (Z[:, [self.columns.index(c) for c in st.used]] - st.mean) / st.scale
        for name, m in st.learners:
            m.save(folder, f"stage2_{name}", S)
        return {"columns": self.columns, **st.record(), "best": st.best, "weights": self.weights,
                "shrink": self.shrink, "score_range": list(self.score_range), "members": self.members,
                "candidates": self.candidates}

    @classmethod
    def load(cls, folder: str | Path, meta: dict) -> "Stack":
        folder = Path(folder)
        learners = [(name, Learner.load(folder, f"stage2_{name}")) for name in meta["stage2"]]
        st = Stage2.from_record(meta, learners)
        if meta.get("best", st.best) != st.best:
            raise ConfigError(f"stacking record: best member {meta['best']!r} is not the first used member")
        candidates = dict(meta.get("candidates") or {})
        for n in meta["weights"]:
            candidates.setdefault(n, {})
        return cls(list(meta["columns"]), st, {k: float(v) for k, v in meta["weights"].items()},
                   tuple(meta["score_range"]), dict(meta.get("members") or {}), candidates,
                   float(meta.get("shrink", 0.0)))


def _unique_names(kinds: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {k: 1 for k in _BUILTIN}
    out = []
    for k in kinds:
        seen[k] = seen.get(k, 0) + 1
        out.append(k if seen[k] == 1 else f"{k}{seen[k]}")
    return out


#: The grid of ``shrink: cv``.
SHRINK_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def _stage3(cfg: StackingConfig, alive: list[str], oof: dict[str, np.ndarray],
            y: np.ndarray) -> tuple[dict[str, float], float]:
    """Stage-3 weights over the surviving candidates ``alive`` from their out-of-fold
    predictions, and the shrink share used."""
    C = np.column_stack([oof[n] for n in alive])
    if cfg.stage3 == "convex":
        w = convex_weights(C, y)
    elif cfg.stage3 == "select":
        # the best out-of-fold SRCC; ties (to 1e-9) go to the lower MSE, then the earlier name
        key = [(-round(_srcc(C[:, j], y), 9), float(np.mean((C[:, j] - y) ** 2)), j) for j in range(len(alive))]
        w = np.zeros(len(alive))
        w[min(key)[2]] = 1.0
    else:
        w = np.full(len(alive), 1.0 / len(alive))
    towards = np.array([n == BEST for n in alive], dtype=float)
    shrink = 0.0
    if cfg.shrink == "cv" and towards.any():
        scores = [_srcc(C @ ((1 - a) * w + a * towards), y) for a in SHRINK_GRID]
        shrink = SHRINK_GRID[int(np.argmax(scores))]
    elif cfg.shrink != "cv" and cfg.shrink and towards.any():
        shrink = float(cfg.shrink)
    w = (1 - shrink) * w + shrink * towards
    w = w / w.sum()
    return {n: float(x) for n, x in zip(alive, w) if x > 0}, shrink


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

    # 1. members, on all rows (the report, and the final ensemble's pruning)
    members, keep = member_checks(Z, y, columns, cfg)
    if not keep:
        raise ConfigError(
            "no member's out-of-fold predictions correlate positively with the labels: there is "
            "nothing to stack (check the labels, the features and group_by)"
        )

    # 2. candidates, out of fold: everything, pruning included, is refit on each fold's
    # training rows, so their out-of-fold predictions carry the noise of every choice. BEST,
    # CONVEX, MEAN, RANK and GREEDY keep the members' label scale (no intercept, no slope): a
    # calibration fit per training set shrinks predictions by a different factor each time,
    # which scrambles ranks pooled over several trainings (outer folds, or a listening test's
    # quarters predicted by four bundles).
    learner_names = _unique_names([s.kind for s in cfg.stage2])
    names = list(cfg.candidates) + learner_names
    oof = {name: np.full(len(y), np.nan) for name in names}
    for tr, te in folds:
        st = fit_stage2(Z[tr], y[tr], columns, cfg, groups[tr], names, learner_names)
        for name, p in st.predict(Z[te], columns, names, score_range).items():
            oof[name][te] = p
    candidates: dict[str, dict[str, Any]] = {}
    alive = []
    for name in names:
        chk, reason = _check_candidate(oof[name], y, var_y)
        candidates[name] = {**chk, "status": "degenerate" if reason else "kept", "reason": reason, "weight": 0.0}
        if not reason:
            alive.append(name)
    if not alive:
        # the fallback: the best member alone (it correlates positively on all rows)
        fallback = BEST if BEST in names else names[0]
        alive = [fallback]
        candidates[fallback]["status"] = "kept"
        candidates[fallback]["reason"] += " (kept as the fallback)"

    # 3. stage 3
    weights, shrink = _stage3(cfg, alive, oof, y)
    for n in candidates:
        candidates[n]["weight"] = weights.get(n, 0.0)

    # final fits on every row (stage-2 learners only when they carry weight)
    final = [n for n in names if n in _BUILTIN or weights.get(n, 0.0) > 0]
    st = fit_stage2(Z, y, columns, cfg, groups, final, learner_names)
    stack = Stack(columns, st, weights, (lo, hi), members, candidates, shrink, oof)
    _member_shares(stack)
    return stack


def _member_shares(stack: Stack) -> None:
    """Each kept member's share of the ensemble: the stage-3 weight of every candidate spread
    over the members it combines (linear stage-2 learners by their normalised absolute
    coefficients; other learners equally); reported to show what the ensemble leans on, not
    used for prediction."""
    st = stack.stage2
    share = {c: 0.0 for c in st.used}
    spread = {BEST: {st.best: 1.0}, CONVEX: st.convex, MEAN: st.mean_of, RANK: st.mean_of, GREEDY: st.greedy}
    for name, w3 in stack.weights.items():
        if name in spread:
            parts = spread[name]
        else:
            coef = _linear_coef(dict(st.learners)[name])
            if coef is None or not np.abs(coef).sum():
                parts = {c: 1.0 / len(st.used) for c in st.used}
            else:
                parts = dict(zip(st.used, np.abs(coef) / np.abs(coef).sum()))
        for c, v in parts.items():
            share[c] += w3 * float(v)
    for c, v in share.items():
        stack.members[c]["weight"] = round(v, 4)


def _linear_coef(m: Learner) -> np.ndarray | None:
    est = getattr(m.model, "named_steps", {}).get("model") if hasattr(m.model, "named_steps") else None
    if est is None or not hasattr(est, "coef_") or "pca" in m.model.named_steps:
        return None
    return np.asarray(est.coef_, dtype=np.float64).reshape(-1) / m.model.named_steps["scale"].scale_
