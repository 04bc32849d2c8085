"""``speechqe score <folder> --text FILE --metrics wer,cer,speaker_sim --ref DIR`` end to end,
on real speech: WER appears as corpus WER, every record is stored, ASR ran once per item."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest
from conftest import corpus
from typer.testing import CliRunner

from speechqe.cli.main import app

pytestmark = pytest.mark.corpora


def test_score_wer_cer_speaker_sim_from_the_cli(tmp_path):
    lj = corpus("ljspeech-32")
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    ref.mkdir()
    ids = ["LJ001-0001", "LJ001-0002", "LJ001-0003"]
    for k, i in enumerate(ids):
        shutil.copy(lj / "wavs" / f"{i}.wav", gen / f"{i}.wav")
        # the reference of each item: another utterance of the same speaker
        shutil.copy(lj / "wavs" / f"LJ001-00{10 + k}.wav", ref / f"{i}.wav")
    text = tmp_path / "text.tsv"
    text.write_text("".join(line for line in open(lj / "transcripts.tsv", encoding="utf-8")
                            if line.split("\t")[0] in ids), encoding="utf-8")
    db, out = tmp_path / "s.duckdb", tmp_path / "r.jsonl"
    res = CliRunner().invoke(app, [
        "score", str(gen), "--text", str(text), "--metrics", "wer,cer,speaker_sim",
        "--ref", str(ref), "--db", str(db), "--out", str(out), "--progress", "none",
    ])
    assert res.exit_code == 0, res.output
    assert "wer ↓ (corpus)" in res.output and "wer_utt_mean" in res.output
    assert "cer ↓ (corpus)" in res.output and "speaker_sim ↑" in res.output
    assert "0 errors" in res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    by = {}
    for r in rows:
        by.setdefault(r["metric"], []).append(r)
    assert {m: len(v) for m, v in by.items()} == {
        "wer": 3, "wer_utt_mean": 3, "cer": 3, "cer_utt_mean": 3, "speaker_sim": 3}
    extras = [json.loads(r["extra"]) if isinstance(r["extra"], str) else r["extra"]
              for r in by["wer"]]
    for r, extra in zip(by["wer"], extras):
        assert r["status"] == "ok" and extra["hypothesis"] and "substitutions" in extra
    # same speaker (LJSpeech): measured 0.824-0.950 with Resemblyzer; different LibriSpeech
    # speakers average 0.525 (tests/speaker), so 0.75 separates the two with margin
    assert all(r["value"] > 0.75 for r in by["speaker_sim"])
    assert sum(e["errors"] for e in extras) / sum(e["ref_words"] for e in extras) <= 0.10
    # a rerun reuses every stored record (the ASR model id is stable)
    again = CliRunner().invoke(app, [
        "score", str(gen), "--text", str(text), "--metrics", "wer,cer,speaker_sim",
        "--ref", str(ref), "--db", str(db), "--progress", "none",
    ])
    assert again.exit_code == 0 and "3 items reused" in again.output
    with duckdb.connect(str(db), read_only=True) as con:
        (n,) = con.execute("SELECT count(*) FROM scores").fetchone()
    assert n == 15
