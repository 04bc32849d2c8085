"""Run reports and dashboard pages from the Jinja2 templates in ``templates/``.

This module turns :class:`~.data.ReportData` into small view objects (rows, cells, players,
chart figures: data, never markup) and renders them with the templates:

* ``_page.html.j2``: the document (Content-Security-Policy, styles, plotly.js, chart figures,
  embedded audio, the boot script); every page extends it.
* ``_macros.html.j2``: the pieces (metric labels, tables, audio players, word diffs).
* ``report.html.j2`` (a run), ``dashboard.html.j2`` (the run list and history),
  ``compare.html.j2`` (two runs), ``message.html.j2`` (an HTTP status page).
* ``summary.md.j2``: the markdown summary of a Prefect artifact.

Safety: file names, system names, item ids, transcripts, run and suite names, configuration
values and error messages are data. Autoescaping is on for every HTML template, so every value
is escaped for its context by Jinja (text and quoted attributes); no template marks a value
``safe``. The only :class:`~markupsafe.Markup` values are made here from trusted sources: plotly.js
from the installed package. Data for scripts (Plotly figures) goes through Jinja's ``tojson``,
which escapes ``<``, ``>``, ``&`` and ``'``, inside ``<script type="application/json">``; labels
that Plotly draws are entity-escaped first (:func:`plotly_text`), since Plotly interprets a few
HTML tags in them. A Content Security Policy allows only this page's own scripts (by nonce):
even a missed escape could not run. A variable missing from a template is an error
(``StrictUndefined``), never an empty string.

Offline: a report embeds plotly.js and (up to a size budget) the audio of the utterances it
lists, so the file can be mailed or archived and opened anywhere without a network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import stat
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote

from speechqe.engine.aggregate import Aggregate
from speechqe.engine.report.data import ReportData, Transcript, fmt
from speechqe.engine.report.worddiff import WordDiff, diff_words, display_normalise

#: Browser-playable audio types by suffix (anything else is linked, not embedded or served).
AUDIO_MIME = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg",
              ".oga": "audio/ogg", ".opus": "audio/ogg", ".mp3": "audio/mpeg"}

#: Error records listed one by one in a report (all are counted in its summary table).
ERROR_ROWS = 200

#: Markdown characters escaped in the artifact summary (a backslash before each).
MARKDOWN_SPECIAL = "\\`*_[]|<>"


# ------------------------------------------------------------------------------------------
# Templates
# ------------------------------------------------------------------------------------------
def _arrow(spec: Any) -> str:
    """`` ↑``/`` ↓`` from a metric's declared direction (empty without one)."""
    if spec is None or spec.higher_is_better is None:
        return ""
    return " ↑" if spec.higher_is_better else " ↓"


def _ts(x: Any) -> str:
    """A stored timestamp for display (UTC, to the second)."""
    if isinstance(x, datetime):
        return x.strftime("%Y-%m-%d %H:%M:%S")
    return "-" if x is None else str(x)[:19]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _url_part(s: Any) -> str:
    """A URL path segment or query value: all but unreserved characters percent-encoded."""
    return quote(str(s), safe="")


def _filters(env) -> None:
    env.filters.update(fmt=fmt, ts=_ts, arrow=_arrow, plural=_plural, q=_url_part)


@lru_cache(maxsize=None)
def environment():
    """The Jinja2 environment of the HTML templates: autoescaping on for every template,
    undefined variables are errors, ``tojson`` refuses NaN (JSON has none)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("speechqe.engine.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    _filters(env)
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "allow_nan": False}
    return env


class _Raw(str):
    """A string the markdown template prints as it is (built here from trusted parts)."""


def _md_escape(value: Any) -> str:
    """Every ``{{ value }}`` of the markdown template: markdown characters backslash-escaped
    (the markdown counterpart of HTML autoescaping)."""
    if isinstance(value, _Raw):
        return value
    out = str(value)
    for ch in MARKDOWN_SPECIAL:
        out = out.replace(ch, "\\" + ch)
    return out


@lru_cache(maxsize=None)
def markdown_environment():
    """The environment of ``summary.md.j2``: HTML escaping off (markdown is not HTML), and
    instead every printed value markdown-escaped by ``finalize``."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("speechqe.engine.report", "templates"),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_md_escape,
    )
    _filters(env)
    return env


def fragment(macro: str, *args: Any, **kwargs: Any) -> str:
    """One macro of ``_macros.html.j2`` rendered on its own (autoescaped, as in a page)."""
    return str(getattr(environment().get_template("_macros.html.j2").module, macro)(*args, **kwargs))


