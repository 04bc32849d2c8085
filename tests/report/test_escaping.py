"""Every user string on every page is text (issue 12), checked without a browser: a store whose
every field is hostile markup, its report and dashboard pages parsed (tests/report/hostile.py
says what is checked). test_report_browser.py opens the same pages in Chromium."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, parse_qs

import pytest

from speechqe.engine.report.render import _md_escape, markdown_summary, plotly_text, render_message

from .hostile import FILE_NAME, PAYLOAD, REPORT_FIELDS, build, check_page, payload


@pytest.fixture
def hostile(tmp_path, toy_metrics):
    return build(tmp_path)


def _missing(page, fields):
    return [f for f in fields if payload(f) not in page.text]


def test_report_shows_every_field_as_text(hostile, tmp_path):
    from speechqe.engine.report import write_report
    from speechqe.store import Store

    with Store(hostile.db, read_only=True) as st:
        path, data = write_report(st, hostile.run_b, tmp_path / "b.html")
        failed, _ = write_report(st, hostile.failed, tmp_path / "failed.html")
        odd, _ = write_report(st, hostile.odd_id, tmp_path / "odd.html")
    assert data.comparison is not None and [c.system for c in data.comparison.regressions] == [payload("system")]
    page = check_page(path.read_text())
    assert _missing(page, REPORT_FIELDS) == []
    assert FILE_NAME in page.text  # the file that is gone is named, as text
    assert page.text.count(PAYLOAD) >= 40 and "49" not in page.text.split("{{ 7*7 }}")[0][-5:]
    # the charts name the system and items; Plotly gets them entity-escaped
    names = {t.get("name") for fig in page.figures() for t in fig["data"]}
    assert plotly_text(payload("system")) in names
    assert any(plotly_text(payload("item_id") + "#0") in t.get("text", []) for fig in page.figures()
               for t in fig["data"])
    assert payload("run_error") in check_page(failed.read_text()).text
    odd_page = check_page(odd.read_text())
    assert payload("run_id") in odd_page.text and _missing(odd_page, REPORT_FIELDS) == []


def test_dashboard_pages_show_every_field_as_text(hostile):
    from speechqe.engine.report.server import Dashboard

    dash = Dashboard(hostile.db)
    index = check_page(dash.index(), dashboard=True)
    assert "failing" in index.text  # the latest run's name is picked by default
    named = check_page(dash.index(payload("run_name")), dashboard=True)
    assert _missing(named, ("run_name", "suite", "code_version", "run_id", "system", "run_metric")) == [
        "run_metric"]  # metrics are not listed on the front page
    assert str(hostile.db) in named.text  # the store's path, in the navigation bar
    # every link leads to a run or name of the store, however hostile
    runs = {hostile.run_a, hostile.run_b, hostile.failed, hostile.odd_id}
    names = {payload("run_name"), "failing"}
    for tag, attrs in named.tags:
        if tag != "a":
            continue
        url = urlsplit(attrs["href"])
        if url.path.startswith("/run/"):
            assert unquote(url.path[len("/run/"):]) in runs
        elif url.path == "/compare":
            q = parse_qs(url.query)
            assert set(q) == {"a", "b"} and {q["a"][0], q["b"][0]} <= runs
        else:
            assert url.path == "/" and (not url.query or parse_qs(url.query)["name"][0] in names)
    run = check_page(dash.run_page(hostile.run_b), dashboard=True)
    assert _missing(run, REPORT_FIELDS) == []
    srcs = [a["src"] for t, a in run.tags if t == "audio"]
    assert srcs and all(s.startswith("/audio?run=") for s in srcs)
    cmp = check_page(dash.compare_page(hostile.run_a, hostile.run_b), dashboard=True)
    assert _missing(cmp, ("system", "stored_metric")) == [] and "1 regression(s)" in cmp.text
    msg = check_page(render_message(404, payload("message")))
    assert payload("message") in msg.text


def test_markdown_summary_escapes_every_name(hostile):
    from speechqe.engine.report.data import gather
    from speechqe.store import Store

    with Store(hostile.db, read_only=True) as st:
        md = markdown_summary(gather(st, hostile.run_b), "file:///x.html")
    for f in ("run_name", "system", "stored_metric"):
        assert _md_escape(payload(f)) in md and payload(f) not in md
    assert "**Regressions against" in md and md.endswith("Report: file:///x.html\n")
