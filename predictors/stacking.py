"""Stacking (UTMOS's ensemble): stage-1 out-of-fold predictions of every learner, stage-2
learners trained on them, and a stage-3 ridge regression on the stage-2 out-of-fold
predictions.

Folds are grouped (by system, speaker, text or item) so no group is ever on both sides of a
split: a learner never sees another utterance of the system (or sentence, or speaker) it is
predicting, which is what makes the out-of-fold predictions an honest training signal for the
next stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from speechqe.errors import ConfigError

from .weak.learners import Learner, LearnerSpec, load_learner, make_learner, save_learner

Fold = tuple[np.ndarray, np.ndarray]


def make_folds(groups: Sequence[str], n_folds: int, seed: int = 0) -> list[Fold]:
    """Grouped K-fold splits (each group in exactly one test fold), shuffled by ``seed``.

    Raises:
        ConfigError: fewer groups than folds.
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


DEFAULT_STAGE2 = (
    LearnerSpec("ridge"),
    LearnerSpec("svr"),
    LearnerSpec("gp"),
    LearnerSpec("lightgbm", {"n_estimators": 100, "num_leaves": 7}),
)


@dataclass(frozen=True)
class StackingConfig:
    """Stage-2 learners and the stage-3 ridge's regularisation."""

    stage2: tuple[LearnerSpec, ...] = DEFAULT_STAGE2
    stage3_alpha: float = 1.0


@dataclass
class Stack:
    """Fitted stages 2 and 3 over named stage-1 columns."""

    columns: list[str]
    stage2: list[tuple[str, Learner]]
    stage3: Learner
    stage2_oof: np.ndarray | None = field(default=None, repr=False)

    def predict(self, Z: np.ndarray) -> np.ndarray:
        """``Z``: ``(n, len(columns))`` stage-1 predictions -> ``(n,)`` ensemble scores."""
        Z = np.asarray(Z, dtype=np.float64)
        if Z.ndim != 2 or Z.shape[1] != len(self.columns):
            raise ValueError(f"expected (n, {len(self.columns)}) stage-1 predictions, got {Z.shape}")
        S = np.column_stack([m.predict(Z) for _, m in self.stage2])
        return self.stage3.predict(S)

    def stage2_predict(self, Z: np.ndarray) -> dict[str, np.ndarray]:
        return {name: m.predict(Z) for name, m in self.stage2}

    # --- files ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> dict:
        folder = Path(folder)
        for name, m in self.stage2:
            save_learner(m, folder, f"stage2_{name}")
        save_learner(self.stage3, folder, "stage3")
        return {"columns": self.columns, "stage2": [name for name, _ in self.stage2]}

    @classmethod
    def load(cls, folder: str | Path, meta: dict) -> "Stack":
        folder = Path(folder)
        stage2 = [(name, load_learner(folder, f"stage2_{name}")) for name in meta["stage2"]]
        return cls(list(meta["columns"]), stage2, load_learner(folder, "stage3"))


def fit_stack(
    Z: np.ndarray, y: np.ndarray, columns: Sequence[str], folds: Sequence[Fold],
    cfg: StackingConfig = StackingConfig(),
) -> Stack:
    """Fit stage 2 on the stage-1 out-of-fold matrix ``Z`` and stage 3 on stage 2's own
    out-of-fold predictions (same grouped folds)."""
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    names = _unique_names([s.kind for s in cfg.stage2])
    oof = np.column_stack([
        out_of_fold(lambda tr, te, s=spec: make_learner(s).fit(Z[tr], y[tr]).predict(Z[te]), len(y), folds)
        for spec in cfg.stage2
    ])
    stage2 = [(n, make_learner(s).fit(Z, y)) for n, s in zip(names, cfg.stage2)]
    stage3 = make_learner(LearnerSpec("ridge", {"alpha": cfg.stage3_alpha})).fit(oof, y)
    return Stack(list(columns), stage2, stage3, stage2_oof=oof)


def _unique_names(kinds: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for k in kinds:
        seen[k] = seen.get(k, 0) + 1
        out.append(k if seen[k] == 1 else f"{k}{seen[k]}")
    return out