# ------------------------------------------------------------------------------------------
# plotly.js and chart data
# ------------------------------------------------------------------------------------------
def _plotly():
    try:
        import plotly
    except ImportError as exc:
        from speechqe.errors import MissingDependencyError

        raise MissingDependencyError("plotly", "flows", "HTML reports") from exc
    return plotly


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js from the installed plotly package (no network)."""
    _plotly()
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    if "</script" in js.lower():  # it is inlined in a <script> element
        raise RuntimeError("this plotly.js contains '</script' and cannot be inlined")
    return js


def plotly_text(s: Any) -> str:
    """A string for a Plotly label: entity-escaped (Plotly renders a few tags in labels)."""
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Chart:
    """A chart: the id of its ``<div>`` and its Plotly figure (plain JSON data)."""

    id: str
    figure: dict[str, Any]


def _figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> dict[str, Any]:
    """A figure validated by plotly, as plain JSON data (NaN becomes null)."""
    _plotly()
    import plotly.graph_objects as go

    return json.loads(go.Figure(data=data, layout=layout).to_json())


def _layout(title: str, spec: Any, **kw: Any) -> dict[str, Any]:
    yaxis: dict[str, Any] = {"title": {"text": plotly_text(spec.unit if spec is not None and spec.unit else "")},
                             "zeroline": False}
    if spec is not None:
        lo, hi = spec.valid_range
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            pad = 0.03 * (hi - lo)
            yaxis["range"] = [lo - pad, hi + pad]
    layout = {"title": {"text": plotly_text(title)}, "yaxis": yaxis, "height": 380,
              "margin": {"l": 55, "r": 20, "t": 45, "b": 40},
              "legend": {"orientation": "h", "yanchor": "top", "y": -0.15, "x": 0}, "template": "plotly_white",
              "paper_bgcolor": "#fff", "plot_bgcolor": "#fafbfc"}
    layout.update(kw)
    return layout


def distribution_charts(data: ReportData) -> list[Chart]:
    """Per metric: a box of each system's item values (every point drawn up to 2000)."""
    by_metric: dict[str, dict[str, list[tuple[float, str]]]] = {}
    for r in data.records:
        if r["status"] == "ok":
            by_metric.setdefault(r["metric"], {}).setdefault(r["system"], []).append((r["value"], r["item_id"]))
    charts = []
    for k, metric in enumerate(data.metrics):
        spec = data.specs.get(metric)
        per = by_metric.get(metric, {})
        if not per:
            continue
        traces = []
        for system in sorted(per):
            vals = per[system]
            traces.append({
                "type": "box", "name": plotly_text(system), "y": [v for v, _ in vals],
                "text": [plotly_text(i) for _, i in vals],
                "boxpoints": "all" if len(vals) <= 2000 else "outliers", "jitter": 0.35,
                "pointpos": 0, "marker": {"size": 4, "opacity": 0.6}, "boxmean": True,
                "hovertemplate": "%{text}<br>%{y:.4g}<extra></extra>",
            })
        title = metric + _arrow(spec)
        charts.append(Chart(f"dist-{k}", _figure(traces, _layout(title, spec, showlegend=False))))
    return charts


def trend_charts(data: ReportData, prefix: str = "trend") -> list[Chart]:
    """Per metric: each system's mean and CI across the runs of ``data.trend``."""
    runs = list(dict.fromkeys(p.run_id for p in data.trend))
    if len(runs) < 2:
        return []
    # One category per run (two runs may start within the same second).
    labels = {p.run_id: plotly_text(f"{_ts(p.started_at)[5:16]} · {p.run_id[-6:]}") for p in data.trend}
    charts = []
    for k, metric in enumerate(data.metrics):
        spec = data.specs.get(metric)
        pts = [p for p in data.trend if p.metric == metric]
        if not pts:
            continue
        traces = []
        for system in sorted({p.system for p in pts}):
            sp = [p for p in pts if p.system == system and math.isfinite(p.mean)]
            traces.append({
                "type": "scatter", "mode": "lines+markers", "name": plotly_text(system),
                "x": [labels[p.run_id] for p in sp], "y": [p.mean for p in sp],
                "text": [plotly_text(p.run_id) for p in sp],
                "error_y": {"type": "data", "symmetric": False,
                            "array": [max(p.ci_high - p.mean, 0) if math.isfinite(p.ci_high) else 0 for p in sp],
                            "arrayminus": [max(p.mean - p.ci_low, 0) if math.isfinite(p.ci_low) else 0 for p in sp]},
                "hovertemplate": "%{text}<br>%{y:.4g}<extra>" + plotly_text(system) + "</extra>",
            })
        title = f"{metric}{_arrow(spec)} across runs"
        charts.append(Chart(f"{prefix}-{k}", _figure(traces, _layout(title, spec, xaxis={"type": "category"}))))
    return charts


