"""Speech sets: building from folders, references, transcripts, SHEET CSV and JSONL."""

from __future__ import annotations

import json

import pytest
from conftest import SAMPLES, write_tone

from speechqe import manifest
from speechqe.errors import ConfigError


def test_folder_systems_ids_and_sidecar_text(tmp_path):
    write_tone(tmp_path / "sysA" / "a1.wav", seed=1)
    write_tone(tmp_path / "sysA" / "sub" / "a2.flac", seed=2)
    write_tone(tmp_path / "sysB" / "a1.ogg", seed=3)
    (tmp_path / "sysB" / "a1.txt").write_text("  hello   world \n")
    write_tone(tmp_path / "loose.wav", seed=4)
    (tmp_path / "notes.md").write_text("not audio")
    s = manifest.from_folder(tmp_path, system="flat")
    assert [it.id for it in s] == ["loose", "sysA/a1", "sysA/sub/a2", "sysB/a1"]
    assert s["sysA/sub/a2"].system == "sysA"
    assert s["loose"].system == "flat"
    assert s["sysB/a1"].text == "hello world"
    it = s["sysA/a1"]
    assert (it.sample_rate, it.frames, it.channels) == (16000, 8000, 1)
    assert len(it.sha256) == 64 and it.ok


def test_same_stem_different_extension_keeps_both(tmp_path):
    write_tone(tmp_path / "x.wav", seed=1)
    write_tone(tmp_path / "x.flac", seed=2)
    s = manifest.from_folder(tmp_path)
    assert sorted(it.id for it in s) == ["x.flac", "x.wav"]


def test_unreadable_files_stay_in_the_set_with_a_reason(tmp_path):
    write_tone(tmp_path / "good.wav", seed=1)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio at all\n" * 20)
    s = manifest.from_folder(tmp_path)
    assert len(s) == 3
    assert s["empty"].error_type == "empty"
    assert s["text"].error_type == "unreadable" and "header" in s["text"].error
    assert s["good"].ok


def test_reference_matching_by_path_then_stem(tmp_path):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    write_tone(gen / "sysA" / "u1.wav", seed=1)
    write_tone(gen / "sysA" / "deep" / "u2.wav", seed=2)
    write_tone(gen / "sysB" / "u3.wav", seed=3)
    write_tone(gen / "sysB" / "u4.wav", seed=4)
    write_tone(ref / "sysA" / "u1.wav", seed=10)       # same relative path
    write_tone(ref / "deep" / "u2.flac", seed=11)      # path without the system folder
    write_tone(ref / "elsewhere" / "u3.wav", seed=12)  # unique stem
    s = manifest.from_folder(gen).with_references(ref)
    assert s["sysA/u1"].ref_path.endswith("ref/sysA/u1.wav")
    assert s["sysA/deep/u2"].ref_path.endswith("ref/deep/u2.flac")
    assert s["sysB/u3"].ref_path.endswith("ref/elsewhere/u3.wav")
    assert s["sysB/u4"].ref_path is None
    assert s["sysA/u1"].ref_sha256 == manifest.file_sha256(ref / "sysA" / "u1.wav")


def test_transcripts_tsv_with_header_and_matching(tmp_path):
    write_tone(tmp_path / "g" / "sysA" / "u1.wav", seed=1)
    write_tone(tmp_path / "g" / "sysB" / "u1.wav", seed=2)
    tsv = tmp_path / "t.tsv"
    tsv.write_text("id\ttext\nu1.wav\tThe  birch canoe.\n")
    s = manifest.from_folder(tmp_path / "g").with_transcripts(tsv)
    assert {it.text for it in s} == {"The birch canoe."}
    bad = tmp_path / "bad.tsv"
    bad.write_text("u0\tfirst line has a tab\nu1 no tab here\n")
    with pytest.raises(ConfigError, match="bad.tsv:2: expected 'id<TAB>text'"):
        manifest.read_transcripts(bad)
    dup = tmp_path / "dup.tsv"
    dup.write_text("a\tx\na\ty\n")
    with pytest.raises(ConfigError, match="twice"):
        manifest.read_transcripts(dup)


