"""Aggregates per system and metric: n, n_errors, mean, std and a 95% bootstrap CI.

The aggregation is the metric's declared one (:class:`~speechqe.metric.OutputSpec`):

* ``mean``: the mean of per-item values; the CI is the percentile bootstrap of the mean.
* ``ratio``: the sum of a numerator over the sum of a denominator, both read from each record's
  ``extra`` (corpus WER = summed edits / summed reference words); the CI resamples items and
  recomputes the ratio of sums. ``std`` is then the std of the per-item values.

Error records are counted in ``n_errors`` and never enter the statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

#: Bootstrap resamples and seed (fixed, so reports are reproducible).
N_BOOTSTRAP = 1000
SEED = 0


@dataclass(frozen=True)
class Aggregate:
    system: str
    metric: str
    n: int
    n_errors: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    aggregation: str = "mean"

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system, "metric": self.metric, "n": self.n,
            "n_errors": self.n_errors, "mean": self.mean, "std": self.std,
            "ci_low": self.ci_low, "ci_high": self.ci_high, "aggregation": self.aggregation,
        }


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


def columns(rows: Sequence[Mapping[str, Any]], spec: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-item values of ok records, as the metric aggregates them: the values (``mean``), or
    numerators and denominators from ``extra`` (``ratio``)."""
    if spec is not None and spec.aggregation == "ratio":
        num_key, den_key = spec.ratio
        num = np.array([float(r["extra"][num_key]) for r in rows], dtype=np.float64)
        den = np.array([float(r["extra"][den_key]) for r in rows], dtype=np.float64)
        return num, den
    return np.array([float(r["value"]) for r in rows], dtype=np.float64), None


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
        idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
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
        ia = ib = rng.integers(0, n, size=(n_boot, n))
    else:
        ia = rng.integers(0, a.size, size=(n_boot, a.size))
        ib = rng.integers(0, b.size, size=(n_boot, b.size))
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


def aggregate(
    records: Iterable[Mapping[str, Any]],
    output_specs: Mapping[str, Any] | None = None,
    *,
    n_boot: int = N_BOOTSTRAP,
) -> list[Aggregate]:
    """Aggregate long-format records (``system, metric, value, status, extra``) per system and
    metric, plus an ``ALL`` row per metric. ``output_specs`` maps metric names to their
    :class:`~speechqe.metric.OutputSpec` (default: the registry's)."""
    if output_specs is None:
        from speechqe.plugins import output_specs as _specs

        output_specs = _specs()
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["system"], r["metric"]), []).append(r)
        groups.setdefault(("ALL", r["metric"]), []).append(r)
    out = []
    for (system, metric), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0] == "ALL", kv[0][0])):
        spec = output_specs.get(metric)
        ok = [r for r in rows if r["status"] == "ok"]
        n_err = len(rows) - len(ok)
        values = np.array([float(r["value"]) for r in ok], dtype=np.float64)
        std = float(values.std(ddof=1)) if values.size > 1 else (0.0 if values.size else math.nan)
        num, den = columns(ok, spec)
        mean = float(statistic(num, den)) if num.size else math.nan
        lo, hi = bootstrap_ci(num, den, n_boot=n_boot)
        agg = "ratio" if den is not None else "mean"
        out.append(
            Aggregate(system, metric, int(values.size), n_err, mean, std, lo, hi, agg)
        )
    return out