# ------------------------------------------------------------------------------------------
# Audio
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Player:
    """An audio player, or why there is none: exactly one of ``clip`` (an embedded clip's
    id), ``src`` (a URL) or ``note`` (with the file's ``path``) is set."""

    label: str  # "audio" or "reference"
    clip: str | None = None
    src: str | None = None
    note: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class Clip:
    """An embedded audio file: base64 of its bytes, attached to its players by the boot script."""

    id: str
    mime: str
    b64: str


@dataclass
class Assets:
    """How a page gets plotly.js and audio: inline/embedded (self-contained report) or by URL
    (dashboard).

    Embedded audio is stored once per file (a clip listed under several metrics is not
    repeated) and attached to its players by the page's script."""

    plotly_src: str | None = None  # None: inline
    audio_url: Callable[[str, str, str], str | None] | None = None  # (run, item, which) -> URL
    audio_budget_bytes: int = 40 << 20
    audio_max_file_bytes: int = 4 << 20
    _spent: int = 0
    _embedded: dict[str, Clip] = field(default_factory=dict)  # path -> clip

    def audio(self, run_id: str, item_id: str, which: str, path: str | None,
              sha256: str | None = None) -> Player | None:
        """The player of an item's audio (``which``: ``item``/``ref``); ``None`` without a file.

        Embedded only if it is a regular file of a browser audio type, within the budget and,
        when ``sha256`` (the digest stored when the run scored it) is given, still the same
        bytes: a report never plays other audio than the run scored."""
        if not path:
            return None
        label = "reference" if which == "ref" else "audio"
        if self.audio_url is not None:
            url = self.audio_url(run_id, item_id, which)
            return None if url is None else Player(label, src=url)
        p = Path(path)
        key = str(p)
        if key not in self._embedded:
            mime = AUDIO_MIME.get(p.suffix.lower())
            try:
                st = p.stat()
            except OSError:
                return Player(label, note="file missing", path=key)
            if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read
                return Player(label, note="not a regular file", path=key)
            size = st.st_size
            if mime is None or size > self.audio_max_file_bytes or self._spent + size > self.audio_budget_bytes:
                why = "format not playable in browsers" if mime is None else "over the embedding budget"
                return Player(label, note=f"not embedded ({why})", path=key)
            try:
                raw = p.read_bytes()
            except OSError:
                return Player(label, note="file unreadable", path=key)
            if sha256 and hashlib.sha256(raw).hexdigest() != sha256:
                return Player(label, note="changed since the run scored it, not embedded", path=key)
            self._spent += len(raw)
            self._embedded[key] = Clip(f"a{len(self._embedded)}", mime, base64.b64encode(raw).decode("ascii"))
        return Player(label, clip=self._embedded[key].id)

    def clips(self) -> list[Clip]:
        """The embedded clips so far, in the order first used."""
        return list(self._embedded.values())


# ------------------------------------------------------------------------------------------
# Views (what the templates lay out)
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    agg: Aggregate
    best: bool = False


@dataclass(frozen=True)
class SummaryRow:
    metric: str
    spec: Any
    cells: list[Cell | None]


@dataclass(frozen=True)
class Summary:
    """System x metric: ``columns`` are the systems (and ``ALL`` when there are several)."""

    columns: list[str]
    rows: list[SummaryRow]


def summary_view(data: ReportData) -> Summary:
    """Mean, CI, n and errors per system and metric; the best system per metric marked by the
    metric's declared direction (none when all are tied or without a direction)."""
    systems = data.systems
    cols = systems + (["ALL"] if len(systems) > 1 else [])
    by = {(a.system, a.metric): a for a in data.aggregates}
    rows = []
    for m in data.metrics:
        spec = data.specs.get(m)
        best: set[str] = set()
        if spec is not None and spec.higher_is_better is not None and len(systems) > 1:
            cands = [by[(s, m)] for s in systems if (s, m) in by and by[(s, m)].n and math.isfinite(by[(s, m)].mean)]
            if cands:
                pick = max if spec.higher_is_better else min
                top = pick(a.mean for a in cands)
                best = {a.system for a in cands if a.mean == top}
                if len(best) == len(systems):
                    best = set()  # all tied: nobody is best
        cells = [Cell(by[(s, m)], s in best) if (s, m) in by else None for s in cols]
        rows.append(SummaryRow(m, spec, cells))
    return Summary(cols, rows)


