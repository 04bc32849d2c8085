"""A results store whose every user-supplied string is hostile markup, and a checker of the
pages made from it.

The store is written through the Store API (no scoring: fast), so that fields no command line
lets one set freely (host, model ids, asset names, error messages) are hostile too. Each
field gets its own payload (:func:`payload`) so that a test can tell which field a page shows.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from conftest import write_tone

#: What each payload tries: closing a script, an attribute break-out into an element with an
#: event handler, a template expression, entity confusion, quotes, and non-ASCII text.
PAYLOAD = ("<script>window.__pwned=1</script>\"><img src=x onerror=\"window.__pwned=2\">"
           "'</script><svg onload=window.__pwned=3>{{ 7*7 }}{% raw %}&amp;&lt; ☃ é 日本")


def payload(field_name: str) -> str:
    """The hostile string of one field (its name first, so pages can be searched by field)."""
    return f"{field_name}:{PAYLOAD}"


#: Fields whose payload must be shown as text on a run's report.
REPORT_FIELDS = (
    "run_name", "source", "suite", "code_version", "host", "flow_run_id", "run_metric",
    "metric_version", "model_id", "device", "asset_name", "asset_fingerprint", "asset_source",
    "config_value", "config_key", "metric_param", "config_list", "system", "item_id",
    "transcript", "hypothesis", "error_type", "error_message", "stored_metric",
)

#: A file name cannot hold "/": the file-name payload.
FILE_NAME = "file<img src=x onerror=\"window.__pwned=4\">'{{ 7*7 }} é.wav"


@dataclass
class HostileStore:
    db: Path
    run_a: str
    run_b: str
    failed: str
    odd_id: str  # a finished run whose run id is a payload
    files: dict[str, Path] = field(default_factory=dict)  # item id -> audio file


def build(tmp: Path) -> HostileStore:
    """Two finished runs named ``payload('run_name')`` (run B regresses on ``toy_snr`` for the
    hostile system), a failed run with a hostile error, and a run whose id is a payload.

    Uses the output names of tests/plugins/toy_metrics (``toy_snr`` up, ``toy_wer`` down) and
    a metric no plugin declares (``payload('stored_metric')``)."""
    from speechqe.hashing import sha256_file
    from speechqe.manifest import AudioItem
    from speechqe.store import ScoreRecord, Store

    folder = tmp / "set"
    db = tmp / "db <b>&\"'" / "s.duckdb"  # the dashboard shows the store's path
    system = payload("system")
    files = {}
    items = []
    for k in range(4):
        sys_name = system if k < 3 else "plain"
        item_id = f"{payload('item_id')}#{k}"
        path = folder / f"{k}-{FILE_NAME}"
        write_tone(path, seconds=0.3, freq=200 + 40 * k, seed=k)
        ref = folder / "ref" / f"{k}.wav"
        write_tone(ref, seconds=0.3, freq=200 + 40 * k, seed=k)
        files[item_id] = path
        items.append(AudioItem(id=item_id, path=str(path), system=sys_name, sha256=sha256_file(path),
                               ref_path=str(ref), ref_sha256=sha256_file(ref), sample_rate=16000,
                               frames=4800, channels=1, text=payload("transcript") + f" word{k}"))
    # an item whose file is gone: the report names the (hostile) file in its place
    gone = folder / f"gone-{FILE_NAME}"
    items.append(AudioItem(id=f"{payload('item_id')}#gone", path=str(gone), system="plain",
                           sha256="0" * 64, text="the missing one"))

    run_kwargs = dict(
        name=payload("run_name"), source=payload("source"), suite=payload("suite"),
        metrics=[{"name": payload("run_metric"), "version": payload("metric_version"),
                  "model_id": payload("model_id"), "device": payload("device"), "outputs": []}],
        params={"source": payload("config_value"), payload("config_key"): 1,
                "params": {"toy_snr": {"x": payload("metric_param")}},
                "metrics": [payload("config_list")]},
        code_version=payload("code_version"),
        assets={payload("asset_name"): {"fingerprint": payload("asset_fingerprint"),
                                        "source": payload("asset_source")}},
        flow_run_id=payload("flow_run_id"),
    )
    ids = []
    with Store(db) as st:
        for run, (shift, run_id) in enumerate(((0.0, None), (-10.0, None), (0.0, payload("run_id")))):
            rid = st.start_run(n_items=len(items), run_id=run_id, **run_kwargs)
            st.con.execute("UPDATE runs SET host = ? WHERE run_id = ?", [payload("host"), rid])
            st.add_items(rid, items)
            records, links = [], []
            for k, it in enumerate(items):
                key = f"{run}-{k}"
                bad = k == 1  # toy_snr failed on this item, with a hostile message
                snr = 20.0 + k + (shift if it.system == system else 0.0)
                records += [
                    ScoreRecord(key, "toy_snr", "1", "m", "toy_snr", it.sha256, None if bad else snr,
                                "error" if bad else "ok", payload("error_type") if bad else None,
                                payload("error_message") if bad else None),
                    ScoreRecord(key, "toy_wer", "1", "m", "toy_asr", it.sha256, 0.5, "ok",
                                extra={"hypothesis": payload("hypothesis") + f" word{k}", "edits": 1,
                                       "ref_words": 2}),
                    ScoreRecord(key, payload("stored_metric"), "1", "m", "odd", it.sha256, 1.0 + k, "ok"),
                ]
                links += [(it.id, "toy_snr", key, "1", "m"), (it.id, "toy_asr", key, "1", "m"),
                          (it.id, "odd", key, "1", "m")]
            st.link(rid, links)
            st.write(rid, records)
            st.finish_run(rid, "finished")
            ids.append(rid)
        failed = st.record_failed_run(name="failing", source="x", suite=None, params={},
                                      code_version="0", error=payload("run_error"))
    return HostileStore(db, ids[0], ids[1], failed, ids[2], files)


# ------------------------------------------------------------------------------------------
# Checking a page
# ------------------------------------------------------------------------------------------
#: Elements a page may contain (anything else came from data).
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "nav", "a", "b", "span", "h1", "h2", "h3",
    "p", "div", "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "br", "audio",
    "script", "del", "ins",
}
#: Markup of our own inside Plotly labels (hover templates).
PLOTLY_TAGS = re.compile(r"<br>|<extra>|</extra>")


class Page(HTMLParser):
    """Elements, attributes, scripts and the text of a page, as an HTML parser sees them."""

    def __init__(self, doc: str):
        super().__init__(convert_charrefs=True)
        self.doc = doc
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.text_parts: list[str] = []
        self._in_script: dict | None = None
        self._in_style = False
        self.feed(doc)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "script":
            self._in_script = a
            self.scripts.append((a, ""))
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)
        elif not self._in_style:
            self.text_parts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def figures(self) -> list:
        return [json.loads(t) for a, t in self.scripts if a.get("type") == "application/json"]


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def check_page(doc: str, *, dashboard: bool = False) -> Page:
    """Assert that ``doc`` holds nothing executable that came from data, and return it parsed.

    * only the elements a page is made of, no event-handler attribute, no ``javascript:``;
    * every ``<script>`` is ours: nonce'd (the nonce of the page's CSP) or an inert data block
      (a JSON figure that parses, base64 audio), and the raw source holds exactly as many
      ``<script`` and ``</script`` as the parser found scripts (none hides in text);
    * Plotly labels hold no markup but our hover template's;
    * links stay on the page's origin (dashboard) and sources are plotly.js or audio routes.
    """
    page = Page(doc)
    csp = [a.get("content") for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert len(csp) == 1 and "default-src 'none'" in csp[0], csp
    nonce = re.search(r"'nonce-([^']+)'", csp[0]).group(1)
    for tag, attrs in page.tags:
        assert tag in ALLOWED_TAGS, (tag, attrs)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, value)
            assert not (value or "").strip().lower().startswith(("javascript:", "data:text/html")), (tag, name)
        if "href" in attrs:
            assert dashboard and attrs["href"].startswith("/") and not attrs["href"].startswith("//"), attrs
        if "src" in attrs:
            assert (tag, attrs["src"].split("?")[0]) in (("script", "/static/plotly.min.js"), ("audio", "/audio")), attrs
    low = doc.lower()
    assert low.count("<script") == len(page.scripts) == low.count("</script"), "a script hides in text"
    for attrs, text in page.scripts:
        kind = attrs.get("type")
        if kind == "application/json":
            assert set(attrs) == {"type", "class", "data-target"}
            fig = json.loads(text)
            for s in _strings(fig):
                assert "<" not in PLOTLY_TAGS.sub("", s) and ">" not in PLOTLY_TAGS.sub("", s), s
        elif kind == "application/octet-stream":
            base64.b64decode(text.strip(), validate=True)
        else:
            assert kind is None and attrs.get("nonce") == nonce, attrs
    return page
