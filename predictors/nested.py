"""The nested estimate of a stacked ensemble, from the members' stage-1 predictions.

:func:`~speechqe.predictors.train.train_bundle` fits every member on every training set that
the out-of-fold predictions and the nested estimate need, and collects what the ensemble is
fit on in a :class:`StageOne`. :func:`nested_estimate` then runs the stacking rule
(:func:`~speechqe.predictors.stacking.fit_stack`) inside every outer fold, on the inner
out-of-fold predictions of that fold's training part only, and scores the pooled predictions
of the outer folds, which nothing in their ensemble has seen.

The split lets the stacking rule be changed and re-estimated without refitting a member
(``bench/bench_mos_small.py --rules`` does so on saved :class:`StageOne` files).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechqe.errors import ConfigError

from .config import StackingConfig
from .evaluate import evaluate
from .stacking import Fold, Stack, fit_stack

#: Format of :meth:`StageOne.save` files.
STAGE_ONE_FORMAT = 1


@dataclass
class OuterFold:
    """One outer fold of the nested estimate (indices into the whole set).

    Attributes:
        train: the outer training part ``(n_train,)``.
        test: the outer test part ``(n_test,)``.
        inner: grouped folds of the training part, as positions into ``train``.
        Z_inner: the members' inner out-of-fold predictions of the training part
            ``(n_train, m)``: row ``r`` predicted by fits that never saw item ``train[r]``'s
            group nor any item of the outer test part.
        Z_test: the members' predictions of the test part ``(n_test, m)`` by fits on ``train``.
    """

    train: np.ndarray
    test: np.ndarray
    inner: list[Fold]
    Z_inner: np.ndarray
    Z_test: np.ndarray


@dataclass
class StageOne:
    """What the ensemble and its nested estimate are fit on.

    Attributes:
        columns: the members' names ``(m,)``.
        y: labels ``(n,)`` on the score range.
        groups: fold groups ``(n,)``.
        systems: system (condition) of every item ``(n,)``: the system-level metrics.
        Z: the members' out-of-fold predictions ``(n, m)`` over ``folds``.
        folds: the grouped folds.
        outer: the nested estimate's outer folds (empty when it is off).
        score_range: ``(low, high)``; every prediction is clipped to it.
    """

    columns: list[str]
    y: np.ndarray
    groups: np.ndarray
    systems: np.ndarray
    Z: np.ndarray
    folds: list[Fold]
    outer: list[OuterFold]
    score_range: tuple[float, float]

    def save(self, path: str | Path) -> None:
        """Write to one ``.npz`` file (numbers and strings only; read with :meth:`load`)."""
        arrays: dict[str, Any] = {
            "format": np.array(STAGE_ONE_FORMAT), "columns": np.array(self.columns),
            "y": self.y, "groups": np.asarray(self.groups).astype(str),
            "systems": np.asarray(self.systems).astype(str), "Z": self.Z,
            "score_range": np.array(self.score_range, dtype=np.float64),
            "n_folds": np.array(len(self.folds)), "n_outer": np.array(len(self.outer)),
        }
        for k, (tr, te) in enumerate(self.folds):
            arrays[f"fold{k}_train"], arrays[f"fold{k}_test"] = tr, te
        for o, of in enumerate(self.outer):
            arrays.update({f"outer{o}_train": of.train, f"outer{o}_test": of.test,
                           f"outer{o}_Z_inner": of.Z_inner, f"outer{o}_Z_test": of.Z_test,
                           f"outer{o}_n_inner": np.array(len(of.inner))})
            for k, (tr, te) in enumerate(of.inner):
                arrays[f"outer{o}_inner{k}_train"], arrays[f"outer{o}_inner{k}_test"] = tr, te
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "StageOne":
        with np.load(path, allow_pickle=False) as f:
            if int(f["format"]) != STAGE_ONE_FORMAT:
                raise ConfigError(f"{path}: stage-one format {int(f['format'])}, expected {STAGE_ONE_FORMAT}")
            folds = [(f[f"fold{k}_train"], f[f"fold{k}_test"]) for k in range(int(f["n_folds"]))]
            outer = []
            for o in range(int(f["n_outer"])):
                inner = [(f[f"outer{o}_inner{k}_train"], f[f"outer{o}_inner{k}_test"])
                         for k in range(int(f[f"outer{o}_n_inner"]))]
                outer.append(OuterFold(f[f"outer{o}_train"], f[f"outer{o}_test"], inner,
                                       f[f"outer{o}_Z_inner"], f[f"outer{o}_Z_test"]))
            lo, hi = (float(v) for v in f["score_range"])
            return cls([str(c) for c in f["columns"]], f["y"], f["groups"], f["systems"], f["Z"],
                       folds, outer, (lo, hi))


@dataclass
class NestedResult:
    """:func:`nested_estimate`'s predictions (each ``(n,)``, pooled over the outer folds).

    Attributes:
        ensemble: the ensemble's.
        members: every member's (fit on the outer training part).
        candidates: every stage-2 candidate's (NaN in an outer fold where it was not fit).
        cv_member: the member that the stacking's own out-of-fold evidence ranks first in each
            outer fold (what a user picks without stacking: the "best member chosen by CV").
        folds: per outer fold, what its ensemble chose: ``best``, ``used``, ``weights``.
    """

    ensemble: np.ndarray
    members: dict[str, np.ndarray]
    candidates: dict[str, np.ndarray]
    cv_member: np.ndarray
    folds: list[dict[str, Any]]


def nested_predictions(s1: StageOne, cfg: StackingConfig) -> NestedResult:
    """Fit the stacking rule ``cfg`` inside every outer fold of ``s1`` and predict that fold.

    Raises:
        ConfigError: the stacking fails in an outer fold (e.g. no member correlates there).
    """
    n = len(s1.y)
    groups = np.asarray(s1.groups)
    ens = np.full(n, np.nan)
    cv_member = np.full(n, np.nan)
    member_out = {c: np.full(n, np.nan) for c in s1.columns}
    cand_out: dict[str, np.ndarray] = {}
    chosen = []
    for o, of in enumerate(s1.outer):
        try:
            st: Stack = fit_stack(of.Z_inner, s1.y[of.train], s1.columns, of.inner, cfg,
                                  score_range=s1.score_range, groups=groups[of.train])
        except ConfigError as exc:
            raise ConfigError(f"outer fold {o + 1}: {exc}") from None
        ens[of.test] = st.predict(of.Z_test)
        cv_member[of.test] = of.Z_test[:, s1.columns.index(st.best)]
        for j, c in enumerate(s1.columns):
            member_out[c][of.test] = of.Z_test[:, j]
        for name, p in st.candidate_predict(of.Z_test).items():
            cand_out.setdefault(name, np.full(n, np.nan))[of.test] = p
        chosen.append({"best": st.best, "used": st.used, "weights": st.weights, "shrink": st.shrink})
    return NestedResult(ens, member_out, cand_out, cv_member, chosen)


def nested_estimate(s1: StageOne, cfg: StackingConfig) -> dict[str, Any]:
    """The nested estimate's report: metrics of the ensemble, of every member, of the stage-2
    candidates and of the best member chosen by CV (``cv_member``, :class:`NestedResult`); the
    hindsight best member (``best_member``: best pooled SRCC, chosen after seeing the outer
    folds' labels, so biased upwards) and the ensemble's SRCC minus that member's and minus
    the CV-chosen member's.

    Raises:
        ConfigError: the stacking fails in an outer fold.
    """
    res = nested_predictions(s1, cfg)
    systems = list(s1.systems)

    def ev(p):
        return evaluate(s1.y, p, systems, bootstrap=0).to_dict()

    members = {c: ev(p) for c, p in res.members.items()}
    best = max(s1.columns, key=lambda c: _nan_to(members[c]["utterance"]["SRCC"], -2.0))
    ens = ev(res.ensemble)
    cands = {name: ev(p) for name, p in res.candidates.items() if np.isfinite(p).all()}
    cv = ev(res.cv_member)
    return {"status": "done", "outer_folds": len(s1.outer), "inner_folds": len(s1.outer[0].inner),
            "ensemble": ens, "members": members, "stage2": cands, "best_member": best,
            "ensemble_minus_best_srcc": ens["utterance"]["SRCC"] - members[best]["utterance"]["SRCC"],
            "cv_member": cv, "ensemble_minus_cv_member_srcc": ens["utterance"]["SRCC"] - cv["utterance"]["SRCC"],
            "folds": res.folds, "label_variance": float(np.var(s1.y))}


def _nan_to(x, v):
    return v if x is None or not np.isfinite(x) else x

