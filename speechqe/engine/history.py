"""Run history: compare two runs per system and metric, flag regressions, follow trends.

A comparison pairs the two runs' items by ``(system, item_id)`` and estimates the change of
each system's aggregate (``B - A``) with a **paired bootstrap**: the same resampled items are
used for both runs, so the CI reflects the change, not the spread of the items (a mean over
utterances of very different difficulty moves little between two runs of the same system, and
an unpaired CI would hide real drops). The statistic is the metric's declared aggregation
(:mod:`speechqe.engine.aggregate`): the mean, or the ratio of sums (corpus WER) recomputed on every
resample. When fewer than two items pair up (different sets), the runs are compared as two
independent samples and the result says so.

A change is a **regression** when, in the metric's worse direction
(:attr:`OutputSpec.higher_is_better`, never guessed from the name):

* the whole CI lies on the worse side of zero (the drop is not noise), and
* the change exceeds the threshold of :class:`RegressionPolicy` (per metric in its own unit, or
  relative to the baseline's magnitude), so that significant but negligible drifts on large
  sets do not page anyone.

An improvement is the mirror image. Metrics without a direction are compared but never flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from speechqe.engine.aggregate import N_BOOTSTRAP, SEED, aggregate, bootstrap, columns, statistic
from speechqe.errors import ConfigError


@dataclass(frozen=True)
class RegressionPolicy:
    """When a worse change counts as a regression.

    Attributes:
        relative: the smallest worse change, as a fraction of the baseline's magnitude
            (``0.01``: 1% of ``|mean_A|``), for metrics without an absolute threshold.
        absolute: per-metric smallest worse change in the metric's unit, e.g.
            ``(("pesq", 0.05), ("wer", 0.005))``; overrides ``relative``.
        level: confidence level of the bootstrap CI.
        n_boot, seed: bootstrap resamples and seed (fixed: reports are reproducible).
    """

    relative: float = 0.01
    absolute: tuple[tuple[str, float], ...] = ()
    level: float = 0.95
    n_boot: int = N_BOOTSTRAP
    seed: int = SEED

    def __post_init__(self) -> None:
        if not (self.relative >= 0 and math.isfinite(self.relative)):
            raise ConfigError(f"the relative regression threshold must be >= 0 (got {self.relative})")
        for name, value in self.absolute:
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"the regression threshold of {name} must be >= 0 (got {value})")
        if not 0.5 <= self.level < 1:
            raise ConfigError(f"the CI level must be in [0.5, 1) (got {self.level})")
        if self.n_boot < 100:
            raise ConfigError("use at least 100 bootstrap resamples")

    def threshold(self, metric: str, baseline: float) -> float:
        """The smallest worse change of ``metric`` that is flagged, in the metric's unit."""
        absolute = dict(self.absolute)
        if metric in absolute:
            return float(absolute[metric])
        return self.relative * abs(baseline) if math.isfinite(baseline) else 0.0

    @classmethod
    def parse(cls, relative: float = 0.01, thresholds: Iterable[str] = (), **kw: Any) -> "RegressionPolicy":
        """From the command line: ``--threshold pesq=0.05`` entries."""
        absolute = []
        for spec in thresholds:
            name, sep, value = spec.partition("=")
            try:
                absolute.append((name.strip(), float(value)))
            except ValueError:
                sep = ""
            if not sep or not name.strip():
                raise ConfigError(f"a threshold is METRIC=VALUE (got {spec!r})")
        return cls(relative=relative, absolute=tuple(absolute), **kw)


@dataclass(frozen=True)
class Change:
    """The change of one system's aggregate of one metric from run A to run B."""

    system: str
    metric: str
    mean_a: float
    mean_b: float
    delta: float  # mean_b - mean_a
    ci_low: float
    ci_high: float
    n_a: int
    n_b: int
    n_paired: int
    paired: bool
    n_errors_a: int
    n_errors_b: int
    higher_is_better: bool | None
    threshold: float
    aggregation: str = "mean"
    unit: str = ""

    @property
    def worse_by(self) -> float:
        """How much worse B is than A in the metric's direction (negative: better; NaN: no
        direction)."""
        if self.higher_is_better is None or not math.isfinite(self.delta):
            return math.nan
        return -self.delta if self.higher_is_better else self.delta

    def _worse_ci(self) -> tuple[float, float] | None:
        """The CI of :attr:`worse_by` (``None`` without a direction or a CI)."""
        if self.higher_is_better is None or not (
            math.isfinite(self.ci_low) and math.isfinite(self.ci_high)
        ):
            return None
        return (-self.ci_high, -self.ci_low) if self.higher_is_better else (self.ci_low, self.ci_high)

    @property
    def regression(self) -> bool:
        """Worse beyond the threshold, with the whole CI on the worse side of zero."""
        ci = self._worse_ci()
        return ci is not None and ci[0] > 0 and self.worse_by > self.threshold

    @property
    def improvement(self) -> bool:
        ci = self._worse_ci()
        return ci is not None and ci[1] < 0 and -self.worse_by > self.threshold

    @property
    def flag(self) -> str:
        return "regression" if self.regression else ("improvement" if self.improvement else "")

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d.update(worse_by=self.worse_by, flag=self.flag)
        return d