def sorted_changes(comparison, *, only_flagged: bool = False) -> list:
    """Regressions first, then improvements, then the rest; by metric and system."""
    changes = sorted(comparison.changes,
                     key=lambda c: (not c.regression, not c.improvement, c.metric, c.system))
    return [c for c in changes if c.flag or not only_flagged]


@dataclass(frozen=True)
class TranscriptView:
    """An item's transcript: the reference and/or hypothesis, and their word diff when both
    exist (``note`` says which normalisation the diff shows)."""

    reference: str | None
    hypothesis: str | None
    diff: WordDiff | None = None
    note: str | None = None


def transcript_view(t: Transcript | None) -> TranscriptView | None:
    if t is None or t.reference is None and t.hypothesis is None:
        return None
    if t.reference is None or t.hypothesis is None:
        return TranscriptView(t.reference, t.hypothesis)
    ref_n = t.reference_normalised if t.reference_normalised is not None else display_normalise(t.reference)
    hyp_n = t.hypothesis_normalised if t.hypothesis_normalised is not None else display_normalise(t.hypothesis)
    note = (f"normalised by {t.scorer}" if t.reference_normalised is not None
            else "lower-cased, punctuation removed for display")
    return TranscriptView(t.reference, t.hypothesis, diff_words(ref_n, hyp_n), note)


@dataclass(frozen=True)
class WorstRow:
    rank: int
    record: dict[str, Any]
    out: Player | None
    ref: Player | None
    transcript: TranscriptView | None


@dataclass(frozen=True)
class WorstSection:
    metric: str
    spec: Any
    rows: list[WorstRow]


def worst_view(data: ReportData, assets: Assets) -> list[WorstSection]:
    """The worst utterances per metric with their players (embedding their audio in
    ``assets``) and transcripts."""
    rid = data.run["run_id"]
    out = []
    for metric, records in data.worst.items():
        if not records:
            continue
        rows = []
        for k, r in enumerate(records, 1):
            item = data.items.get(r["item_id"], {})
            out_player = assets.audio(rid, r["item_id"], "item", item.get("path"), item.get("sha256"))
            ref = (assets.audio(rid, r["item_id"], "ref", item.get("ref_path"), item.get("ref_sha256"))
                   if item.get("ref_path") else None)
            rows.append(WorstRow(k, r, out_player, ref, transcript_view(data.transcripts.get(r["item_id"]))))
        out.append(WorstSection(metric, data.specs.get(metric), rows))
    return out


@dataclass(frozen=True)
class Errors:
    """Error records: counts per (metric, reason), and the first ``limit`` records."""

    counts: list[tuple[str, str, int]]
    rows: list[dict[str, Any]]
    total: int
    limit: int


def errors_view(data: ReportData, limit: int = ERROR_ROWS) -> Errors:
    counts: dict[tuple[str, str], int] = {}
    for r in data.errors:
        key = (r["metric"], r["error_type"] or "?")
        counts[key] = counts.get(key, 0) + 1
    return Errors([(m, t, n) for (m, t), n in sorted(counts.items())], data.errors[:limit],
                  len(data.errors), limit)


def _setting(value: Any) -> str:
    """A configuration value as text: strings as they are, ``-`` for none, a list item by
    item (comma-separated), anything else as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)) and value:
        return ", ".join(_setting(v) for v in value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as dotted keys (``params.pesq.mode``), each leaf as text."""
    if isinstance(value, Mapping) and value:
        out = []
        for k, v in value.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, _setting(value))]


@dataclass(frozen=True)
class RunMeta:
    """The run section: facts, metrics (versions, model ids), pretrained assets, and the
    configuration the run was started with."""

    facts: list[tuple[str, Any]]
    metrics: list[dict[str, Any]]
    assets: list[tuple[str, dict[str, Any]]]
    config: list[tuple[str, str]]


