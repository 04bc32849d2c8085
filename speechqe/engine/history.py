"""Run history: compare two runs per system and metric, flag regressions, follow trends.

A comparison pairs the two runs' records by ``(system, metric, item_id)``. For each system
and metric output it reports:

* **the change over the paired items.** The items with an ok value in both runs are the
  pairs; both means (``mean_a``, ``mean_b``) and the change ``B - A`` are computed over them,
  with a **paired bootstrap** CI (:func:`speechqe.engine.aggregate.bootstrap`): the same
  resampled items are used for both runs, so the CI reflects the change, not the spread of the
  items. The statistic is the metric's declared aggregation: the mean, or the ratio of sums
  (corpus WER) recomputed on every resample. With fewer than two pairs (different sets) the
  runs' ok items are compared as two independent samples and the result says so
  (``paired=False``).
* **lost output.** Items with an ok value in A that B lacks (``n_missing``) or that B records
  as an error (``n_new_errors``), and whole systems or metrics of A that B lacks
  (``presence='a_only'``). A nightly gate that compares only what both runs contain passes
  when a system disappears; here lost output is a regression unless the policy allows it
  (:attr:`RegressionPolicy.allow_missing`, ``--allow-missing``).
* what is new in B (items, systems, metrics), shown and never flagged.

A change is a **regression** when B lost output (above, unless allowed) or when, in the
metric's worse direction (:attr:`OutputSpec.higher_is_better`, never guessed from the name):

* the whole CI lies on the worse side of zero (the drop is not noise), and
* the change exceeds the threshold (:meth:`RegressionPolicy.threshold`: ``--threshold
  METRIC=VALUE``, else the output's declared :attr:`OutputSpec.regression_threshold`, else
  ``--relative`` times the baseline's magnitude), so that significant but negligible drifts
  on large sets do not page anyone.

An improvement is the mirror image (lost output never counts as one). Metrics without a
direction are compared but only flagged for lost output. Two runs with no system and metric
in common are not a comparison (:attr:`Comparison.empty`): the command line refuses them and
the flow's gate fails on them, instead of reporting "0 regressions".
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

from pydantic import Field, field_validator

from speechqe.config import StrictModel, validate
from speechqe.engine.aggregate import N_BOOTSTRAP, SEED, aggregate, bootstrap, columns, statistic
from speechqe.errors import ConfigError

#: ``presence`` of a (system, metric) pair: in both runs, only in the baseline (lost), or only
#: in the compared run (new).
Presence = Literal["both", "a_only", "b_only"]


class RegressionPolicy(StrictModel):
    """When a worse change counts as a regression (a typed config: unknown keys and bad
    values are :class:`ConfigError`\\ s naming them).

    Attributes:
        relative: the smallest worse change, as a fraction of the baseline's magnitude
            (``0.01``: 1% of ``|mean_A|``), for outputs with neither a ``--threshold`` nor a
            declared :attr:`OutputSpec.regression_threshold`.
        absolute: per-output smallest worse change in the output's unit, e.g.
            ``(("pesq", 0.05), ("wer", 0.005))`` (a mapping is accepted too); overrides the
            declared threshold and ``relative``. Names are checked against the known outputs
            (:meth:`check_names`).
        allow_missing: lost output (systems, metrics or items of A that B lacks or newly
            fails) is listed but is not a regression.
        level: confidence level of the bootstrap CI.
        n_boot, seed: bootstrap resamples and seed (fixed: reports are reproducible).
    """

    relative: float = 0.01
    absolute: tuple[tuple[str, float], ...] = ()
    allow_missing: bool = False
    level: float = 0.95
    n_boot: int = N_BOOTSTRAP
    seed: int = SEED

    def __init__(self, **data: Any) -> None:
        # Direct construction gives the project's one error style too (nested in a config,
        # pydantic reports through the parent's validation instead).
        try:
            super().__init__(**data)
        except Exception as exc:  # pydantic.ValidationError
            from pydantic import ValidationError

            from speechqe.config import describe_errors

            if isinstance(exc, ValidationError):
                raise ConfigError(describe_errors(exc, RegressionPolicy, "regression policy")) from None
            raise

    @field_validator("relative")
    @classmethod
    def _relative(cls, v: float) -> float:
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"the relative regression threshold must be >= 0 (got {v})")
        return v

    @field_validator("absolute", mode="before")
    @classmethod
    def _absolute(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            v = list(v.items())
        return tuple(sorted((str(k).strip(), val) for k, val in (v or ())))

    @field_validator("absolute")
    @classmethod
    def _absolute_values(cls, v: tuple[tuple[str, float], ...]) -> tuple[tuple[str, float], ...]:
        names = [n for n, _ in v]
        for name, value in v:
            if not name:
                raise ValueError("a regression threshold needs a metric output name")
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"the regression threshold of {name} must be >= 0 (got {value})")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"regression threshold given twice for {', '.join(dup)}")
        return v

    @field_validator("level")
    @classmethod
    def _level(cls, v: float) -> float:
        if not 0.5 <= v < 1:
            raise ValueError(f"the CI level must be in [0.5, 1) (got {v})")
        return v

    @field_validator("n_boot")
    @classmethod
    def _n_boot(cls, v: int) -> int:
        if v < 100:
            raise ValueError(f"use at least 100 bootstrap resamples (got {v})")
        return v

    def threshold(self, metric: str, baseline: float, spec: Any = None) -> float:
        """The smallest worse change of output ``metric`` that is flagged, in its unit: the
        policy's own threshold for it, else ``spec.regression_threshold`` (the output's
        declared default), else :attr:`relative` times ``|baseline|``."""
        absolute = dict(self.absolute)
        if metric in absolute:
            return float(absolute[metric])
        declared = getattr(spec, "regression_threshold", None)
        if declared is not None:
            return float(declared)
        return self.relative * abs(baseline) if math.isfinite(baseline) else 0.0

    def threshold_source(self, metric: str, spec: Any = None) -> str:
        """Where :meth:`threshold` takes its value from: ``'given'``, ``'declared'`` or
        ``'relative'``."""
        if metric in dict(self.absolute):
            return "given"
        return "declared" if getattr(spec, "regression_threshold", None) is not None else "relative"

    def check_names(self, known: Iterable[str]) -> "RegressionPolicy":
        """Raise :class:`ConfigError` when a threshold names an output that is not in
        ``known`` (a typo such as ``wr=0.1`` would otherwise silently never apply)."""
        known = sorted(set(known))
        unknown = [n for n, _ in self.absolute if n not in known]
        if unknown:
            hints = []
            for n in unknown:
                close = difflib.get_close_matches(n, known, n=1)
                hints.append(f"'{n}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise ConfigError(
                f"regression threshold for unknown metric output {', '.join(hints)}; "
                f"thresholds are per output: {', '.join(known) or 'none registered'}"
            )
        return self

    @classmethod
    def parse(
        cls,
        relative: float = 0.01,
        thresholds: Iterable[str] | Mapping[str, float] = (),
        *,
        known: Iterable[str] | None = None,
        **kw: Any,
    ) -> "RegressionPolicy":
        """From the command line (``--threshold wer=0.01`` entries) or a mapping (flow
        parameters). ``known``: the output names the thresholds may name (default: every
        output of the registered metrics).

        Raises:
            ConfigError: an entry that is not ``METRIC=VALUE``, a bad value, an unknown name.
        """
        if isinstance(thresholds, Mapping):
            absolute = list(thresholds.items())
        else:
            absolute = []
            for spec in thresholds:
                name, sep, value = str(spec).partition("=")
                try:
                    number = float(value)
                except ValueError:
                    sep = ""
                if not sep or not name.strip():
                    raise ConfigError(f"a threshold is METRIC=VALUE, e.g. wer=0.01 (got {spec!r})")
                absolute.append((name.strip(), number))
        policy = validate(cls, {"relative": relative, "absolute": absolute, **kw},
                          "regression policy")
        if known is None:
            from speechqe.plugins import output_specs

            known = output_specs()
        return policy.check_names(known)


@dataclass(frozen=True)
class Change:
    """The change of one system's aggregate of one metric output from run A to run B.

    ``mean_a``, ``mean_b`` and ``delta`` are over the ``n_paired`` items with an ok value in
    both runs (``paired``); with fewer than two pairs, over each run's ok items, compared as
    independent samples (``paired=False``). ``n_a``/``n_b``: ok items of each run;
    ``n_missing``: ok in A, no record in B; ``n_new_errors``: ok in A, an error in B;
    ``n_new``: ok in B, no record in A; ``lost_items``: the ids behind ``n_missing`` and
    ``n_new_errors``. ``presence``: ``'both'``, ``'a_only'`` (the whole system/metric is gone
    from B) or ``'b_only'`` (new in B). ``allow_missing``: the policy's, so that lost output
    is listed without being a regression.
    """

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
    presence: Presence = "both"
    n_missing: int = 0
    n_new_errors: int = 0
    n_new: int = 0
    lost_items: tuple[str, ...] = ()
    allow_missing: bool = False
    threshold_source: str = "relative"

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
    def lost(self) -> bool:
        """B lacks output that A had: the whole system/metric, items, or items now failing."""
        return self.presence == "a_only" or self.n_missing > 0 or self.n_new_errors > 0

    @property
    def significant_drop(self) -> bool:
        """Worse beyond the threshold, with the whole CI on the worse side of zero."""
        ci = self._worse_ci()
        return ci is not None and ci[0] > 0 and self.worse_by > self.threshold

    @property
    def regression(self) -> bool:
        """A significant drop, or lost output (unless the policy allows it)."""
        return self.significant_drop or (self.lost and not self.allow_missing)

    @property
    def improvement(self) -> bool:
        ci = self._worse_ci()
        return (not self.regression and ci is not None and ci[1] < 0
                and -self.worse_by > self.threshold)

    @property
    def flag(self) -> str:
        return "regression" if self.regression else ("improvement" if self.improvement else "")

    @property
    def lost_text(self) -> str:
        """What B lost, in words (``''`` when nothing)."""
        if self.presence == "a_only":
            return f"missing in B ({self.n_a} items in A)"
        parts = []
        if self.n_missing:
            parts.append(f"{self.n_missing} of {self.n_a} items missing in B")
        if self.n_new_errors:
            parts.append(f"{self.n_new_errors} newly erroring in B")
        return ", ".join(parts)

    @property
    def reasons(self) -> list[str]:
        """Why the change is flagged (empty when it is not)."""
        out = []
        if self.significant_drop:
            out.append(f"worse by {self.worse_by:.4g} (threshold {self.threshold:.4g}, CI "
                       f"[{self.ci_low:.4g}, {self.ci_high:.4g}])")
        if self.lost and not self.allow_missing:
            out.append(self.lost_text)
        return out

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["lost_items"] = list(self.lost_items)
        d.update(worse_by=self.worse_by, flag=self.flag, lost=self.lost, reasons=self.reasons)
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
    """Per system and metric output of either run: the change from A to B, with its CI and
    what B lost (see the module docstring).

    Records are the long-format results (``system, item_id, metric, value, status, extra``).
    Error records are counted, never compared.

    Raises:
        ConfigError: a threshold of ``policy`` names an output that is neither registered nor
            in the records.
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
    policy.check_names(set(output_specs) | {m for _, m in groups})
    out = []
    for (system, metric), (ra, rb) in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        spec = output_specs.get(metric)
        ok_a = {k: r for k, r in ra.items() if r["status"] == "ok"}
        ok_b = {k: r for k, r in rb.items() if r["status"] == "ok"}
        common = sorted(set(ok_a) & set(ok_b))
        missing = sorted(k for k in ok_a if k not in rb)
        new_errors = sorted(k for k in ok_a if k in rb and rb[k]["status"] != "ok")
        presence: Presence = "both" if ra and rb else ("a_only" if ra else "b_only")
        if len(common) >= 2:
            xa, da = columns([ok_a[k] for k in common], spec)
            xb, db = columns([ok_b[k] for k in common], spec)
            paired = True
        else:  # independent samples (a new set, or one side empty: NaN)
            xa, da = columns(list(ok_a.values()), spec)
            xb, db = columns(list(ok_b.values()), spec)
            paired = False
        delta, lo, hi = bootstrap(xa, da, xb, db, paired=paired, n_boot=policy.n_boot,
                                  seed=policy.seed, level=policy.level)
        mean_a = float(statistic(xa, da)) if xa.size else math.nan
        mean_b = float(statistic(xb, db)) if xb.size else math.nan
        out.append(
            Change(
                system=system, metric=metric, mean_a=mean_a, mean_b=mean_b, delta=delta,
                ci_low=lo, ci_high=hi, n_a=len(ok_a), n_b=len(ok_b),
                n_paired=len(common) if paired else 0, paired=paired,
                n_errors_a=len(ra) - len(ok_a), n_errors_b=len(rb) - len(ok_b),
                higher_is_better=None if spec is None else spec.higher_is_better,
                threshold=policy.threshold(metric, mean_a, spec),
                aggregation="mean" if spec is None else spec.aggregation,
                unit="" if spec is None else spec.unit,
                presence=presence, n_missing=len(missing),
                n_new_errors=len(new_errors), n_new=sum(1 for k in ok_b if k not in ra),
                lost_items=tuple(missing + new_errors), allow_missing=policy.allow_missing,
                threshold_source=policy.threshold_source(metric, spec),
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
        """Significant drops and (unless the policy allows it) lost output."""
        return [c for c in self.changes if c.regression]

    @property
    def improvements(self) -> list[Change]:
        return [c for c in self.changes if c.improvement]

    @property
    def lost(self) -> list[Change]:
        """Systems/metrics/items of A that B lacks or newly fails (regressions or not)."""
        return [c for c in self.changes if c.lost]

    @property
    def new(self) -> list[Change]:
        """Systems/metrics only B has."""
        return [c for c in self.changes if c.presence == "b_only"]

    @property
    def empty(self) -> bool:
        """No system and metric has records in both runs: nothing was compared."""
        return not any(c.presence == "both" for c in self.changes)

    def describe_empty(self) -> str:
        """Why the comparison is empty, naming what each run holds."""
        def held(side: str) -> str:
            cs = [c for c in self.changes if c.presence == side]
            systems = sorted({c.system for c in cs})
            metrics = sorted({c.metric for c in cs})
            if not cs:
                return "no records"
            return (f"systems {', '.join(systems[:5])}{' ...' if len(systems) > 5 else ''}; "
                    f"metrics {', '.join(metrics[:8])}{' ...' if len(metrics) > 8 else ''}")

        return (f"runs {self.run_a['run_id']} and {self.run_b['run_id']} have no system and "
                f"metric in common, so nothing can be compared (A: {held('a_only')}; "
                f"B: {held('b_only')})")

    def gate_failures(self) -> list[str]:
        """Why a regression gate fails (empty when it passes): each regression with its
        reasons, or the empty comparison."""
        if self.empty:
            return [self.describe_empty()]
        return [f"{c.system} / {c.metric}: {'; '.join(c.reasons)}" for c in self.regressions]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a["run_id"], "run_b": self.run_b["run_id"],
            "policy": self.policy.model_dump(mode="json"), "empty": self.empty,
            "n_regressions": len(self.regressions), "n_improvements": len(self.improvements),
            "n_lost": len(self.lost), "gate_failures": self.gate_failures(),
            "changes": [c.as_dict() for c in self.changes],
        }


def compare_runs(store, run_a: str, run_b: str, policy: RegressionPolicy | None = None) -> Comparison:
    """Compare two stored runs (ids, unique prefixes or ``latest``). An empty comparison is
    returned as such (:attr:`Comparison.empty`); a gate must refuse it."""
    a, b = store.run(run_a), store.run(run_b)
    policy = policy or RegressionPolicy()
    changes = compare_records(store.results(a["run_id"]), store.results(b["run_id"]), policy=policy)
    return Comparison(a, b, changes, policy)


# ------------------------------------------------------------------------------------------
# What a run was asked to do
# ------------------------------------------------------------------------------------------
def run_parameters(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run's recorded parameters (the ``runs.params`` JSON of :meth:`EvaluationConfig.as_params`:
    ``source``, ``references``, ``transcripts``, ``suite``, ``metrics``, ``device``,
    ``chunk_size``, ``retry_errors`` and ``params``, the metric parameters given with
    ``--param``/``params`` as ``{metric: {name: value}}``); ``{}`` when none were recorded
    (a run of the library API) or the text is not JSON."""
    raw = run.get("params")
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        out = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def metric_parameters(run: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The metric parameters a run was given, flattened and sorted: ``[('mcd.include_c0',
    False), ...]`` (empty: every metric at its defaults)."""
    given = run_parameters(run).get("params") or {}
    if not isinstance(given, Mapping):
        return []
    return sorted((f"{m}.{k}", v) for m, p in given.items() if isinstance(p, Mapping)
                  for k, v in p.items())


def _value_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value_text(x) for x in v) + "]"
    return str(v)


