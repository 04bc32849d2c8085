"""The HTML report and the dashboard in headless Chromium (Debian's, driven by Playwright):
charts render, embedded audio decodes, the console stays clean, and names and transcripts
that are HTML/JS are shown as text and never run."""

from __future__ import annotations

import shutil
import threading

import pytest

from .test_compare import HOSTILE_ITEM, HOSTILE_SYSTEM, make_two_runs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is missing")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


class Page:
    """A page with its console messages, page errors and dialogs recorded."""

    def __init__(self, browser):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.console: list[tuple[str, str]] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.console.append(("pageerror", str(e))))

        def on_dialog(d):
            self.dialogs.append(d.message)
            d.dismiss()

        self.page.on("dialog", on_dialog)

    def open(self, url: str, charts: bool = True) -> None:
        """Load ``url``; with ``charts``, wait until the page's script has drawn them (a page
        without charts or audio has no script)."""
        self.page.goto(url)
        if charts:
            self.page.wait_for_selector("body[data-charts-ready]", timeout=60_000)

    def problems(self) -> list:
        bad = [m for m in self.console if m[0] in ("error", "pageerror", "warning")]
        return bad + [("dialog", d) for d in self.dialogs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, browser):
    from speechqe import plugins

    # module scope: set the toy plugin by hand (the toy_metrics fixture is per test)
    import os
    import sys
    from pathlib import Path

    tests_dir = str(Path(__file__).resolve().parent.parent)
    sys.path.insert(0, tests_dir)
    old = os.environ.get("SPEECHQE_PLUGINS")
    os.environ["SPEECHQE_PLUGINS"] = "plugins.toy_metrics"
    plugins.refresh()
    tmp = tmp_path_factory.mktemp("report")
    db, ids = make_two_runs(tmp, None, hostile=True)
    yield tmp, db, ids
    if old is None:
        os.environ.pop("SPEECHQE_PLUGINS", None)
    else:
        os.environ["SPEECHQE_PLUGINS"] = old
    plugins.refresh()


def test_report_renders_offline_and_shows_markup_as_text(browser, runs):
    from speechqe.engine.report import write_report
    from speechqe.store import Store

    tmp, db, (a, b) = runs
    with Store(db, read_only=True) as st:
        path, data = write_report(st, b, tmp / "report.html")
    assert data.comparison is not None and [(c.system, c.metric) for c in data.comparison.regressions] == [
        ("sys_b", "toy_snr")]
    html = path.read_text()
    assert "http://" not in html.split("<body>")[1].split("<script nonce")[0]  # no remote resource
    n_metrics = len(data.metrics)  # toy_peak_db, toy_rms_db, toy_snr, toy_wer

    pg = Page(browser)
    pg.open(path.as_uri())
    page = pg.page
    # one distribution and one trend chart per metric, each drawn by Plotly with its traces
    assert page.get_attribute("body", "data-charts-ready") == str(2 * n_metrics)
    assert page.locator(".js-plotly-plot .main-svg").count() >= 2 * n_metrics
    assert page.locator("[id^=dist-] .boxlayer .trace").count() == 2 * n_metrics
    assert page.locator("[id^=trend-] .scatterlayer .trace").count() == 2 * n_metrics
    # the regression is flagged; the word diff marks the ASR's substitution and deletion
    assert page.locator("tr.regression .flag.regression").count() == 1
    assert page.locator(".w-sub").count() > 0 and page.locator("del.w-del").count() > 0
    # embedded audio decodes in the browser
    duration = page.evaluate("""() => new Promise((ok, bad) => {
        const a = document.querySelector('audio'); a.preload = 'auto';
        a.addEventListener('loadedmetadata', () => ok(a.duration)); a.addEventListener('error', () => bad('audio error'));
        a.load(); })""")
    assert duration == pytest.approx(0.3, abs=0.01)
    # markup in names and transcripts is text: visible as typed, never executed
    assert page.evaluate("() => window.__pwned") is None
    text = page.inner_text("body")
    assert HOSTILE_SYSTEM in text and HOSTILE_ITEM in text and "</script><script>window.__pwned=3</script>" in text
    assert page.locator("img").count() == 0 and page.locator("body svg[onload]").count() == 0
    ticks = page.eval_on_selector_all("[id^=dist-] .xtick text", "els => els.map(e => e.textContent)")
    assert HOSTILE_SYSTEM in ticks  # Plotly labels too
    page.screenshot(path=str(tmp / "report.png"), full_page=True)
    assert pg.problems() == []
    assert (tmp / "report.png").stat().st_size > 50_000