# ------------------------------------------------------------------------------------------
# Comparing runs
# ------------------------------------------------------------------------------------------
def compare_records(
    records_a: Iterable[Mapping[str, Any]],
    records_b: Iterable[Mapping[str, Any]],
    output_specs: Mapping[str, Any] | None = None,
    policy: RegressionPolicy | None = None,
) -> list[Change]:
    """Per system and metric present in both runs: the change from A to B with its CI.

    Records are the long-format results (``system, item_id, metric, value, status, extra``).
    Error records are counted, never compared.
    """
    if output_specs is None:
        from speechqe.plugins import output_specs as _specs

        output_specs = _specs()
    policy = policy or RegressionPolicy()
    groups: dict[tuple[str, str], tuple[dict, dict]] = {}
    for side, recs in ((0, records_a), (1, records_b)):
        for r in recs:
            g = groups.setdefault((r["system"], r["metric"]), ({}, {}))
            g[side][r["item_id"]] = r
    out = []
    for (system, metric), (ra, rb) in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if not ra or not rb:
            continue  # a system or metric only in one run: nothing to compare
        spec = output_specs.get(metric)
        ok_a = {k: r for k, r in ra.items() if r["status"] == "ok"}
        ok_b = {k: r for k, r in rb.items() if r["status"] == "ok"}
        common = sorted(set(ok_a) & set(ok_b))
        if len(common) >= 2:
            xa, da = columns([ok_a[k] for k in common], spec)
            xb, db = columns([ok_b[k] for k in common], spec)
            delta, lo, hi = bootstrap(xa, da, xb, db, paired=True, n_boot=policy.n_boot,
                                      seed=policy.seed, level=policy.level)
            paired = True
        else:
            xa, da = columns(list(ok_a.values()), spec)
            xb, db = columns(list(ok_b.values()), spec)
            delta, lo, hi = bootstrap(xa, da, xb, db, paired=False, n_boot=policy.n_boot,
                                      seed=policy.seed, level=policy.level)
            paired = False
        # The means shown are each run's own aggregate over all its ok items.
        fa, fda = columns(list(ok_a.values()), spec)
        fb, fdb = columns(list(ok_b.values()), spec)
        mean_a = float(statistic(fa, fda)) if fa.size else math.nan
        mean_b = float(statistic(fb, fdb)) if fb.size else math.nan
        out.append(
            Change(
                system=system, metric=metric, mean_a=mean_a, mean_b=mean_b, delta=delta,
                ci_low=lo, ci_high=hi, n_a=len(ok_a), n_b=len(ok_b),
                n_paired=len(common) if paired else 0, paired=paired,
                n_errors_a=len(ra) - len(ok_a), n_errors_b=len(rb) - len(ok_b),
                higher_is_better=None if spec is None else spec.higher_is_better,
                threshold=policy.threshold(metric, mean_a),
                aggregation="mean" if spec is None else spec.aggregation,
                unit="" if spec is None else spec.unit,
            )
        )
    return out


@dataclass
class Comparison:
    """Two runs and the changes between them."""

    run_a: dict[str, Any]
    run_b: dict[str, Any]
    changes: list[Change]
    policy: RegressionPolicy = field(default_factory=RegressionPolicy)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regression]

    @property
    def improvements(self) -> list[Change]:
        return [c for c in self.changes if c.improvement]


def compare_runs(store, run_a: str, run_b: str, policy: RegressionPolicy | None = None) -> Comparison:
    """Compare two stored runs (ids, unique prefixes or ``latest``)."""
    a, b = store.run(run_a), store.run(run_b)
    policy = policy or RegressionPolicy()
    changes = compare_records(store.results(a["run_id"]), store.results(b["run_id"]), policy=policy)
    return Comparison(a, b, changes, policy)


def baseline_for(store, run: Mapping[str, Any]) -> dict[str, Any] | None:
    """The run a run is compared with by default: the latest earlier finished run with the
    same name (the same watched set), or ``None``."""
    earlier = [
        r for r in store.runs(name=run["name"])
        if r["status"] == "finished" and r["run_id"] != run["run_id"]
        and (r["started_at"], r["run_id"]) < (run["started_at"], run["run_id"])
    ]
    return earlier[-1] if earlier else None


# ------------------------------------------------------------------------------------------
# Trends
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrendPoint:
    run_id: str
    started_at: Any
    system: str
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    n: int
    n_errors: int


def trend(
    store,
    name: str,
    *,
    until: Mapping[str, Any] | None = None,
    limit: int = 20,
    n_boot: int = 200,
    aggregates_of=None,
) -> list[TrendPoint]:
    """Per-system aggregates of the last ``limit`` finished runs named ``name`` (up to and
    including ``until``), oldest first. ``aggregates_of(run_id)`` may supply memoised
    aggregates (the dashboard); by default they are computed with ``n_boot`` resamples."""
    runs = [r for r in store.runs(name=name) if r["status"] == "finished"]
    if until is not None:
        runs = [r for r in runs if (r["started_at"], r["run_id"]) <= (until["started_at"], until["run_id"])]
    runs = runs[-limit:]
    out = []
    for r in runs:
        aggs = (
            aggregates_of(r["run_id"]) if aggregates_of is not None
            else aggregate(store.results(r["run_id"]), n_boot=n_boot)
        )
        for a in aggs:
            if a.system == "ALL":
                continue
            out.append(TrendPoint(r["run_id"], r["started_at"], a.system, a.metric, a.mean,
                                  a.ci_low, a.ci_high, a.n, a.n_errors))
    return out
