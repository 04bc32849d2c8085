"""``speechqe dashboard``: the run history of a results store, served over HTTP.

A small threaded HTTP server (standard library): the pages are rendered per request from the
store, opened read-only for the request and closed right after, so a scheduled evaluation can
take the store as its writer between requests (DuckDB allows one writer and no reader beside
it: while a run writes, the dashboard answers 503 and the flow's store task retries).

Routes: ``/`` (runs, history trends per run name, latest regressions; ``?name=`` picks the
name), ``/run/<id>`` (the run report), ``/compare?a=<id>&b=<id>``,
``/audio?run=<id>&item=<id>&which=item|ref``, ``/static/plotly.min.js``. Nothing else.

Safety (the dashboard has no login, so it answers on 127.0.0.1 unless told otherwise):

* No URL names a file. Run ids, item ids and run names are looked up in the store; the only
  files ever read are the audio files that a stored run's items table names, and one is served
  only when it is a regular file with a browser audio type whose bytes still have the sha256
  that was stored when the run scored it. A path swapped for a symlink to another file, a
  file edited since, or an id written with ``../``, ``%2e%2e/``, double encoding, backslashes
  or an absolute path gets a 404; malformed requests (NUL and control characters, invalid
  UTF-8, repeated or unknown parameters) a 400.
* The Host header must name the address the server answers on (DNS rebinding): 403 otherwise.
* Pages are HTML from autoescaped templates with a nonce-based Content-Security-Policy; no
  page can be framed by another site.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import stat
import sys
import threading
import traceback
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from speechqe.engine.history import RegressionPolicy, baseline_for, compare_runs, trend
from speechqe.engine.report.data import ReportData, gather
from speechqe.engine.report.render import (
    AUDIO_MIME,
    Assets,
    _url_part,
    plotly_js,
    render_message,
    render_page,
    render_run_report,
    sorted_changes,
    trend_charts,
)
from speechqe.errors import ConfigError, SpeechQEError, StoreError

#: The address the dashboard listens on unless told otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Host header names always accepted (the loopback interface).
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
#: Largest audio file served (read whole, hashed, then sent).
MAX_AUDIO_BYTES = 256 << 20
#: Longest run id, item id or run name accepted in a URL (characters).
MAX_ID_CHARS = 1024


class HTTPError(Exception):
    """A request answered with ``status`` and a message (shown on a plain status page)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)


def _param(value: str, what: str) -> str:
    """A URL-supplied id or name: refused (400) with control characters (NUL included) or
    beyond :data:`MAX_ID_CHARS`; otherwise only ever looked up in the store."""
    if len(value) > MAX_ID_CHARS:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"the {what} is too long")
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in value):
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"the {what} contains control characters")
    return value


def _unquote(raw: str, what: str) -> str:
    """Percent-decode once, strictly (invalid UTF-8 is a 400, never replaced)."""
    try:
        return _param(unquote(raw, errors="strict"), what)
    except UnicodeDecodeError:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"the {what} is not valid UTF-8") from None


def parse_query(query: str, allowed: Iterable[str]) -> dict[str, str]:
    """The query string as a dict: each parameter at most once and one of ``allowed``."""
    allowed = tuple(allowed)
    try:
        pairs = parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="strict",
                          max_num_fields=len(allowed) or 1)
    except UnicodeDecodeError:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "the query is not valid UTF-8") from None
    except ValueError:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "too many query parameters") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"unknown query parameter (this page takes: "
                            f"{', '.join(allowed) or 'none'})")
        if key in out:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"the query parameter {key} is repeated")
        out[key] = _param(value, key)
    return out


