"""What a run report shows, gathered from the results store (no HTML here).

Every direction, unit and range comes from the metrics' :class:`OutputSpec` (pattern 13): a
metric that no longer exists in the registry is shown without a direction and never ranked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from speechqe.engine.aggregate import Aggregate, aggregate
from speechqe.errors import ConfigError
from speechqe.engine.history import (
    Comparison,
    RegressionPolicy,
    TrendPoint,
    baseline_for,
    compare_records,
    trend,
)

#: Fields of an ASR record's ``extra`` that the transcript view reads: the raw hypothesis, and
#: the normalised reference and hypothesis the metric scored (when it stores them).
HYPOTHESIS_KEYS = ("hypothesis", "hyp", "transcript")
NORMALISED_REF_KEYS = ("reference_normalised", "ref_normalised", "reference_norm", "ref_norm")
#: Bootstrap resamples of the CIs drawn on history trends (the run's own table uses 1000).
TREND_BOOTSTRAP = 200
NORMALISED_HYP_KEYS = ("hypothesis_normalised", "hyp_normalised", "hypothesis_norm", "hyp_norm")


def _first(extra: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for k in keys:
        v = extra.get(k)
        if isinstance(v, str):
            return v
    return None


@dataclass
class Transcript:
    """An item's transcript view: the reference text, and the ASR hypothesis of one scorer
    (with the normalised forms the metric scored, when it stored them)."""

    reference: str | None
    hypothesis: str | None = None
    scorer: str | None = None
    reference_normalised: str | None = None
    hypothesis_normalised: str | None = None
    unit: str | None = None


@dataclass
class ReportData:
    run: dict[str, Any]
    records: list[dict[str, Any]]
    items: dict[str, dict[str, Any]]
    specs: dict[str, Any]
    aggregates: list[Aggregate]
    baseline: dict[str, Any] | None = None
    comparison: Comparison | None = None
    trend: list[TrendPoint] = field(default_factory=list)
    worst: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    undirected: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    transcripts: dict[str, Transcript] = field(default_factory=dict)

    @property
    def systems(self) -> list[str]:
        return sorted({a.system for a in self.aggregates if a.system != "ALL"})

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(a.metric for a in self.aggregates))

    def run_json(self, key: str) -> Any:
        raw = self.run.get(key)
        if not raw:
            return {} if key in ("params", "assets") else []
        try:
            return json.loads(raw)
        except (TypeError, ValueError):
            return raw


def gather(
    store,
    run_id: str = "latest",
    *,
    baseline: str | None = "auto",
    policy: RegressionPolicy | None = None,
    n_worst: int = 5,
    trend_limit: int = 20,
    output_specs: Mapping[str, Any] | None = None,
    aggregates_of: Callable[[str], list[Aggregate]] | None = None,
) -> ReportData:
    """Collect a run's report data.

    Args:
        baseline: ``'auto'`` (the previous finished run with the same name), a run id, or
            ``None`` (no comparison).
        n_worst: worst utterances listed per metric (metrics with a direction only).
        aggregates_of: memoised per-run aggregates (the dashboard), else computed here.
    """
    if n_worst < 0:
        raise ConfigError("--worst must be >= 0")
    if output_specs is None:
        from speechqe.plugins import output_specs as _specs

        output_specs = _specs()
    run = store.run(run_id)
    rid = run["run_id"]
    records = store.results(rid)
    items = {it["item_id"]: it for it in store.items(rid)}
    aggs = aggregates_of(rid) if aggregates_of is not None else aggregate(records, output_specs)
    data = ReportData(run=run, records=records, items=items, specs=dict(output_specs), aggregates=aggs)

    if baseline == "auto":
        data.baseline = baseline_for(store, run)
    elif baseline is not None:
        data.baseline = store.run(baseline)
    if data.baseline is not None and data.baseline["run_id"] != rid:
        changes = compare_records(store.results(data.baseline["run_id"]), records,
                                  output_specs, policy)
        data.comparison = Comparison(data.baseline, run, changes, policy or RegressionPolicy())
    if run["name"] is not None and run["status"] == "finished":
        def trend_aggs(r: str) -> list[Aggregate]:  # this run's are computed already
            if r == rid:
                return aggs
            if aggregates_of is not None:
                return aggregates_of(r)
            return aggregate(store.results(r), output_specs, n_boot=TREND_BOOTSTRAP)

        data.trend = trend(store, run["name"], until=run, limit=trend_limit,
                           aggregates_of=trend_aggs)

    by_metric: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if r["status"] == "ok":
            by_metric.setdefault(r["metric"], []).append(r)
        else:
            data.errors.append(r)
    for metric in data.metrics:
        spec = output_specs.get(metric)
        if spec is None or spec.higher_is_better is None:
            data.undirected.append(metric)
            continue
        rows = sorted(by_metric.get(metric, []), key=lambda r: r["value"],
                      reverse=not spec.higher_is_better)
        data.worst[metric] = rows[:n_worst]

    # Transcripts: the reference text of every item, and the first ASR hypothesis found.
    for r in records:
        item = items.get(r["item_id"], {})
        t = data.transcripts.get(r["item_id"])
        if t is None:
            t = data.transcripts[r["item_id"]] = Transcript(reference=item.get("text"))
        hyp = _first(r["extra"], HYPOTHESIS_KEYS) if r["extra"] else None
        # word-level records (WER) are preferred to character-level ones (CER) for the diff
        better = t.hypothesis is None or (t.unit == "char" and r["extra"].get("unit") != "char")
        if hyp is not None and better:
            t.unit = r["extra"].get("unit")
            t.hypothesis = hyp
            t.scorer = r["scorer"]
            t.reference_normalised = _first(r["extra"], NORMALISED_REF_KEYS)
            t.hypothesis_normalised = _first(r["extra"], NORMALISED_HYP_KEYS)
    return data


def fmt(x: Any, digits: int = 3) -> str:
    """A number for display (``-`` for missing/NaN)."""
    if x is None:
        return "-"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(xf):
        return "-"
    if xf != 0 and (abs(xf) >= 1e5 or abs(xf) < 1e-3):
        return f"{xf:.{digits}g}"
    return f"{xf:.{digits}f}"
