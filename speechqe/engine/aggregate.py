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

from speechqe.stats import (  # noqa: F401  (the one bootstrap, re-exported for the engine)
    N_BOOTSTRAP,
    SEED,
    bootstrap,
    bootstrap_ci,
    percentile_ci,
    statistic,
)


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


def columns(rows: Sequence[Mapping[str, Any]], spec: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-item values of ok records, as the metric aggregates them: the values (``mean``), or
    numerators and denominators from ``extra`` (``ratio``)."""
    if spec is not None and spec.aggregation == "ratio":
        num_key, den_key = spec.ratio
        num = np.array([float(r["extra"][num_key]) for r in rows], dtype=np.float64)
        den = np.array([float(r["extra"][den_key]) for r in rows], dtype=np.float64)
        return num, den
    return np.array([float(r["value"]) for r in rows], dtype=np.float64), None


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