def _read_verified(path: str, sha256: str | None) -> bytes:
    """The bytes of ``path`` if it is (or links to) a regular file of at most
    :data:`MAX_AUDIO_BYTES` whose sha256 is ``sha256``; 404 otherwise.

    Opened once and checked on the open descriptor (no race between check and read); FIFOs and
    devices are refused before any byte is read."""
    if not sha256:
        raise HTTPError(HTTPStatus.NOT_FOUND, "the run stored no content hash for this file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except (OSError, ValueError):
        raise HTTPError(HTTPStatus.NOT_FOUND, "the audio file is gone") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HTTPError(HTTPStatus.NOT_FOUND, "not a regular file")
        if st.st_size > MAX_AUDIO_BYTES:
            raise HTTPError(HTTPStatus.NOT_FOUND, "the audio file is too large to serve")
        with os.fdopen(fd, "rb") as f:
            fd = -1  # closed with f
            data = f.read(MAX_AUDIO_BYTES + 1)
    except OSError:
        raise HTTPError(HTTPStatus.NOT_FOUND, "the audio file cannot be read") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_AUDIO_BYTES or hashlib.sha256(data).hexdigest() != sha256:
        raise HTTPError(HTTPStatus.NOT_FOUND, "the file is no longer the one the run scored")
    return data


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
            audio_url=lambda run, item, which: f"/audio?run={_url_part(run)}&item={_url_part(item)}&which={_url_part(which)}",
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

    # --- pages ------------------------------------------------------------------------------
    def index(self, name: str | None = None) -> str:
        """All runs, the history of one run name (default: the latest run's) and its latest
        run against the one before."""
        specs = _specs()
        with self._store() as st:
            runs = st.runs()
            names = list(dict.fromkeys(r["name"] for r in reversed(runs) if r["name"] is not None))
            if name is None and names:
                name = names[0]
            aggs_of = self.aggregates_of(st)
            charts = []
            latest = None
            if name is not None:
                finished = [r for r in st.runs(name=name) if r["status"] == "finished"]
                if finished:
                    points = trend(st, name, limit=self.trend_limit, aggregates_of=aggs_of)
                    data = ReportData(run=finished[-1], records=[], items={}, specs=specs,
                                      aggregates=aggs_of(finished[-1]["run_id"]), trend=points)
                    charts = trend_charts(data)
                    base = baseline_for(st, finished[-1])
                    if base is not None:
                        latest = compare_runs(st, base["run_id"], finished[-1]["run_id"], self.policy)
        return render_page(
            "dashboard.html.j2", title="speechqe dashboard", assets=self.assets(), charts=charts,
            nav=str(self.db), runs=list(reversed(runs)), names=names, name=name, latest=latest,
            latest_changes=sorted_changes(latest, only_flagged=True) if latest is not None else [],
            specs=specs,
        )

    def run_page(self, run_id: str) -> str:
        with self._store() as st:
            data = gather(st, run_id, policy=self.policy, n_worst=self.n_worst,
                          trend_limit=self.trend_limit, aggregates_of=self.aggregates_of(st))
        return render_run_report(data, self.assets(), nav=str(self.db))

    def compare_page(self, a: str, b: str) -> str:
        with self._store() as st:
            cmp = compare_runs(st, a, b, self.policy)
        return render_page("compare.html.j2", title="speechqe compare", assets=self.assets(),
                           nav=str(self.db), comparison=cmp, changes=sorted_changes(cmp),
                           policy=self.policy, specs=_specs())

    def audio(self, run_id: str, item_id: str, which: str) -> tuple[bytes, str]:
        """The bytes and MIME type of a stored run's item (``which='item'``) or reference
        (``'ref'``) audio, verified against the sha256 stored with the run."""
        if which not in ("item", "ref"):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "which must be item or ref")
        with self._store() as st:
            rid = st.run(run_id)["run_id"]
            rows = [it for it in st.items(rid) if it["item_id"] == item_id]
        if not rows:
            raise HTTPError(HTTPStatus.NOT_FOUND, "no such item in this run")
        path, sha = ((rows[0]["path"], rows[0]["sha256"]) if which == "item"
                     else (rows[0]["ref_path"], rows[0]["ref_sha256"]))
        if not path:
            raise HTTPError(HTTPStatus.NOT_FOUND, "this item has no such file")
        mime = AUDIO_MIME.get(Path(path).suffix.lower())
        if mime is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, "not an audio format browsers play")
        return _read_verified(path, sha), mime

    def plotly(self) -> bytes:
        if self._plotly is None:
            self._plotly = plotly_js().encode("utf-8")
        return self._plotly


def _specs():
    from speechqe.plugins import output_specs

    return output_specs()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine's loopback interface."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The host of a Host header, without port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8765
        return header[1:].split("]", 1)[0]
    if header.count(":") == 1:
        return header.rsplit(":", 1)[0]
    return header


