"""HTML for run reports and the dashboard (Plotly charts, audio players, word diffs).

Safety: file names, system names, item ids and transcripts are data. Every string goes into
the page through :func:`html.escape` (markup) or as JSON inside ``<script type=
"application/json">`` with ``<``, ``>`` and ``&`` escaped (charts); strings shown by Plotly
are entity-escaped too, since Plotly interprets a few HTML tags in labels. A Content Security
Policy allows only this page's own scripts (by nonce): even a missed escape could not run.

Offline: a report embeds plotly.js and (up to a size budget) the audio of the utterances it
lists, so the file can be mailed or archived and opened anywhere without a network.
"""

from __future__ import annotations

import base64
import html
import json
import math
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from speechqe.engine.report.data import ReportData, fmt
from speechqe.engine.report.worddiff import diff_html, display_normalise

esc = html.escape

AUDIO_MIME = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg",
              ".oga": "audio/ogg", ".opus": "audio/ogg", ".mp3": "audio/mpeg"}

CSS = """
:root { --fg:#1d2327; --muted:#5f6b73; --line:#d9dee2; --bad:#b3261e; --good:#1b7f3b;
        --bg-bad:#fdecea; --bg-good:#e8f5ec; --accent:#2b5fab; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; padding: 16px 28px 48px; max-width: 1280px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px;
     border-bottom: 1px solid var(--line); padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.muted { color: var(--muted); } .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; }
table { border-collapse: collapse; margin: 6px 0 12px; } th, td { border: 1px solid var(--line);
        padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f4f6f8; font-weight: 600; } td.num { text-align: right; white-space: nowrap;
     font-variant-numeric: tabular-nums; }
td.best { font-weight: 700; background: var(--bg-good); }
tr.regression td { background: var(--bg-bad); } tr.improvement td { background: var(--bg-good); }
.flag { font-weight: 700; padding: 1px 6px; border-radius: 3px; white-space: nowrap; }
.flag.regression { color: #fff; background: var(--bad); } .flag.improvement { color: #fff; background: var(--good); }
.ci { color: var(--muted); font-size: 12px; } .err { color: var(--bad); }
.chart { width: 100%; min-height: 340px; } .charts { display: grid; gap: 8px;
         grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); }
.w-sub { background: #fff1c2; border-bottom: 2px solid #d4a000; }
del.w-del { background: #fdecea; color: var(--bad); } ins.w-ins { background: #e3f0ff; color: var(--accent); text-decoration: none; border-bottom: 2px solid var(--accent); }
.lbl { display: inline-block; width: 28px; }
.transcript div { margin: 2px 0; } .transcript .lbl { color: var(--muted); display: inline-block; width: 34px; }
audio { height: 30px; width: 250px; vertical-align: middle; } td.players { white-space: nowrap; }
details > summary { cursor: pointer; color: var(--accent); margin: 4px 0; }
nav a { margin-right: 14px; } .small { font-size: 12px; }
.summary-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 0 24px; }
.summary-grid table { width: 100%; }
"""

# Attaches embedded clips to their players and draws every chart declared as
# <script type="application/json" class="plotly-fig">.
BOOT_JS = """
(function () {
  function draw() {
    var players = document.querySelectorAll('audio[data-audio]');
    for (var j = 0; j < players.length; j++) {
      var blob = document.getElementById(players[j].getAttribute('data-audio'));
      players[j].src = 'data:' + blob.getAttribute('data-mime') + ';base64,' + blob.textContent.trim();
    }
    if (typeof Plotly === 'undefined') { document.body.setAttribute('data-charts-ready', '0'); return; }
    var figs = document.querySelectorAll('script.plotly-fig');
    for (var i = 0; i < figs.length; i++) {
      var spec = JSON.parse(figs[i].textContent);
      var el = document.getElementById(figs[i].getAttribute('data-target'));
      Plotly.newPlot(el, spec.data, spec.layout, {responsive: true, displaylogo: false});
    }
    document.body.setAttribute('data-charts-ready', String(figs.length));
  }
  if (document.readyState === 'loading') { document.addEventListener('DOMContentLoaded', draw); }
  else { draw(); }
})();
"""


