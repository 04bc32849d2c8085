"""Cosine similarity of embeddings and the equal error rate (EER) of verification trials.

The EER is the operating point where the false-acceptance rate (different-speaker trials scored
at or above the threshold) equals the false-rejection rate (same-speaker trials scored below
it). With finitely many trials the two rates are step functions that rarely meet exactly; we
take the crossing of the piecewise-linear ROC curve (the points of every distinct threshold,
joined by straight lines) with the line FAR = FRR. This is the same value as the common recipe
``brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)`` on scikit-learn's ``roc_curve``
(checked in ``tests/speaker/test_eer.py``), computed exactly instead of by root finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors ``(dim,)``; in [-1, 1].

    Raises:
        ValueError: shapes differ or a vector is zero.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {a.shape} vs {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ValueError("cannot compare a zero embedding")
    return float(np.clip(np.dot(a, b) / (na * nb), -1.0, 1.0))


@dataclass(frozen=True)
class EERResult:
    """Equal error rate of a set of trials.

    Attributes:
        eer: the rate in [0, 1] where false acceptance equals false rejection.
        threshold: the score threshold at (or at the start of the ROC segment containing) the
            crossing; accept a trial when its score >= threshold.
        n_target, n_nontarget: same-speaker and different-speaker trial counts.
    """

    eer: float
    threshold: float
    n_target: int
    n_nontarget: int


def eer(scores: Sequence[float], labels: Sequence[bool | int]) -> EERResult:
    """Equal error rate of trials with ``scores`` (higher = more likely the same speaker) and
    ``labels`` (1/True: same speaker).

    Raises:
        ValueError: no target or no non-target trial, lengths differ, or a score is not finite.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the EER needs both same-speaker and different-speaker trials")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # one ROC point per distinct threshold (ties move together), starting from "accept none"
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.r_[0, np.cumsum(y)[last]]
    fp = np.r_[0, np.cumsum(~y)[last]]
    thresholds = np.r_[np.inf, s[last]]
    far = fp / n_neg
    # FRR - FAR scaled by n_pos * n_neg: exact integers, so a crossing exactly on a ROC point
    # is found as such (no floating-point noise); decreasing along the curve
    d = (n_pos - tp).astype(np.int64) * n_neg - fp.astype(np.int64) * n_pos
    k = int(np.flatnonzero(d <= 0)[0])  # first point at or past the crossing
    if d[k] == 0:
        return EERResult(float(far[k]), float(thresholds[k]), n_pos, n_neg)
    # the crossing lies on the segment from point k-1 (d > 0) to point k (d < 0)
    t = d[k - 1] / (d[k - 1] - d[k])
    rate = far[k - 1] + t * (far[k] - far[k - 1])
    return EERResult(float(rate), float(thresholds[k]), n_pos, n_neg)


def trial_scores(
    embeddings: np.ndarray, speakers: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """All pairwise trials of a set of embeddings: cosine scores and same-speaker labels.

    Args:
        embeddings: ``(n, dim)``.
        speakers: ``n`` speaker labels.
    Returns:
        ``(scores, labels)`` over the ``n * (n - 1) / 2`` unordered pairs.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    pairs = list(combinations(range(len(e)), 2))
    scores = np.array([float(e[i] @ e[j]) for i, j in pairs])
    labels = np.array([speakers[i] == speakers[j] for i, j in pairs])
    return scores, labels
