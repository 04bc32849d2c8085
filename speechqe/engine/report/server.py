"""``speechqe dashboard``: the run history of a results store, served on 127.0.0.1.

A small threaded HTTP server (standard library): the pages are rendered per request from the
store, opened read-only for the request and closed right after, so a scheduled evaluation can
take the store as its writer between requests (DuckDB allows one writer and no reader beside
it: while a run writes, the dashboard answers 503 and the flow's store task retries).

Routes: ``/`` (runs, history trends per run name, latest regressions), ``/run/<id>`` (the run
report), ``/compare?a=<id>&b=<id>``, ``/audio?run=<id>&item=<id>&which=item|ref`` (only files
that a run's items table names), ``/static/plotly.min.js``.
"""

from __future__ import annotations

import html
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from speechqe.errors import ConfigError, SpeechQEError, StoreError
from speechqe.engine.history import RegressionPolicy, baseline_for, compare_runs, trend
from speechqe.engine.report.data import gather
from speechqe.engine.report.render import (
    AUDIO_MIME,
    Assets,
    ReportData,
    _ts,
    chart_divs,
    changes_table,
    page,
    plotly_js,
    render_run_report,
    table,
    trend_charts,
)

esc = html.escape


@dataclass
class Dashboard:
    """Renders the dashboard's pages from the store at ``db``."""

    db: Path
    policy: RegressionPolicy = field(default_factory=RegressionPolicy)
    n_worst: int = 5
    trend_limit: int = 30
    _aggs: dict[tuple, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _plotly: bytes | None = None

    def assets(self) -> Assets:
        return Assets(
            plotly_src="/static/plotly.min.js",
            audio_url=lambda run, item, which: (
                f"/audio?run={quote(run, safe='')}&item={quote(item, safe='')}&which={which}"),
        )

    def _store(self):
        from speechqe.store import Store

        return Store(self.db, read_only=True)

    def aggregates_of(self, store):
        """Per-run aggregates, memoised by the run's results fingerprint (a retried error
        changes an older run's results: the fingerprint catches it)."""
        from speechqe.engine.aggregate import aggregate

        def get(run_id: str):
            key = (run_id, store.results_fingerprint(run_id))
            with self._lock:
                if key in self._aggs:
                    return self._aggs[key]
            aggs = aggregate(store.results(run_id))
            with self._lock:
                self._aggs[key] = aggs
            return aggs

        return get

    def nav(self) -> str:
        return f'<nav class="small"><a href="/">all runs</a><span class="muted">{esc(str(self.db))}</span></nav>'

    # --- pages ------------------------------------------------------------------------------
    def index(self, name: str | None = None) -> str:
        with self._store() as st:
            runs = st.runs()
            names = list(dict.fromkeys(r["name"] for r in reversed(runs) if r["name"] is not None))
            if name is None and names:
                name = names[0]
            aggs_of = self.aggregates_of(st)
            charts: list[tuple[str, str]] = []
            latest_cmp = ""
            if name is not None:
                finished = [r for r in st.runs(name=name) if r["status"] == "finished"]
                if finished:
                    points = trend(st, name, limit=self.trend_limit, aggregates_of=aggs_of)
                    data = ReportData(run=finished[-1], records=[], items={}, specs=_specs(),
                                      aggregates=aggs_of(finished[-1]["run_id"]), trend=points)
                    charts = trend_charts(data)
                    base = baseline_for(st, finished[-1])
                    if base is not None:
                        cmp = compare_runs(st, base["run_id"], finished[-1]["run_id"], self.policy)
                        latest_cmp = (
                            f"<h2>Latest run against the one before</h2><p><a href=\"/compare?a="
                            f"{quote(base['run_id'])}&amp;b={quote(finished[-1]['run_id'])}\">"
                            f"{esc(base['run_id'])} → {esc(finished[-1]['run_id'])}</a>: "
                            f"{len(cmp.regressions)} regression(s), {len(cmp.improvements)} improvement(s)</p>"
                            + changes_table(cmp, _specs(), only_flagged=True)
                        )
        rows = []
        for r in reversed(runs):
            rows.append(
                f"<tr><td class=\"mono\"><a href=\"/run/{quote(r['run_id'])}\">{esc(r['run_id'])}</a></td>"
                f"<td><a href=\"/?name={quote(str(r['name']), safe='')}\">{esc(str(r['name']))}</a></td>"
                f"<td>{esc(str(r['status']))}</td><td>{esc(_ts(r['started_at']))}</td>"
                f"<td class=\"num\">{r['n_items']}</td><td class=\"num\">{r['n_errors']}</td>"
                f"<td class=\"num\">{r['n_reused']}</td><td>{esc(str(r['suite'] or '-'))}</td>"
                f"<td class=\"mono small\">{esc(str(r['code_version']))}</td></tr>"
            )
        picker = " ".join(
            f'<a href="/?name={quote(n, safe="")}">{"<b>" + esc(n) + "</b>" if n == name else esc(n)}</a>'
            for n in names
        )
        body = (
            self.nav() + "<h1>speechqe runs</h1>"
            + (f"<p>Run names: {picker}</p>" if picker else "<p class=\"muted\">No runs yet.</p>")
            + (f"<h2>History of {esc(name)}</h2>" + (chart_divs(charts) if charts else
               '<p class="muted">Fewer than two finished runs with this name.</p>') if name else "")
            + latest_cmp
            + "<h2>All runs</h2>"
            + table(["run", "name", "status", "started (UTC)", "items", "errors", "reused",
                     "suite", "code"], rows)
        )
        return page("speechqe dashboard", body, self.assets(), charts=charts)

    def run_page(self, run_id: str) -> str:
        with self._store() as st:
            data = gather(st, run_id, policy=self.policy, n_worst=self.n_worst,
                          trend_limit=self.trend_limit, aggregates_of=self.aggregates_of(st))
        return render_run_report(data, self.assets(), nav=self.nav())

    def compare_page(self, a: str, b: str) -> str:
        with self._store() as st:
            cmp = compare_runs(st, a, b, self.policy)
        body = (
            self.nav() + f"<h1>{esc(cmp.run_a['run_id'])} → {esc(cmp.run_b['run_id'])}</h1>"
            f"<p>{len(cmp.regressions)} regression(s), {len(cmp.improvements)} improvement(s); "
            f"threshold {self.policy.relative:.1%} of the baseline unless set per metric.</p>"
            + changes_table(cmp, _specs())
        )
        return page("speechqe compare", body, self.assets())

    def audio(self, run_id: str, item_id: str, which: str) -> tuple[Path, str]:
        if which not in ("item", "ref"):
            raise ConfigError("which must be item or ref")
        with self._store() as st:
            rid = st.run(run_id)["run_id"]
            rows = [it for it in st.items(rid) if it["item_id"] == item_id]
        if not rows:
            raise ConfigError("no such item")
        path = rows[0]["path" if which == "item" else "ref_path"]
        if not path:
            raise ConfigError("no such file")
        p = Path(path)
        mime = AUDIO_MIME.get(p.suffix.lower(), "application/octet-stream")
        return p, mime

    def plotly(self) -> bytes:
        if self._plotly is None:
            self._plotly = plotly_js().encode("utf-8")
        return self._plotly


def _specs():
    from speechqe.plugins import output_specs

    return output_specs()


def make_server(dashboard: Dashboard, port: int = 8765) -> ThreadingHTTPServer:
    """A server bound to 127.0.0.1 only (``port`` 0: any free port). Requests whose Host
    header is not this loopback address are refused (DNS rebinding)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "speechqe-dashboard"

        def log_message(self, fmt_: str, *args: Any) -> None:  # quiet; errors still go to stderr
            pass

        def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "max-age=86400" if cache else "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _html(self, status: int, doc: str) -> None:
            self._send(status, doc.encode("utf-8"), "text/html; charset=utf-8")

        def _message(self, status: int, text: str) -> None:
            self._html(status, page("speechqe", f"<h1>{status}</h1><p>{esc(text)}</p>", Assets()))

        def do_GET(self) -> None:  # noqa: N802
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            if host not in ("127.0.0.1", "localhost"):
                return self._message(HTTPStatus.FORBIDDEN, "the dashboard answers on 127.0.0.1 only")
            url = urlsplit(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                if url.path == "/":
                    return self._html(200, dashboard.index(q.get("name")))
                if url.path.startswith("/run/"):
                    from urllib.parse import unquote

                    return self._html(200, dashboard.run_page(unquote(url.path[len("/run/"):])))
                if url.path == "/compare" and "a" in q and "b" in q:
                    return self._html(200, dashboard.compare_page(q["a"], q["b"]))
                if url.path == "/audio" and "run" in q and "item" in q:
                    p, mime = dashboard.audio(q["run"], q["item"], q.get("which", "item"))
                    try:
                        data = p.read_bytes()
                    except OSError:
                        return self._message(HTTPStatus.NOT_FOUND, "the audio file is gone")
                    return self._send(200, data, mime)
                if url.path == "/static/plotly.min.js":
                    return self._send(200, dashboard.plotly(), "text/javascript; charset=utf-8", cache=True)
                return self._message(HTTPStatus.NOT_FOUND, "no such page")
            except StoreError as exc:
                return self._message(HTTPStatus.SERVICE_UNAVAILABLE,
                                     f"{exc} (a run may be writing it: reload in a moment)")
            except (ConfigError, SpeechQEError) as exc:
                return self._message(HTTPStatus.NOT_FOUND, str(exc))

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)