def describe_metric_parameters(run: Mapping[str, Any]) -> str:
    """``mcd.include_c0=false, stoi.max_length_diff_s=0.5``, or ``'defaults'``."""
    items = metric_parameters(run)
    return ", ".join(f"{k}={_value_text(v)}" for k, v in items) if items else "defaults"


def describe_selection(run: Mapping[str, Any]) -> str:
    """What the run scored with: ``suite default`` or ``metrics pesq, wer``."""
    if run.get("suite"):
        return f"suite {run['suite']}"
    metrics = run_parameters(run).get("metrics") or []
    if metrics:
        return "metrics " + ", ".join(str(m) for m in metrics)
    try:
        names = [m["name"] for m in json.loads(run.get("metrics") or "[]")]
    except (TypeError, ValueError, KeyError):
        names = []
    return ("metrics " + ", ".join(names)) if names else "-"


#: What each stored run status means, for people reading ``summary`` and reports.
STATUS_NOTES = {
    "finished": "",
    "interrupted": ("interrupted (Ctrl-C) before it finished: the results are what it stored "
                    "until then; rerun the same command to resume (stored records are reused)"),
    "running": ("still running, or killed without a chance to record it (SIGKILL, power loss): "
                "the results are what it stored so far; rerun the same command to resume"),
    "failed": "failed before it could score",
}


def status_note(run: Mapping[str, Any]) -> str:
    """A sentence on a run's status (``''`` for a finished run)."""
    status = str(run.get("status") or "")
    note = STATUS_NOTES.get(status, f"status {status}")
    if status == "failed" and run.get("error"):
        note += f": {run['error']}"
    return note


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