def test_sheet_csv_with_and_without_listener_rows(tmp_path):
    write_tone(tmp_path / "wav" / "s1.wav", seed=1)
    write_tone(tmp_path / "wav" / "s2.wav", seed=2)
    (tmp_path / "mos.csv").write_text(
        "wav_path,system_id,sample_id,avg_score\nwav/s1.wav,sysA,s1,3.5\nwav/s2.wav,sysB,s2,4.25\n"
    )
    s = manifest.from_sheet_csv(tmp_path / "mos.csv")
    assert s["s1"].system == "sysA" and s["s2"].mos == 4.25
    (tmp_path / "ratings.csv").write_text(
        "wav_path,system_id,sample_id,avg_score,listener_id,score\n"
        "wav/s1.wav,sysA,s1,,L1,3\nwav/s1.wav,sysA,s1,,L2,4\n"
    )
    r = manifest.from_sheet_csv(tmp_path / "ratings.csv")
    assert r["s1"].listener_scores == (("L1", 3.0), ("L2", 4.0))
    assert r["s1"].mos == 3.5
    (tmp_path / "bad.csv").write_text("path,score\nx.wav,3\n")
    with pytest.raises(ConfigError, match="SHEET CSV needs columns"):
        manifest.from_sheet_csv(tmp_path / "bad.csv")


def test_jsonl_roundtrip_and_relative_paths(tmp_path):
    write_tone(tmp_path / "a.wav", seed=1)
    write_tone(tmp_path / "r.wav", seed=2)
    src = tmp_path / "m.jsonl"
    src.write_text(
        json.dumps({"path": "a.wav", "system": "S", "reference": "r.wav", "text": "hi",
                    "mos": 3.0, "speaker": "spk1", "condition": "noisy"}) + "\n"
    )
    s = manifest.from_jsonl(src)
    it = s["a"]
    assert it.ref_path == str((tmp_path / "r.wav").resolve()) and it.ref_sha256
    assert it.speaker == "spk1" and it.get("condition") == "noisy" and it.frames == 8000
    out = tmp_path / "out" / "copy.jsonl"
    s.to_jsonl(out)
    again = manifest.from_jsonl(out)
    assert again.items == s.items
    assert again.content_hash() == s.content_hash()
    (tmp_path / "bad.jsonl").write_text('{"path": "a.wav", "bogus_field": 1, "id": "x"}\n{"id": 2}\n')
    with pytest.raises(ConfigError, match="needs a 'path'"):
        manifest.from_jsonl(tmp_path / "bad.jsonl")


def test_sets_are_immutable_and_ids_unique(tmp_path):
    s = manifest.from_folder(SAMPLES / "systems")
    with pytest.raises(Exception):
        s.items[0].id = "x"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="duplicate"):
        manifest.SpeechSet(s.items + s.items[:1])
    smaller = s.filter(lambda it: it.system == "sys_a")
    assert len(smaller) == 10 and len(s) == 30


def test_demo_samples_match_references_and_transcripts():
    s = manifest.load_speech_set(
        SAMPLES / "systems", ref_dir=SAMPLES / "reference", text_file=SAMPLES / "transcripts.tsv"
    )
    assert s.systems == ("sys_a", "sys_b", "sys_c")
    assert all(it.ref_path and it.text for it in s)
    info = manifest.summarise(s)
    assert info["items"] == 30 and info["with_reference"] == 30 and info["header_errors"] == 0


def test_load_speech_set_rejects_unknown_sources(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        manifest.load_speech_set(tmp_path / "nope")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ConfigError, match="cannot build a speech set"):
        manifest.load_speech_set(tmp_path / "x.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no audio files"):
        manifest.load_speech_set(tmp_path / "empty")