def accepted_hosts(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """Host header names the server answers: the loopback names, the address it is bound to
    (unless a wildcard) and ``extra``."""
    names = set(LOOPBACK_NAMES) | {_host_name(h) for h in extra if h.strip()}
    bound = host.strip("[]").lower()
    if bound and bound not in ("0.0.0.0", "::"):
        names.add(bound)
    return frozenset(names)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler, allowed_hosts: frozenset[str]):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.allowed_hosts = allowed_hosts
        super().__init__(address, handler)


def make_server(dashboard: Dashboard, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST,
                allowed_hosts: Iterable[str] = ()) -> DashboardServer:
    """A server for ``dashboard`` on ``host`` (default 127.0.0.1 only; ``port`` 0: any free
    port). Requests whose Host header names neither the loopback interface, the bound
    address nor one of ``allowed_hosts`` are refused (403: DNS rebinding)."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "speechqe-dashboard"
        sys_version = ""

        def log_message(self, fmt_: str, *args: Any) -> None:  # quiet; errors still go to stderr
            pass

        def _send(self, status: int, body: bytes, ctype: str, cache: bool = False,
                  headers: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "max-age=86400" if cache else "no-store")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _html(self, status: int, doc: str) -> None:
            # the page's own <meta> policy restricts scripts; framing can only be refused here
            self._send(status, doc.encode("utf-8"), "text/html; charset=utf-8",
                       headers={"Content-Security-Policy": "frame-ancestors 'none'",
                                "X-Frame-Options": "DENY"})

        def _message(self, status: int, text: str) -> None:
            self._html(status, render_message(status, text))

        def do_GET(self) -> None:  # noqa: N802
            try:
                self._route()
            except HTTPError as exc:
                self._message(exc.status, str(exc))
            except StoreError as exc:
                self._message(HTTPStatus.SERVICE_UNAVAILABLE,
                              f"{exc} (a run may be writing it: reload in a moment)")
            except (ConfigError, SpeechQEError) as exc:
                self._message(HTTPStatus.NOT_FOUND, str(exc))
            except Exception:  # a defect: the page says so, the console has the traceback
                traceback.print_exc(file=sys.stderr)
                self._message(HTTPStatus.INTERNAL_SERVER_ERROR,
                              "internal error (the traceback is on the dashboard's console)")

        def _route(self) -> None:
            if _host_name(self.headers.get("Host") or "") not in self.server.allowed_hosts:
                raise HTTPError(HTTPStatus.FORBIDDEN, "this dashboard does not answer to that "
                                "host name (see speechqe dashboard --allow-host)")
            url = urlsplit(self.path)
            path = url.path
            if path == "/":
                q = parse_query(url.query, ("name",))
                return self._html(200, dashboard.index(q.get("name")))
            if path.startswith("/run/") and "/" not in path[len("/run/"):]:
                parse_query(url.query, ())
                run_id = _unquote(path[len("/run/"):], "run id")
                if not run_id:
                    raise HTTPError(HTTPStatus.NOT_FOUND, "no run id")
                return self._html(200, dashboard.run_page(run_id))
            if path == "/compare":
                q = parse_query(url.query, ("a", "b"))
                if set(q) != {"a", "b"}:
                    raise HTTPError(HTTPStatus.BAD_REQUEST, "compare takes ?a=<run>&b=<run>")
                return self._html(200, dashboard.compare_page(q["a"], q["b"]))
            if path == "/audio":
                q = parse_query(url.query, ("run", "item", "which"))
                if "run" not in q or "item" not in q:
                    raise HTTPError(HTTPStatus.BAD_REQUEST, "audio takes ?run=<run>&item=<item>&which=item|ref")
                data, mime = dashboard.audio(q["run"], q["item"], q.get("which", "item"))
                return self._send(200, data, mime)
            if path == "/static/plotly.min.js":
                parse_query(url.query, ())
                return self._send(200, dashboard.plotly(), "text/javascript; charset=utf-8", cache=True)
            raise HTTPError(HTTPStatus.NOT_FOUND, "no such page")

    return DashboardServer((host, port), Handler, accepted_hosts(host, allowed_hosts))
