"""Report pieces: word differences, the templates (autoescaped, strict), transcript choice,
directions from metadata, the audio budget, the markdown summary."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from speechqe.engine.aggregate import Aggregate
from speechqe.engine.report.data import ReportData, Transcript, gather
from speechqe.engine.report.render import (
    Assets,
    environment,
    fragment,
    markdown_summary,
    plotly_text,
    render_page,
    run_meta_view,
    summary_view,
    transcript_view,
)
from speechqe.engine.report.worddiff import Span, align_words, diff_words, display_normalise
from speechqe.metric import OutputSpec

TEMPLATES = Path(__file__).resolve().parents[2] / "speechqe" / "engine" / "report" / "templates"


def test_word_diff_spans_and_counts():
    d = diff_words("the cat sat on the mat", "the bat sat on mat")
    assert (d.substitutions, d.deletions, d.insertions, d.ref_words) == (1, 1, 0, 6)
    assert d.ref == [Span("equal", "the"), Span("substitute", "cat"), Span("equal", "sat on"),
                     Span("delete", "the"), Span("equal", "mat")]
    assert d.hyp == [Span("equal", "the"), Span("substitute", "bat"), Span("equal", "sat on"),
                     Span("equal", "mat")]
    kinds = [op.kind for op in align_words("a b c d", "a c d e")]
    assert kinds == ["equal", "delete", "equal", "insert"]
    assert align_words("", "x")[0].kind == "insert" and align_words("x", "")[0].kind == "delete"
    assert display_normalise("Hello, World!  It's") == "hello world it's"


def test_word_diff_markup_escapes_the_words():
    d = diff_words("the cat sat on the mat", "the bat sat on mat <now>")
    assert d.substitutions == 3
    ref = fragment("diff_line", diff_words("the cat sat on the mat", "the bat sat on mat").ref, "ref")
    assert ref == ('the <span class="w-sub" title="substituted">cat</span> sat on '
                   '<del class="w-del" title="deleted by the ASR">the</del> mat')
    hyp = fragment("diff_line", d.hyp, "hyp")
    assert "&lt;now&gt;" in hyp and "<now>" not in hyp
    ins = fragment("diff_line", diff_words("a", "a <b>x</b>").hyp, "hyp")
    assert ins == 'a <ins class="w-ins" title="inserted by the ASR">&lt;b&gt;x&lt;/b&gt;</ins>'


def test_templates_autoescape_and_refuse_undefined_names():
    import jinja2

    env = environment()
    names = sorted(p.name for p in TEMPLATES.iterdir())
    assert set(names) >= {"_page.html.j2", "_macros.html.j2", "report.html.j2", "dashboard.html.j2",
                          "compare.html.j2", "message.html.j2", "summary.md.j2", "report.css", "boot.js"}
    for name in names:
        source = (TEMPLATES / name).read_text()
        # nothing marks data safe or turns escaping off
        assert not re.search(r"\|\s*safe\b|autoescape\s+false|Markup", source), name
    assert env.autoescape is True  # every template, whatever its name
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ nope }}").render()
    evil = '</script><img src=x onerror=alert(1)>&"\''
    assert env.from_string("{{ x }}").render(x=evil) == (
        "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;&#34;&#39;")
    # tojson: safe inside <script> (no <, >, &, ') and the same value back
    import json

    js = env.from_string("{{ x|tojson }}").render(x={"name": evil})
    assert not set("<>&'") & set(js) and json.loads(js) == {"name": evil}
    with pytest.raises(ValueError):
        env.from_string("{{ x|tojson }}").render(x=float("nan"))  # JSON.parse has no NaN
    assert plotly_text(evil) == "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;\"'"


def test_css_and_boot_script_are_written_verbatim():
    doc = render_page("message.html.j2", title="t", assets=Assets(), status=404, text="x",
                      charts=[])
    assert (TEMPLATES / "report.css").read_text() in doc
    doc = render_page("message.html.j2", title="t", assets=Assets(plotly_src="/p.js"), status=1,
                      text="x", charts=[])
    assert (TEMPLATES / "boot.js").read_text() not in doc  # no charts, no audio: no script
    assert '<script nonce="' in doc and 'src="/p.js"' in doc


def test_markdown_summary_escapes_markdown():
    evil = '</script><img src=x onerror=alert(1)>&'
    data = ReportData(run={"run_id": "r", "name": "*bold* | x"}, records=[], items={},
                      specs={}, aggregates=[Aggregate(evil, "m_1", 2, 0, 1.0, 0.1, 0.9, 1.1),
                                            Aggregate("b", "m_1", 2, 1, 2.0, 0.1, 1.9, 2.1)])
    md = markdown_summary(data, "file:///tmp/a_b.html")
    assert md == ("### \\*bold\\* \\| x: run r\n\n"
                  "| metric | \\</script\\>\\<img src=x onerror=alert(1)\\>& | b |\n"
                  "|---|---|---|\n"
                  "| m\\_1 | 1.000 [0.900, 1.100] | 2.000 [1.900, 2.100] (1 err) |\n\n"
                  "Report: file:///tmp/a_b.html\n")
    html = fragment("summary_table", summary_view(data))
    assert evil not in html and "&lt;/script&gt;&lt;img" in html


def test_best_system_follows_the_declared_direction():
    specs = {"up": OutputSpec("up", higher_is_better=True), "down": OutputSpec("down", higher_is_better=False),
             "none": OutputSpec("none", higher_is_better=None)}
    aggs = [Aggregate(s, m, 3, 0, v, 0.1, v - 0.1, v + 0.1)
            for m, vals in (("up", (1.0, 2.0)), ("down", (1.0, 2.0)), ("none", (1.0, 2.0)))
            for s, v in zip(("A", "B"), vals)]
    data = ReportData(run={"run_id": "r"}, records=[], items={}, specs=specs, aggregates=aggs)
    assert {r.metric: [c and c.best for c in r.cells] for r in summary_view(data).rows} == {
        "up": [False, True, None], "down": [True, False, None], "none": [False, False, None]}
    html = fragment("summary_table", summary_view(data))
    best = {}
    for row in html.split("<tr>")[2:]:
        name = re.match(r"<th>(\w+)", row).group(1)
        cells = row.split("<td")[1:]  # A, B, ALL
        best[name] = [k for k, c in enumerate(cells) if "best" in c.split(">")[0]]
    assert best == {"up": [1], "down": [0], "none": []}
    assert '<span title="higher is better"> ↑</span>' in html and "none</th>" in html


class _Store:
    """The store methods gather() reads, over fixed records."""

    path = "/nowhere/s.duckdb"

    def __init__(self, records, items):
        self._records, self._items = records, items

    def run(self, run_id):
        return {"run_id": "r1", "name": None, "status": "finished", "started_at": None}

    def results(self, run_id):
        return self._records

    def items(self, run_id):
        return self._items


def test_transcripts_prefer_the_word_level_hypothesis(tmp_path):
    item = {"item_id": "u", "text": "One two, three!", "path": str(tmp_path / "u.wav"), "ref_path": None}
    recs = [
        {"item_id": "u", "system": "s", "metric": "cer", "value": 0.1, "status": "ok", "scorer": "cer",
         "extra": {"hypothesis": "one too three", "ref_norm": "o n e", "hyp_norm": "o n e", "unit": "char"}},
        {"item_id": "u", "system": "s", "metric": "wer", "value": 0.33, "status": "ok", "scorer": "wer",
         "extra": {"hypothesis": "one too three", "ref_norm": "one two three", "hyp_norm": "one too three",
                   "unit": "word"}},
    ]
    specs = {"cer": OutputSpec("cer", False), "wer": OutputSpec("wer", False)}
    data = gather(_Store(recs, [item]), baseline=None, output_specs=specs)
    t = data.transcripts["u"]
    assert (t.scorer, t.reference_normalised, t.hypothesis_normalised) == ("wer", "one two three", "one too three")
    html = fragment("transcript", transcript_view(t))
    assert '<span class="w-sub" title="substituted">two</span>' in html and "normalised by wer" in html
    assert "as written: “One two, three!”" in html
    assert list(data.worst) == ["cer", "wer"] and data.worst["wer"][0]["item_id"] == "u"
    # one side only: shown as it is, escaped
    only = fragment("transcript", transcript_view(Transcript(reference=None, hypothesis="<b>x")))
    assert only == '<div class="transcript"><div><span class="lbl">hyp</span>&lt;b&gt;x</div></div>'
    assert fragment("transcript", transcript_view(None)) == ""


def test_configuration_is_shown_flattened():
    run = {"run_id": "r", "params": '{"source": "s", "metrics": ["a", "b"], "suite": null, '
                                     '"params": {"pesq": {"mode": "wb"}}, "chunk_size": 16}'}
    meta = run_meta_view(ReportData(run=run, records=[], items={}, specs={}, aggregates=[]))
    assert meta.config == [("source", "s"), ("metrics", "a, b"), ("suite", "-"),
                           ("params.pesq.mode", "wb"), ("chunk_size", "16")]
    html = fragment("run_meta", meta)
    assert "configuration (5 settings)" in html and "<th class=\"mono\">params.pesq.mode</th>" in html


def test_audio_is_embedded_once_within_its_budget(tmp_path):
    from conftest import write_tone

    write_tone(tmp_path / "a.wav", seconds=0.5)
    write_tone(tmp_path / "b.wav", seconds=0.5, seed=1)
    size = (tmp_path / "a.wav").stat().st_size
    assets = Assets(audio_budget_bytes=int(size * 1.5))
    first = assets.audio("r", "a", "item", str(tmp_path / "a.wav"))
    again = assets.audio("r", "a2", "ref", str(tmp_path / "a.wav"))  # same file: stored once
    other = assets.audio("r", "b", "item", str(tmp_path / "b.wav"))
    assert first.clip == "a0" and again.clip == "a0" and again.label == "reference"
    assert other.clip is None and other.note == "not embedded (over the embedding budget)"
    assert fragment("player", first) == '<audio controls preload="none" title="audio" data-audio="a0"></audio>'
    (clip,) = assets.clips()
    assert clip.mime == "audio/wav" and clip.b64 == base64.b64encode((tmp_path / "a.wav").read_bytes()).decode()
    missing = assets.audio("r", "c", "item", str(tmp_path / "<c>.wav"))
    assert fragment("player", missing) == (
        f'<span class="muted small">audio file missing: {tmp_path}/&lt;c&gt;.wav</span>')
    assert assets.audio("r", "c", "item", None) is None
    # a file that is no longer the one the run scored (its stored sha256 differs), a FIFO
    import os

    big = Assets()
    changed = big.audio("r", "d", "item", str(tmp_path / "b.wav"), sha256="0" * 64)
    assert changed.clip is None and changed.note == "changed since the run scored it, not embedded"
    os.mkfifo(tmp_path / "f.wav")
    assert big.audio("r", "f", "item", str(tmp_path / "f.wav")).note == "not a regular file"
    same = big.audio("r", "b", "item", str(tmp_path / "b.wav"),
                     sha256=hashlib.sha256((tmp_path / "b.wav").read_bytes()).hexdigest())
    assert same.clip == "a0"
    doc = render_page("message.html.j2", title="t", assets=assets, status=200, text="x")
    assert doc.count('class="audio-data"') == 1 and clip.b64 in doc
    assert (TEMPLATES / "boot.js").read_text() in doc  # attaches the clip to its players
    linked = Assets(audio_url=lambda run, item, which: f"/audio?x={item}")
    assert fragment("player", linked.audio("r", "<i>", "item", "/x.wav")) == (
        '<audio controls preload="none" title="audio" src="/audio?x=&lt;i&gt;"></audio>')
