"""Bootstrap confidence intervals: the one resampling code of speechqe (core, layer L0).

Run aggregates, run comparisons (paired and unpaired) and the MOS predictors' evaluation all
resample through :func:`bootstrap_indices` and read intervals with :func:`percentile_ci`; the
statistic of an aggregate is :func:`statistic` (a mean, or a ratio of sums for corpus WER).
"""

from __future__ import annotations

import math

import numpy as np

#: Bootstrap resamples and seed (fixed, so reports are reproducible).
N_BOOTSTRAP = 1000
SEED = 0


def bootstrap_indices(n: int, n_boot: int = N_BOOTSTRAP, seed: int | np.random.Generator = SEED
                      ) -> np.ndarray:
    """``(n_boot, n)`` item indices drawn with replacement: row ``b`` is resample ``b``."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n))


def statistic(values: np.ndarray, den: np.ndarray | None = None) -> np.ndarray | float:
    """The aggregate over the last axis: the mean, or ``sum(values) / sum(den)`` (ratio)."""
    if den is None:
        return values.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return values.sum(axis=-1) / den.sum(axis=-1)


def percentile_ci(stats: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap statistics (non-finite ones dropped)."""
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return (math.nan, math.nan)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return (float(lo), float(hi))


def bootstrap(
    a: np.ndarray,
    den_a: np.ndarray | None = None,
    b: np.ndarray | None = None,
    den_b: np.ndarray | None = None,
    *,
    paired: bool = False,
    n_boot: int = N_BOOTSTRAP,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """The one percentile bootstrap of speechqe: a statistic, or a change between two samples,
    with its confidence interval.

    The statistic is the mean, or ``sum(x) / sum(den)`` when denominators are given (corpus
    WER). With ``b`` absent it is ``stat(a)``; with ``b`` it is ``stat(b) - stat(a)``, and
    ``paired=True`` resamples the same item indices in both (``a`` and ``b`` aligned item by
    item: a paired comparison of two runs on the same items), ``paired=False`` resamples each
    sample on its own (independent samples).

    Args:
        a, b: ``(n,)`` values (numerators for ratios); den_a, den_b: ``(n,)`` denominators.
        n_boot, seed, level: resamples, RNG seed (fixed: reports are reproducible), CI level.

    Returns:
        ``(statistic, ci_low, ci_high)``: NaNs for an empty sample; a one-item sample (or
        one pair) gives a zero-width interval.
    """
    if b is None:
        n = a.size
        if n == 0:
            return (math.nan, math.nan, math.nan)
        v = float(statistic(a, den_a))
        if n == 1:
            return (v, v, v)
        idx = bootstrap_indices(n, n_boot, seed)
        return (v, *percentile_ci(statistic(a[idx], None if den_a is None else den_a[idx]), level))
    if paired and a.size != b.size:
        raise ValueError(f"paired samples differ in size ({a.size} vs {b.size})")
    if a.size == 0 or b.size == 0:
        return (math.nan, math.nan, math.nan)
    delta = float(statistic(b, den_b) - statistic(a, den_a))
    rng = np.random.default_rng(seed)
    if paired:
        n = a.size
        if n == 1:
            return (delta, delta, delta)
        ia = ib = bootstrap_indices(n, n_boot, rng)
    else:
        ia = bootstrap_indices(a.size, n_boot, rng)
        ib = bootstrap_indices(b.size, n_boot, rng)
    stats = statistic(b[ib], None if den_b is None else den_b[ib]) - statistic(
        a[ia], None if den_a is None else den_a[ia]
    )
    return (delta, *percentile_ci(stats, level))


def bootstrap_ci(
    values: np.ndarray,
    denominators: np.ndarray | None = None,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (or, with ``denominators``, of
    ``sum(values) / sum(denominators)``): :func:`bootstrap` of one sample."""
    return bootstrap(values, denominators, n_boot=n_boot, seed=seed, level=level)[1:]