def _plotly():
    try:
        import plotly
    except ImportError as exc:
        from speechqe.errors import MissingDependencyError

        raise MissingDependencyError("plotly", "flows", "HTML reports") from exc
    return plotly


def plotly_js() -> str:
    """plotly.js from the installed plotly package (no network)."""
    _plotly()
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def json_for_script(obj: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` survive."""
    text = obj if isinstance(obj, str) else json.dumps(obj, default=str, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def plotly_text(s: Any) -> str:
    """A string for a Plotly label: entity-escaped (Plotly renders a few tags in labels)."""
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------------------------------
# Page
# ------------------------------------------------------------------------------------------
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
    _embedded: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # path -> (id, mime, b64)

    def audio(self, run_id: str, item_id: str, which: str, path: str | None) -> str:
        """An ``<audio>`` player for an item's audio (``which``: ``item``/``ref``)."""
        if not path:
            return ""
        label = "reference" if which == "ref" else "audio"
        if self.audio_url is not None:
            url = self.audio_url(run_id, item_id, which)
            if url is None:
                return ""
            return f'<audio controls preload="none" title="{label}" src="{esc(url)}"></audio>'
        p = Path(path)
        key = str(p)
        if key not in self._embedded:
            mime = AUDIO_MIME.get(p.suffix.lower())
            try:
                size = p.stat().st_size
            except OSError:
                return f'<span class="muted small">{label} file missing: {esc(str(p))}</span>'
            if mime is None or size > self.audio_max_file_bytes or self._spent + size > self.audio_budget_bytes:
                why = "format not playable in browsers" if mime is None else "over the embedding budget"
                return f'<span class="muted small">{label} not embedded ({why}): {esc(str(p))}</span>'
            self._spent += size
            self._embedded[key] = (f"a{len(self._embedded)}", mime,
                                   base64.b64encode(p.read_bytes()).decode("ascii"))
        aid = self._embedded[key][0]
        return f'<audio controls preload="none" title="{label}" data-audio="{aid}"></audio>'

    def embedded_audio(self) -> str:
        """The embedded clips, one ``<script>`` data block each (base64 is inert text)."""
        return "\n".join(
            f'<script type="application/octet-stream" class="audio-data" id="{aid}" '
            f'data-mime="{esc(mime)}">{b64}</script>'
            for aid, mime, b64 in self._embedded.values()
        )


def page(title: str, body: str, assets: Assets, *, charts: Sequence[tuple[str, str]] = ()) -> str:
    """A complete HTML document: ``charts`` are ``(element id, figure JSON)`` pairs."""
    nonce = secrets.token_urlsafe(16)
    script_src = f"'nonce-{nonce}'" + (" 'self'" if assets.plotly_src else "")
    media = "data:" + (" 'self'" if assets.audio_url else "")
    csp = (
        f"default-src 'none'; script-src {script_src}; style-src 'unsafe-inline'; "
        f"img-src data:; media-src {media}; font-src data:; connect-src 'none'; "
        "base-uri 'none'; form-action 'none'"
    )
    if assets.plotly_src:
        plotly = f'<script nonce="{nonce}" src="{esc(assets.plotly_src)}"></script>'
    else:
        plotly = f'<script nonce="{nonce}">{plotly_js()}</script>' if charts else ""
    fig_tags = "\n".join(
        f'<script type="application/json" class="plotly-fig" data-target="{esc(div)}">'
        f"{json_for_script(fig)}</script>"
        for div, fig in charts
    )
    audio = assets.embedded_audio()
    boot = f'<script nonce="{nonce}">{BOOT_JS}</script>' if charts or audio else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
        f"{plotly}\n{fig_tags}\n{audio}\n{boot}\n</body></html>\n"
    )


# ------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------
def _arrow(spec: Any) -> str:
    if spec is None or spec.higher_is_better is None:
        return ""
    return " ↑" if spec.higher_is_better else " ↓"


def metric_label(metric: str, spec: Any) -> str:
    """Escaped metric header: name, direction arrow, unit, aggregation."""
    unit = f" <span class=\"muted small\">[{esc(spec.unit)}]</span>" if spec is not None and spec.unit else ""
    corpus = " <span class=\"muted small\">(corpus)</span>" if spec is not None and spec.aggregation == "ratio" else ""
    direction = ""
    if spec is not None and spec.higher_is_better is not None:
        word = "higher is better" if spec.higher_is_better else "lower is better"
        direction = f'<span title="{word}">{_arrow(spec)}</span>'
    return f"{esc(metric)}{direction}{unit}{corpus}"


def table(headers: Sequence[str], rows: Iterable[str], cls: str = "") -> str:
    """``headers`` are escaped; ``rows`` are prebuilt ``<tr>`` strings."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _ts(x: Any) -> str:
    if isinstance(x, datetime):
        return x.strftime("%Y-%m-%d %H:%M:%S")
    return "-" if x is None else str(x)[:19]


def run_meta(data: ReportData) -> str:
    r = data.run
    dur = "-"
    if isinstance(r.get("started_at"), datetime) and isinstance(r.get("finished_at"), datetime):
        dur = f"{(r['finished_at'] - r['started_at']).total_seconds():.1f} s"
    rows = [
        ("run", r["run_id"]), ("name", r.get("name")), ("status", r.get("status")),
        ("started (UTC)", _ts(r.get("started_at"))), ("finished (UTC)", _ts(r.get("finished_at"))),
        ("duration", dur), ("source", r.get("source")), ("suite", r.get("suite") or "-"),
        ("items", r.get("n_items")), ("records", r.get("n_records")), ("errors", r.get("n_errors")),
        ("items reused", r.get("n_reused")), ("code version", r.get("code_version")),
        ("host", r.get("host")), ("Prefect flow run", r.get("flow_run_id") or "-"),
    ]
    if r.get("error"):
        rows.append(("failure", r["error"]))
    left = "<table><tbody>" + "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows) + "</tbody></table>"
    metrics = data.run_json("metrics") or []
    mrows = [
        f"<tr><td>{esc(str(m.get('name')))}</td><td>{esc(str(m.get('version')))}</td>"
        f"<td class=\"mono\">{esc(str(m.get('model_id')))}</td><td>{esc(str(m.get('device')))}</td></tr>"
        for m in metrics if isinstance(m, dict)
    ]
    assets = data.run_json("assets") or {}
    arows = [
        f"<tr><td>{esc(str(n))}</td><td class=\"mono\">{esc(str(a.get('fingerprint')))}</td>"
        f"<td>{esc(str(a.get('source')))}</td></tr>"
        for n, a in sorted(assets.items()) if isinstance(a, dict)
    ] if isinstance(assets, dict) else []
    right = table(["metric", "version", "model id", "device"], mrows)
    right += table(["pretrained asset", "fingerprint (sha256s)", "source"], arows) if arows else (
        '<p class="muted small">No pretrained assets were loaded.</p>')
    return f'<div class="summary-grid"><div>{left}</div><div>{right}</div></div>'


def summary_table(data: ReportData) -> str:
    """System x metric: mean and 95% CI, n and errors; the best system per metric in bold
    (by the metric's declared direction)."""
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
        cells = [f"<th>{metric_label(m, spec)}</th>"]
        for s in cols:
            a = by.get((s, m))
            if a is None:
                cells.append("<td></td>")
                continue
            err = f' <span class="err small">({a.n_errors} err)</span>' if a.n_errors else ""
            cls = "num best" if s in best else "num"
            cells.append(
                f'<td class="{cls}">{fmt(a.mean)} <span class="ci">[{fmt(a.ci_low)}, {fmt(a.ci_high)}]</span>'
                f'<br><span class="muted small">n={a.n}</span>{err}</td>'
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "<tr><th>metric</th>" + "".join(f"<th>{esc(s)}</th>" for s in cols) + "</tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def changes_table(comparison, specs, *, only_flagged: bool = False) -> str:
    rows = []
    changes = sorted(comparison.changes, key=lambda c: (not c.regression, not c.improvement, c.metric, c.system))
    for c in changes:
        if only_flagged and not c.flag:
            continue
        spec = specs.get(c.metric)
        flag = f'<span class="flag {c.flag}">{c.flag}</span>' if c.flag else ""
        paired = f"{c.n_paired} paired" if c.paired else "unpaired"
        rows.append(
            f'<tr class="{c.flag}"><td>{esc(c.system)}</td><td>{metric_label(c.metric, spec)}</td>'
            f'<td class="num">{fmt(c.mean_a)}</td><td class="num">{fmt(c.mean_b)}</td>'
            f'<td class="num">{fmt(c.delta)} <span class="ci">[{fmt(c.ci_low)}, {fmt(c.ci_high)}]</span></td>'
            f'<td class="num">{fmt(c.threshold)}</td><td>{esc(paired)}</td>'
            f'<td class="num">{c.n_errors_a} → {c.n_errors_b}</td><td>{flag}</td></tr>'
        )
    if not rows:
        return '<p class="muted">No changes to show.</p>'
    return table(["system", "metric", "baseline", "this run", "change [95% CI]", "threshold",
                  "items", "errors", "flag"], rows)


def transcript_html(t) -> str:
    if t is None or t.reference is None and t.hypothesis is None:
        return ""
    if t.hypothesis is None:
        return f'<div class="transcript"><div><span class="lbl">ref</span>{esc(t.reference or "")}</div></div>'
    if t.reference is None:
        return f'<div class="transcript"><div><span class="lbl">hyp</span>{esc(t.hypothesis)}</div></div>'
    ref_n = t.reference_normalised if t.reference_normalised is not None else display_normalise(t.reference)
    hyp_n = t.hypothesis_normalised if t.hypothesis_normalised is not None else display_normalise(t.hypothesis)
    ref_h, hyp_h, counts = diff_html(ref_n, hyp_n)
    note = (f"normalised by {t.scorer}" if t.reference_normalised is not None
            else "lower-cased, punctuation removed for display")
    return (
        '<div class="transcript">'
        f'<div><span class="lbl">ref</span>{ref_h}</div><div><span class="lbl">hyp</span>{hyp_h}</div>'
        f'<div class="muted small">{counts["substitutions"]} sub, {counts["deletions"]} del, '
        f'{counts["insertions"]} ins of {counts["ref_words"]} words ({esc(note)})</div>'
        f'<div class="muted small">as written: “{esc(t.reference)}”; as recognised: “{esc(t.hypothesis)}”</div></div>'
    )


def worst_section(data: ReportData, assets: Assets) -> str:
    out = []
    rid = data.run["run_id"]
    for metric, rows in data.worst.items():
        if not rows:
            continue
        spec = data.specs.get(metric)
        trs = []
        for k, r in enumerate(rows, 1):
            item = data.items.get(r["item_id"], {})
            players = '<span class="lbl small muted">out</span> ' + assets.audio(
                rid, r["item_id"], "item", item.get("path"))
            if item.get("ref_path"):
                players += '<br><span class="lbl small muted">ref</span> ' + assets.audio(
                    rid, r["item_id"], "ref", item.get("ref_path"))
            trs.append(
                f"<tr><td class=\"num\">{k}</td><td class=\"mono\">{esc(r['item_id'])}</td>"
                f"<td>{esc(str(r['system']))}</td><td class=\"num\">{fmt(r['value'])}</td>"
                f"<td class=\"players\">{players}</td><td>{transcript_html(data.transcripts.get(r['item_id']))}</td></tr>"
            )
        out.append(f'<details open><summary><h3 style="display:inline">{metric_label(metric, spec)}</h3>'
                   "</summary>" + table(["#", "item", "system", "value", "audio", "transcript"], trs)
                   + "</details>")
    if data.undirected:
        out.append('<p class="muted small">Not ranked (the metric declares no direction): '
                   + esc(", ".join(data.undirected)) + "</p>")
    return "".join(out) or '<p class="muted">No scored items.</p>'


def errors_section(data: ReportData, limit: int = 200) -> str:
    if not data.errors:
        return '<p class="muted">No errors.</p>'
    counts: dict[tuple[str, str], int] = {}
    for r in data.errors:
        key = (r["metric"], r["error_type"] or "?")
        counts[key] = counts.get(key, 0) + 1
    summary = table(["metric", "reason", "records"], (
        f"<tr><td>{esc(m)}</td><td>{esc(t)}</td><td class=\"num\">{n}</td></tr>"
        for (m, t), n in sorted(counts.items())))
    rows = [
        f"<tr><td class=\"mono\">{esc(r['item_id'])}</td><td>{esc(str(r['system']))}</td>"
        f"<td>{esc(r['metric'])}</td><td>{esc(r['error_type'] or '')}</td><td>{esc(r['error'] or '')}</td></tr>"
        for r in data.errors[:limit]
    ]
    more = f'<p class="muted small">First {limit} of {len(data.errors)} shown.</p>' if len(data.errors) > limit else ""
    return summary + "<details><summary>every error record</summary>" + table(
        ["item", "system", "metric", "reason", "message"], rows) + more + "</details>"


# ------------------------------------------------------------------------------------------
# Charts (Plotly figure JSON)
# ------------------------------------------------------------------------------------------
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


def _fig_json(data: list[dict[str, Any]], layout: dict[str, Any]) -> str:
    _plotly()
    import plotly.graph_objects as go

    return go.Figure(data=data, layout=layout).to_json()  # validated by plotly


def distribution_charts(data: ReportData) -> list[tuple[str, str]]:
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
        charts.append((f"dist-{k}", _fig_json(traces, _layout(title, spec, showlegend=False))))
    return charts


def trend_charts(data: ReportData, prefix: str = "trend") -> list[tuple[str, str]]:
    runs = list(dict.fromkeys(p.run_id for p in data.trend))
    if len(runs) < 2:
        return []
    # One category per run (two runs may start within the same second).
    labels = {p.run_id: f"{_ts(p.started_at)[5:16]} · {p.run_id[-6:]}" for p in data.trend}
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
        charts.append((f"{prefix}-{k}", _fig_json(traces, _layout(title, spec, xaxis={"type": "category"}))))
    return charts


def chart_divs(charts: Sequence[tuple[str, str]]) -> str:
    return '<div class="charts">' + "".join(
        f'<div class="chart" id="{esc(div)}"></div>' for div, _ in charts) + "</div>"


# ------------------------------------------------------------------------------------------
# The run report
# ------------------------------------------------------------------------------------------
def render_run_report(data: ReportData, assets: Assets | None = None, *, nav: str = "") -> str:
    assets = assets or Assets()
    r = data.run
    title = f"speechqe report: {r.get('name')} ({r['run_id']})"
    dist = distribution_charts(data)
    trends = trend_charts(data)
    parts = [nav, f"<h1>{esc(str(r.get('name')))} <span class=\"muted\">run {esc(r['run_id'])}</span></h1>"]
    if data.comparison is not None:
        n_reg = len(data.comparison.regressions)
        n_imp = len(data.comparison.improvements)
        badge = (f'<span class="flag regression">{n_reg} regression{"s" if n_reg != 1 else ""}</span>'
                 if n_reg else '<span class="muted">no regression</span>')
        parts.append(f"<p>Against baseline run <span class=\"mono\">{esc(data.comparison.run_a['run_id'])}</span>"
                     f" ({esc(_ts(data.comparison.run_a.get('started_at')))}): {badge}"
                     + (f", {n_imp} improvement{'s' if n_imp != 1 else ''}" if n_imp else "") + "</p>")
    else:
        parts.append('<p class="muted">No earlier finished run with this name: no comparison.</p>')
    parts.append("<h2>Run</h2>" + run_meta(data))
    parts.append("<h2>Systems × metrics <span class=\"muted small\">mean [95% bootstrap CI]</span></h2>"
                 + summary_table(data))
    if data.comparison is not None:
        pol = data.comparison.policy
        parts.append(
            "<h2>Changes against the baseline</h2>"
            f'<p class="muted small">Paired bootstrap over the utterances of both runs ({pol.n_boot} '
            f"resamples, {pol.level:.0%} CI). A regression: the whole CI on the worse side of zero "
            f"(by the metric's declared direction) and a change beyond the threshold "
            f"({pol.relative:.1%} of the baseline unless set per metric).</p>"
            + changes_table(data.comparison, data.specs)
        )
    parts.append("<h2>Distributions per system</h2>" + (chart_divs(dist) if dist else '<p class="muted">No scores.</p>'))
    parts.append("<h2>History</h2>" + (chart_divs(trends) if trends else
                 '<p class="muted">Fewer than two finished runs with this name.</p>'))
    parts.append("<h2>Worst utterances</h2>" + worst_section(data, assets))
    parts.append("<h2>Errors</h2>" + errors_section(data))
    parts.append(f'<p class="muted small">speechqe {esc(str(r.get("code_version")))}; generated '
                 f"{esc(datetime.now().strftime('%Y-%m-%d %H:%M'))}.</p>")
    return page(title, "\n".join(parts), assets, charts=dist + trends)


def markdown_summary(data: ReportData, report_link: str | None = None) -> str:
    """A short markdown table (system x metric, mean [CI]) plus flags, for Prefect artifacts.
    Markdown special characters in names are escaped (artifacts render markdown)."""
    def md(s: Any) -> str:
        out = str(s)
        for ch in "\\`*_[]|<>":
            out = out.replace(ch, "\\" + ch)
        return out

    systems = data.systems
    by = {(a.system, a.metric): a for a in data.aggregates}
    lines = [f"### {md(data.run.get('name'))}: run {md(data.run['run_id'])}", ""]
    lines.append("| metric | " + " | ".join(md(s) for s in systems) + " |")
    lines.append("|---|" + "---|" * len(systems))
    for m in data.metrics:
        spec = data.specs.get(m)
        cells = []
        for s in systems:
            a = by.get((s, m))
            cells.append("" if a is None else f"{fmt(a.mean)} [{fmt(a.ci_low)}, {fmt(a.ci_high)}]"
                         + (f" ({a.n_errors} err)" if a.n_errors else ""))
        lines.append(f"| {md(m)}{_arrow(spec)} | " + " | ".join(cells) + " |")
    if data.comparison is not None:
        regs = data.comparison.regressions
        lines += ["", f"**Regressions against {md(data.comparison.run_a['run_id'])}: {len(regs)}**"]
        for c in regs:
            lines.append(f"- {md(c.system)} / {md(c.metric)}: {fmt(c.mean_a)} → {fmt(c.mean_b)} "
                         f"(change {fmt(c.delta)} [{fmt(c.ci_low)}, {fmt(c.ci_high)}])")
    if report_link:
        lines += ["", f"Report: {report_link}"]
    return "\n".join(lines) + "\n"