def run_meta_view(data: ReportData) -> RunMeta:
    r = data.run
    dur = "-"
    if isinstance(r.get("started_at"), datetime) and isinstance(r.get("finished_at"), datetime):
        dur = f"{(r['finished_at'] - r['started_at']).total_seconds():.1f} s"
    from speechqe.engine.history import describe_metric_parameters, describe_selection, status_note

    note = status_note(r)
    facts = [
        ("run", r["run_id"]), ("name", r.get("name")),
        ("status", f"{r.get('status')}: {note}" if note else r.get("status")),
        ("started (UTC)", _ts(r.get("started_at"))), ("finished (UTC)", _ts(r.get("finished_at"))),
        ("duration", dur), ("source", r.get("source")), ("suite", r.get("suite") or "-"),
        ("scored", describe_selection(r)), ("metric parameters", describe_metric_parameters(r)),
        ("items", r.get("n_items")), ("records", r.get("n_records")), ("errors", r.get("n_errors")),
        ("items reused", r.get("n_reused")), ("code version", r.get("code_version")),
        ("host", r.get("host")), ("Prefect flow run", r.get("flow_run_id") or "-"),
    ]
    if r.get("error"):
        facts.append(("failure", r["error"]))
    metrics = [m for m in data.run_json("metrics") or [] if isinstance(m, dict)]
    assets = data.run_json("assets") or {}
    asset_rows = ([(str(n), a) for n, a in sorted(assets.items(), key=lambda kv: str(kv[0])) if isinstance(a, dict)]
                  if isinstance(assets, dict) else [])
    params = data.run_json("params")
    config = _flatten(params) if params not in ({}, None) else []
    return RunMeta(facts, metrics, asset_rows, config)


# ------------------------------------------------------------------------------------------
# Pages
# ------------------------------------------------------------------------------------------
def content_security_policy(nonce: str, assets: Assets) -> str:
    """Only this page's scripts (by nonce; plotly.js from this origin on the dashboard), no
    network, audio from data: URLs (and this origin on the dashboard)."""
    script_src = f"'nonce-{nonce}'" + (" 'self'" if assets.plotly_src else "")
    media = "data:" + (" 'self'" if assets.audio_url else "")
    return (
        f"default-src 'none'; script-src {script_src}; style-src 'unsafe-inline'; "
        f"img-src data:; media-src {media}; font-src data:; connect-src 'none'; "
        "base-uri 'none'; form-action 'none'"
    )


def render_page(template: str, *, title: str, assets: Assets, charts: Sequence[Chart] = (),
                nav: str | None = None, **context: Any) -> str:
    """A complete HTML document from ``template`` (which extends ``_page.html.j2``).

    Args:
        charts: the figures drawn into the page's ``<div id=chart.id>`` elements.
        nav: the dashboard's navigation bar shows this (the store's path); ``None``: no bar.
        context: the template's own variables.

    Every player must have been made (``assets.audio``) before: the clips are written once,
    after the body.
    """
    nonce = secrets.token_urlsafe(16)
    clips = assets.clips()
    from markupsafe import Markup

    inline = Markup(plotly_js()) if assets.plotly_src is None and charts else None  # trusted code
    return environment().get_template(template).render(
        title=title, nonce=nonce, csp=content_security_policy(nonce, assets), nav=nav,
        plotly_src=assets.plotly_src, plotly_inline=inline, charts=list(charts), clips=clips,
        boot=bool(charts or clips), **context,
    )


def render_run_report(data: ReportData, assets: Assets | None = None, *, nav: str | None = None) -> str:
    """The HTML report of a run (``nav``: see :func:`render_page`)."""
    assets = assets or Assets()
    r = data.run
    dist = distribution_charts(data)
    trends = trend_charts(data)
    worst = worst_view(data, assets)  # embeds the clips before the page is written
    cmp = data.comparison
    return render_page(
        "report.html.j2", title=f"speechqe report: {r.get('name')} ({r['run_id']})", assets=assets,
        charts=dist + trends, nav=nav, run=r, meta=run_meta_view(data), summary=summary_view(data),
        comparison=cmp, changes=sorted_changes(cmp) if cmp is not None else [], specs=data.specs,
        dist=dist, trends=trends, worst=worst, undirected=data.undirected,
        errors=errors_view(data), generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
    )


def render_message(status: int, text: str) -> str:
    """A plain status page (the dashboard's errors)."""
    return render_page("message.html.j2", title="speechqe", assets=Assets(), status=status, text=text)


def markdown_summary(data: ReportData, report_link: str | None = None) -> str:
    """A short markdown table (system x metric, mean [CI]) plus flags, for Prefect artifacts.
    Markdown special characters in names are escaped (artifacts render markdown); the link
    (made by the caller, e.g. ``Path.as_uri()``) is written as it is."""
    cmp = data.comparison
    return markdown_environment().get_template("summary.md.j2").render(
        run=data.run, systems=data.systems, specs=data.specs, metrics=data.metrics,
        by={(a.system, a.metric): a for a in data.aggregates}, comparison=cmp,
        regressions=cmp.regressions if cmp is not None else [],
        link=_Raw(report_link) if report_link else None,
    )
