"""Report pieces: word differences, escaping of data in every context, transcript choice,
directions from metadata, the audio budget."""

from __future__ import annotations

import base64
import json
import re

from speechqe.engine.aggregate import Aggregate
from speechqe.metric import OutputSpec
from speechqe.engine.report.data import ReportData, gather
from speechqe.engine.report.render import (
    Assets,
    json_for_script,
    markdown_summary,
    plotly_text,
    summary_table,
    transcript_html,
)
from speechqe.engine.report.worddiff import align_words, diff_html, display_normalise


def test_word_diff_marks_edits_and_escapes():
    ref, hyp, counts = diff_html("the cat sat on the mat", "the bat sat on mat")
    assert counts == {"substitutions": 1, "deletions": 1, "insertions": 0, "ref_words": 6}
    assert ref == ('the <span class="w-sub" title="substituted">cat</span> sat on '
                   '<del class="w-del" title="deleted by the ASR">the</del> mat')
    _, hyp, counts = diff_html("the cat sat on the mat", "the bat sat on mat <now>")
    assert counts["substitutions"] == 3 and "&lt;now&gt;" in hyp and "<now>" not in hyp
    kinds = [op.kind for op in align_words("a b c d", "a c d e")]
    assert kinds == ["equal", "delete", "equal", "insert"]
    assert align_words("", "x")[0].kind == "insert" and align_words("x", "")[0].kind == "delete"
    assert display_normalise("Hello, World!  It's") == "hello world it's"


def test_escaping_in_every_context():
    evil = '</script><img src=x onerror=alert(1)>&'
    js = json_for_script({"name": evil})
    assert "<" not in js and ">" not in js and "&" not in js and json.loads(js) == {"name": evil}
    assert plotly_text(evil) == "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;"
    data = ReportData(run={"run_id": "r", "name": "*bold* | x"}, records=[], items={},
                      specs={}, aggregates=[Aggregate(evil, "m_1", 2, 0, 1.0, 0.1, 0.9, 1.1)])
    md = markdown_summary(data)
    assert "\\*bold\\* \\| x" in md and "\\<" in md and "m\\_1" in md
    html = summary_table(data)
    assert evil not in html and "&lt;/script&gt;&lt;img" in html


def test_best_system_follows_the_declared_direction():
    specs = {"up": OutputSpec("up", higher_is_better=True), "down": OutputSpec("down", higher_is_better=False),
             "none": OutputSpec("none", higher_is_better=None)}
    aggs = [Aggregate(s, m, 3, 0, v, 0.1, v - 0.1, v + 0.1)
            for m, vals in (("up", (1.0, 2.0)), ("down", (1.0, 2.0)), ("none", (1.0, 2.0)))
            for s, v in zip(("A", "B"), vals)]
    html = summary_table(ReportData(run={"run_id": "r"}, records=[], items={}, specs=specs, aggregates=aggs))
    best = {}
    for row in html.split("<tr>")[2:]:
        name = re.match(r"<th>(\w+)", row).group(1)
        cells = row.split("<td")[1:]  # A, B, ALL
        best[name] = [k for k, c in enumerate(cells) if "best" in c.split(">")[0]]
    assert best == {"up": [1], "down": [0], "none": []}


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
    html = transcript_html(t)
    assert '<span class="w-sub" title="substituted">two</span>' in html and "normalised by wer" in html
    assert list(data.worst) == ["cer", "wer"] and data.worst["wer"][0]["item_id"] == "u"


def test_audio_is_embedded_once_within_its_budget(tmp_path):
    from conftest import write_tone

    write_tone(tmp_path / "a.wav", seconds=0.5)
    write_tone(tmp_path / "b.wav", seconds=0.5, seed=1)
    size = (tmp_path / "a.wav").stat().st_size
    assets = Assets(audio_budget_bytes=int(size * 1.5))
    first = assets.audio("r", "a", "item", str(tmp_path / "a.wav"))
    again = assets.audio("r", "a2", "ref", str(tmp_path / "a.wav"))  # same file: stored once
    other = assets.audio("r", "b", "item", str(tmp_path / "b.wav"))
    assert 'data-audio="a0"' in first and 'data-audio="a0"' in again
    assert "not embedded (over the embedding budget)" in other
    blocks = assets.embedded_audio()
    assert blocks.count('class="audio-data"') == 1 and 'data-mime="audio/wav"' in blocks
    assert base64.b64encode((tmp_path / "a.wav").read_bytes()).decode() in blocks
    assert "file missing" in assets.audio("r", "c", "item", str(tmp_path / "c.wav"))
    linked = Assets(audio_url=lambda run, item, which: f"/audio?x={item}")
    assert 'src="/audio?x=&lt;i&gt;"' in linked.audio("r", "<i>", "item", "/x.wav")