def test_dashboard_pages_render(browser, runs):
    from speechqe.engine.report.server import Dashboard, make_server

    tmp, db, (a, b) = runs
    server = make_server(Dashboard(db), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        pg = Page(browser)
        pg.open(base + "/")
        page = pg.page
        assert page.locator("[id^=trend-] .scatterlayer .trace").count() > 0
        assert page.locator("tr.regression").count() == 1  # latest run against the one before
        page.screenshot(path=str(tmp / "dashboard.png"), full_page=True)
        page.click(f"a[href='/run/{b}']")
        page.wait_for_selector("body[data-charts-ready]")
        assert page.locator("[id^=dist-] .boxlayer .trace").count() > 0
        assert page.evaluate("() => window.__pwned") is None and HOSTILE_SYSTEM in page.inner_text("body")
        ok = page.evaluate("""() => new Promise((ok, bad) => {
            const a = document.querySelector('audio'); a.preload = 'auto';
            a.addEventListener('loadedmetadata', () => ok(a.duration)); a.addEventListener('error', () => bad('audio'));
            a.load(); })""")
        assert ok == pytest.approx(0.3, abs=0.01)
        assert pg.problems() == []
    finally:
        server.shutdown()
        server.server_close()


# Opens every details element, then reports what would show an injection at work.
_AUDIT_JS = """() => {
    document.querySelectorAll('details').forEach(d => { d.open = true; });
    const handlers = [];
    for (const el of document.querySelectorAll('*'))
        for (const a of el.attributes) if (a.name.startsWith('on')) handlers.push(el.tagName + ' ' + a.name);
    return {handlers, pwned: window.__pwned === undefined ? null : window.__pwned,
            foreign: document.querySelectorAll('img, iframe, object, embed, form, base, link').length,
            scripts: [...document.scripts].map(s => s.type || (s.nonce ? 'nonce' : 'NO NONCE'))};
}"""


def _audit(pg: Page, fields) -> str:
    from .hostile import payload

    found = pg.page.evaluate(_AUDIT_JS)
    assert found["handlers"] == [] and found["pwned"] is None and found["foreign"] == 0, found
    assert set(found["scripts"]) <= {"nonce", "application/json", "application/octet-stream"}, found
    text = pg.page.inner_text("body")
    assert [f for f in fields if payload(f) not in text] == []
    assert pg.problems() == []
    return text


@pytest.mark.slow
def test_hostile_store_pages_show_text_and_run_nothing(browser, runs):
    """A store whose every field is hostile markup (tests/report/hostile.py): its report and
    each dashboard page show every field as typed, and nothing runs (no dialog, no handler,
    no flag set, no element that came from data)."""
    from urllib.parse import quote

    from speechqe.engine.report import write_report
    from speechqe.engine.report.server import Dashboard, make_server
    from speechqe.store import Store

    from .hostile import REPORT_FIELDS, build, payload

    tmp = runs[0] / "hostile"
    h = build(tmp)
    with Store(h.db, read_only=True) as st:
        path, _ = write_report(st, h.run_b, tmp / "report.html")
    pg = Page(browser)
    pg.open(path.as_uri())
    _audit(pg, REPORT_FIELDS)
    ticks = pg.page.eval_on_selector_all("[id^=dist-] .xtick text", "els => els.map(e => e.textContent)")
    assert payload("system") in ticks  # Plotly draws the label as text too
    pg.page.screenshot(path=str(tmp / "report.png"), full_page=True)

    server = make_server(Dashboard(h.db), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        pages = {  # url: fields shown, whether it has charts
            f"/?name={quote(payload('run_name'), safe='')}": (
                ("run_name", "suite", "code_version", "run_id", "system"), True),
            f"/run/{quote(h.odd_id, safe='')}": (REPORT_FIELDS + ("run_id",), True),
            f"/run/{quote(h.failed, safe='')}": (("run_error",), False),
            f"/compare?a={h.run_a}&b={h.run_b}": (("system", "stored_metric"), False),
        }
        for url, (fields, charts) in pages.items():
            pg = Page(browser)
            pg.open(base + url, charts=charts)
            _audit(pg, fields)
        pg.page.screenshot(path=str(tmp / "compare.png"), full_page=True)
    finally:
        server.shutdown()
        server.server_close()
