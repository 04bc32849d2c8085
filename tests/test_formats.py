"""Users' data where it already is (issue 14): Kaldi/ESPnet data dirs and lists, lhotse
manifests, the audiofolder layout, one audio file; built in code from the shared real-speech
corpora and compared with what the folder reader gives for the same files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import corpus, write_tone

from speechqe import manifest
from speechqe.errors import ConfigError

pytestmark = pytest.mark.corpora


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _lj(n=6):
    root = corpus("ljspeech-32")
    wavs = sorted((root / "wavs").glob("*.wav"))[:n]
    texts = manifest.read_transcripts(root / "transcripts.tsv")
    return root, wavs, {w.stem: texts[w.stem] for w in wavs}


def _folder_with_text(tmp_path, wavs, texts):
    """The folder reader's view: a folder of links to the corpus files, with --text."""
    folder = tmp_path / "lj"
    folder.mkdir()
    for w in wavs:
        (folder / w.name).symlink_to(w)
    tsv = tmp_path / "t.tsv"
    tsv.write_text("".join(f"{k}\t{v}\n" for k, v in texts.items()), encoding="utf-8")
    return manifest.load_speech_set(folder, text_file=tsv)


def _view(sset):
    """What must agree between readers: content key, file, header, transcript, reference."""
    return {(it.sha256, it.path, it.sample_rate, it.frames, it.text, it.ref_sha256)
            for it in sset}


def _write(path: Path, text: str, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows, gz=False) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in rows), gz=gz)


# ------------------------------------------------------------------------------------------
# Kaldi / ESPnet
# ------------------------------------------------------------------------------------------
def test_kaldi_data_dir_equals_folder_reader(tmp_path, monkeypatch):
    root, wavs, texts = _lj()
    folder_set = _folder_with_text(tmp_path, wavs, texts)
    d = tmp_path / "data" / "test"
    # absolute paths, one relative to the current folder (Kaldi's convention), comments
    monkeypatch.chdir(root)
    lines = ["# written by a recipe\n"]
    for k, w in enumerate(wavs):
        value = f"wavs/{w.name}" if k == 0 else str(w)
        lines.append(f"{w.stem} {value}\n")
    _write(d / "wav.scp", "".join(lines))
    _write(d / "text", "".join(f"{k}  {v}\n" for k, v in texts.items()), gz=True)
    _write(d / "utt2spk", "".join(f"{k} LJ\n" for k in texts))
    s = manifest.load_speech_set(d)
    assert manifest.detect_format(d) == "kaldi"
    assert [it.id for it in s] == [w.stem for w in wavs]
    assert _view(s) == _view(folder_set)
    assert {it.system for it in s} == {"test"} and {it.speaker for it in s} == {"LJ"}


def test_kaldi_reference_list_and_versa_style_pred_gt(tmp_path):
    """VERSA's --pred/--gt: two wav.scp lists with the same keys."""
    root, wavs, _ = _lj(4)
    gen = tmp_path / "gen"
    for w in wavs:  # degraded copies as the system output
        x, sr = sf.read(w, dtype="float32")
        sf.write(_mk(gen / "sysA") / w.name,
                 x + 0.01 * np.random.default_rng(1).standard_normal(x.size).astype("float32"), sr)
    folder_set = manifest.load_speech_set(gen, ref_dir=root / "wavs")
    pred = _write(tmp_path / "pred.scp", "".join(f"{w.stem} {gen / 'sysA' / w.name}\n" for w in wavs))
    gt = _write(tmp_path / "gt" / "wav.scp", "".join(f"{w.stem} {w}\n" for w in wavs))
    s = manifest.load_speech_set(pred, ref_dir=gt)
    assert _view(s) == _view(folder_set)
    assert all(it.ref_path for it in s)
    # the data dir form of the reference
    assert _view(manifest.load_speech_set(pred, ref_dir=gt.parent)) == _view(folder_set)


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def test_kaldi_malformed_lines_name_file_and_line(tmp_path):
    d = tmp_path / "d"
    _write(d / "wav.scp", "# c\nu1 /x/u1.wav\nu2\n")
    with pytest.raises(ConfigError, match=r"wav\.scp:3: expected '<id> <value>'"):
        manifest.load_speech_set(d)
    _write(d / "wav.scp", "u1 /x/u1.wav\nu1 /x/u2.wav\n")
    with pytest.raises(ConfigError, match=r"wav\.scp:2: id 'u1' appears twice \(first on line 1\)"):
        manifest.load_speech_set(d)
    _write(d / "wav.scp", "u1 raw_1.ark:1234\n")
    with pytest.raises(ConfigError, match=r"wav\.scp:1: .*Kaldi archive"):
        manifest.load_speech_set(d)
    _write(d / "wav.scp", "r1 /x/r1.wav\n")
    _write(d / "segments", "u1 r1 0.0 1.0\nu2 r9 0.0 1.0\n")
    with pytest.raises(ConfigError, match=r"segments:2: recording 'r9' is not in"):
        manifest.load_speech_set(d)
    _write(d / "segments", "u1 r1 zero 1.0\n")
    with pytest.raises(ConfigError, match=r"segments:1: start and end are seconds"):
        manifest.load_speech_set(d)


def test_kaldi_missing_file_is_an_item_error_not_a_stop(tmp_path):
    write_tone(tmp_path / "a.wav", seed=1)
    scp = _write(tmp_path / "wav.scp", f"a {tmp_path / 'a.wav'}\nb {tmp_path / 'gone.wav'}\n")
    s = manifest.load_speech_set(scp)
    assert s["a"].ok and s["b"].error_type == "unreadable" and "no such file" in s["b"].error


def test_pipes_are_refused_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHQE_CACHE", str(tmp_path / "cache"))
    root, wavs, _ = _lj(2)
    scp = _write(tmp_path / "d" / "wav.scp",
                 f"{wavs[0].stem} cat {wavs[0]} |\n{wavs[1].stem} {wavs[1]}\nbad false |\n")
    with pytest.raises(ConfigError, match=r"wav\.scp:1: .*pipe command.*--allow-pipes"):
        manifest.load_speech_set(scp)
    s = manifest.load_speech_set(scp, allow_pipes=True)
    # cat writes the file's bytes: the same content key as reading the file itself
    assert s[wavs[0].stem].sha256 == manifest.file_sha256(wavs[0])
    assert s[wavs[0].stem].get("command").startswith("cat ")
    assert Path(s[wavs[0].stem].path).parent == tmp_path / "cache" / "pipes"
    assert s["bad"].error_type == "unreadable" and "exited with status 1" in s["bad"].error
    x = s[wavs[0].stem].load().samples
    np.testing.assert_array_equal(x, sf.read(wavs[0], dtype="float32")[0])


def test_kaldi_segments_read_parts_of_a_long_recording(tmp_path):
    long_wav, clips = _long_recording(tmp_path)
    d = tmp_path / "d"
    _write(d / "wav.scp", f"rec {long_wav}\n")
    _write(d / "segments", "".join(f"c{k} rec {a:.6f} {b:.6f}\n" for k, (a, b, _) in enumerate(clips))
           + "tail rec 1.0 -1\n")
    s = manifest.load_speech_set(d)
    for k, (a, b, x) in enumerate(clips):
        it = s[f"c{k}"]
        np.testing.assert_array_equal(it.load().samples, x)
        assert it.segment == pytest.approx((a, b - a), abs=1 / 16000)
    assert len({it.sha256 for it in s}) == len(s)  # never one key for two parts
    total = sf.info(long_wav).frames
    assert s["tail"].frames == total - 16000


# ------------------------------------------------------------------------------------------
# lhotse
# ------------------------------------------------------------------------------------------
def _recording(rid, path, info, channels=(0,)):
    return {"id": rid, "sources": [{"type": "file", "channels": list(channels), "source": str(path)}],
            "sampling_rate": info.samplerate, "num_samples": info.frames,
            "duration": info.frames / info.samplerate, "channel_ids": list(channels)}


def test_lhotse_recordings_and_supervisions_equal_folder_reader(tmp_path):
    root, wavs, texts = _lj()
    folder_set = _folder_with_text(tmp_path, wavs, texts)
    recs = [_recording(w.stem, w, sf.info(w)) for w in wavs]
    sups = [{"id": w.stem, "recording_id": w.stem, "start": 0.0, "duration": r["duration"],
             "channel": 0, "text": texts[w.stem], "speaker": "LJ", "language": "English"}
            for w, r in zip(wavs, recs)]
    rp = _jsonl(tmp_path / "m" / "lj_recordings_test.jsonl.gz", recs, gz=True)
    _jsonl(tmp_path / "m" / "lj_supervisions_test.jsonl.gz", sups, gz=True)
    for given in (rp, tmp_path / "m" / "lj_supervisions_test.jsonl.gz"):
        s = manifest.load_speech_set(given)
        assert manifest.detect_format(given) == "lhotse"
        assert _view(s) == _view(folder_set)
        assert s.name == "lj_test" and {it.speaker for it in s} == {"LJ"}
        assert s[wavs[0].stem].get("language") == "English"
    # recordings alone: the same files, no text
    (tmp_path / "m" / "lj_supervisions_test.jsonl.gz").unlink()
    alone = manifest.load_speech_set(rp)
    assert {it.sha256 for it in alone} == {it.sha256 for it in folder_set}
    assert not alone.has_text


def _long_recording(tmp_path):
    """Three real clips back to back in one 16 kHz PCM file: (path, [(start, end, samples)])."""
    clips, pos, parts = [], 0, []
    for w in sorted(corpus("librivox-5").glob("*.wav"))[:3]:
        x, sr = sf.read(w, dtype="int16")
        assert sr == 16000
        x = x[: 3 * sr]
        parts.append(x)
        clips.append((pos / sr, (pos + x.size) / sr, (x.astype(np.float32) / 32768.0)))
        pos += x.size
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, np.concatenate(parts), 16000, subtype="PCM_16")
    return long_wav, clips


def test_lhotse_cuts_into_a_long_recording(tmp_path, toy_metrics):
    long_wav, clips = _long_recording(tmp_path)
    info = sf.info(long_wav)
    rec = _recording("long", "long.wav", info)  # relative to the manifest's folder
    cuts = [{"id": f"cut{k}", "start": a, "duration": b - a, "channel": 0, "type": "MonoCut",
             "supervisions": [{"id": f"s{k}", "recording_id": "long", "start": 0.0,
                               "duration": b - a, "channel": 0, "text": f"clip {k}",
                               "speaker": "S"}],
             "recording": rec}
            for k, (a, b, _) in enumerate(clips)]
    path = _jsonl(tmp_path / "cuts.jsonl", cuts)
    s = manifest.load_speech_set(path)
    assert [it.text for it in s] == ["clip 0", "clip 1", "clip 2"]
    for k, (a, b, x) in enumerate(clips):
        it = s[f"cut{k}"]
        assert it.frames == x.size and it.duration == pytest.approx(b - a)
        np.testing.assert_array_equal(it.load().samples, x)
    assert len({it.sha256 for it in s}) == 3

    # scored through the runner: the same values as the clips saved as their own files
    from speechqe.engine import runner
    from speechqe.store import Store

    own = tmp_path / "own"
    for k, (_, _, x) in enumerate(clips):
        sf.write(_mk(own) / f"cut{k}.wav", (x * 32768).astype(np.int16), 16000, subtype="PCM_16")
    with Store(tmp_path / "a.duckdb") as st:
        ra = runner.score(s, [toy_metrics.create("toy_level")], st)
        va = {r["item_id"]: r["value"] for r in st.results(ra.run_id)}
    with Store(tmp_path / "b.duckdb") as st:
        rb = runner.score(manifest.from_folder(own), [toy_metrics.create("toy_level")], st)
        vb = {r["item_id"]: r["value"] for r in st.results(rb.run_id)}
    assert va == vb and len(va) == 3


def test_lhotse_channel_selection(tmp_path):
    a = write_tone(tmp_path / "a.wav", seed=1)
    b = write_tone(tmp_path / "b.wav", seed=2, freq=440.0)
    sf.write(tmp_path / "st.wav", np.stack([a, b], axis=1), 16000, subtype="FLOAT")
    rec = _recording("st", tmp_path / "st.wav", sf.info(tmp_path / "st.wav"), channels=(0, 1))
    cuts = [{"id": f"ch{c}", "start": 0.0, "duration": 0.5, "channel": c, "type": "MonoCut",
             "supervisions": [], "recording": rec} for c in (0, 1)]
    s = manifest.load_speech_set(_jsonl(tmp_path / "c.jsonl", cuts))
    np.testing.assert_array_equal(s["ch0"].load().samples, a)
    np.testing.assert_array_equal(s["ch1"].load().samples, b)
    assert s["ch0"].sha256 != s["ch1"].sha256


def test_lhotse_malformed_and_unsupported_lines(tmp_path):
    write_tone(tmp_path / "a.wav", seed=1)
    rec = _recording("a", tmp_path / "a.wav", sf.info(tmp_path / "a.wav"))
    p = tmp_path / "x_recordings.jsonl"
    _write(p, json.dumps(rec) + "\n{not json\n")
    with pytest.raises(ConfigError, match=r"x_recordings\.jsonl:2: not JSON"):
        manifest.load_speech_set(p)
    _write(p, json.dumps({**rec, "transforms": [{"name": "Speed", "kwargs": {"factor": 1.1}}]}) + "\n")
    with pytest.raises(ConfigError, match=r"x_recordings\.jsonl:1: .*transforms \['Speed'\]"):
        manifest.load_speech_set(p)
    _write(p, json.dumps({**rec, "sources": [{"type": "url", "channels": [0], "source": "s3://b/a.wav"}]}) + "\n")
    with pytest.raises(ConfigError, match=r"x_recordings\.jsonl:1: .*'url' source"):
        manifest.load_speech_set(p)
    mixed = tmp_path / "m_cuts.jsonl"
    _write(mixed, json.dumps({"id": "m", "type": "MixedCut", "tracks": []}) + "\n")
    with pytest.raises(ConfigError, match=r"m_cuts\.jsonl:1: MixedCut cuts"):
        manifest.load_speech_set(mixed)
    sup = tmp_path / "y_supervisions.jsonl"
    _write(sup, json.dumps({"id": "s", "recording_id": "a", "start": 0, "duration": 1}) + "\n")
    with pytest.raises(ConfigError, match="recordings manifest .* is not beside it"):
        manifest.load_speech_set(sup)


def test_lhotse_segment_past_the_end_is_an_item_error(tmp_path):
    write_tone(tmp_path / "a.wav", seed=1)  # 0.5 s
    rec = _recording("a", tmp_path / "a.wav", sf.info(tmp_path / "a.wav"))
    cuts = [{"id": "ok", "start": 0.1, "duration": 0.41, "channel": 0, "type": "MonoCut",
             "recording": rec},  # 10 ms past the end: within lhotse's tolerance, clipped
            {"id": "late", "start": 0.3, "duration": 1.0, "channel": 0, "type": "MonoCut",
             "recording": rec}]
    s = manifest.load_speech_set(_jsonl(tmp_path / "c.jsonl", cuts))
    assert s["ok"].ok and s["ok"].frames == 8000 - 1600
    assert s["late"].error_type == "unreadable" and "runs past the end" in s["late"].error


# ------------------------------------------------------------------------------------------
# audiofolder
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_audiofolder_equals_folder_reader(tmp_path, kind):
    root, wavs, texts = _lj()
    folder_set = _folder_with_text(tmp_path, wavs, texts)
    af = tmp_path / "lj"  # the same folder, plus a metadata file
    if kind == "csv":
        import csv as _csv

        with open(af / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            w = _csv.writer(f)
            w.writerow(["file_name", "transcription", "speaker_id", "split"])
            for p in wavs:
                w.writerow([p.name, texts[p.stem], "LJ", "test"])
    else:
        _jsonl(af / "metadata.jsonl", [{"file_name": p.name, "text": texts[p.stem]} for p in wavs])
    assert manifest.detect_format(af) == "audiofolder"
    s = manifest.load_speech_set(af)
    assert [it.id for it in s] == [it.id for it in folder_set]
    assert {(it.id, it.system) for it in s} == {(it.id, it.system) for it in folder_set}
    assert _view(s) == _view(folder_set)
    if kind == "csv":
        assert {it.speaker for it in s} == {"LJ"} and s[wavs[0].stem].get("split") == "test"


def test_audiofolder_bad_rows(tmp_path):
    write_tone(tmp_path / "a.wav", seed=1)
    (tmp_path / "metadata.csv").write_text("file_name,text\na.wav,hi\n,empty\n")
    with pytest.raises(ConfigError, match=r"metadata\.csv:3: a row needs a 'file_name'"):
        manifest.load_speech_set(tmp_path)
    (tmp_path / "metadata.csv").write_text("file_name,text\na.wav,hi\na.wav,again\n")
    with pytest.raises(ConfigError, match=r"metadata\.csv:3: 'a.wav' is listed twice"):
        manifest.load_speech_set(tmp_path)


# ------------------------------------------------------------------------------------------
# detection, one file, encodings, scanning, zero matches
# ------------------------------------------------------------------------------------------
def test_ambiguous_folder_needs_format(tmp_path):
    write_tone(tmp_path / "a.wav", seed=1)
    (tmp_path / "wav.scp").write_text(f"a {tmp_path / 'a.wav'}\n")
    (tmp_path / "metadata.csv").write_text("file_name\na.wav\n")
    with pytest.raises(ConfigError, match="--format kaldi or --format audiofolder"):
        manifest.load_speech_set(tmp_path)
    assert manifest.load_speech_set(tmp_path, format="kaldi")["a"].ok
    assert manifest.load_speech_set(tmp_path, format="folder")["a"].ok
    with pytest.raises(ConfigError, match="unknown --format"):
        manifest.load_speech_set(tmp_path, format="lhotsee")


def test_one_audio_file_with_one_reference(tmp_path):
    write_tone(tmp_path / "out" / "x.wav", seed=1)
    write_tone(tmp_path / "ref.wav", seed=2)
    (tmp_path / "out" / "x.txt").write_text("hello there")
    s = manifest.load_speech_set(tmp_path / "out" / "x.wav", ref_dir=tmp_path / "ref.wav")
    assert len(s) == 1 and s["x"].system == "out" and s["x"].text == "hello there"
    assert s["x"].ref_path == str((tmp_path / "ref.wav").resolve())
    write_tone(tmp_path / "out" / "y.wav", seed=3)
    with pytest.raises(ConfigError, match="one audio file; it can be the reference of a single"):
        manifest.load_speech_set(tmp_path / "out", ref_dir=tmp_path / "ref.wav")


def test_latin1_transcripts_name_file_line_and_the_option(tmp_path):
    write_tone(tmp_path / "g" / "u1.wav", seed=1)
    write_tone(tmp_path / "g" / "u2.wav", seed=2)
    t = tmp_path / "t.tsv"
    t.write_bytes("u1\tfine\nu2\tcaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(ConfigError) as e:
        manifest.load_speech_set(tmp_path / "g", text_file=t)
    msg = str(e.value)
    assert "t.tsv:2:" in msg and "0xe9" in msg and "--text-encoding" in msg
    s = manifest.load_speech_set(tmp_path / "g", text_file=t, text_encoding="latin-1")
    assert s["u2"].text == "café au lait"
    # sidecars and Kaldi lists go through the same reader
    (tmp_path / "g" / "u1.txt").write_bytes("na\xefve\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"u1\.txt:1: byte 0xef"):
        manifest.load_speech_set(tmp_path / "g")
    assert manifest.load_speech_set(tmp_path / "g", text_encoding="latin-1")["u1"].text == "naïve"
    u16 = tmp_path / "u16.tsv"
    u16.write_bytes("u1\tone\nu2\tcafé\n".encode("utf-16"))
    assert manifest.read_transcripts(u16, "utf-16") == {"u1": "one", "u2": "café"}
    with pytest.raises(ConfigError, match="unknown text encoding"):
        manifest.load_speech_set(tmp_path / "g", text_encoding="klingon")


def test_scanner_reports_every_entry_and_follows_folder_links(tmp_path):
    g = tmp_path / "g"
    write_tone(g / "sysA" / "good.wav", seed=1)
    (g / "sysA" / "loop.wav").symlink_to("loop.wav")
    (g / "sysA" / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    (g / "sysA" / "x.wav").mkdir()
    elsewhere = tmp_path / "elsewhere" / "sysB"
    write_tone(elsewhere / "u1.wav", seed=2)
    (g / "sysB").symlink_to(elsewhere)       # a system folder linked from elsewhere
    (elsewhere / "up").symlink_to(g)         # a loop back to the top: walked once
    s = manifest.from_folder(g)
    errors = {it.id: it.error for it in s if not it.ok}
    assert errors == {"sysA/loop": "symbolic link loop",
                      "sysA/dangling": f"broken symbolic link (to {tmp_path / 'nowhere.wav'})",
                      "sysA/x": "is a folder, not an audio file"}
    assert s["sysB/u1"].ok and s["sysB/u1"].system == "sysB"
    assert len(s) == 5


def test_zero_matches_say_so_with_ids_from_both_sides(tmp_path):
    write_tone(tmp_path / "g" / "sysA" / "u1.wav", seed=1)
    (tmp_path / "t.tsv").write_text("LJ001-0001\thello\n")
    with pytest.raises(ConfigError) as e:
        manifest.load_speech_set(tmp_path / "g", text_file=tmp_path / "t.tsv")
    assert "matched 0 of 1 items" in str(e.value)
    assert "'sysA/u1'" in str(e.value) and "'LJ001-0001'" in str(e.value)
    write_tone(tmp_path / "r" / "other.wav", seed=2)
    with pytest.raises(ConfigError, match=r"--ref .* matched 0 of 1 items: an item id is 'sysA/u1', an id there is 'other'"):
        manifest.load_speech_set(tmp_path / "g", ref_dir=tmp_path / "r")
    (tmp_path / "r.scp").write_text(f"zz {tmp_path / 'r' / 'other.wav'}\n")
    with pytest.raises(ConfigError, match=r"matched 0 of 1 items: .*'zz'"):
        manifest.load_speech_set(tmp_path / "g", ref_dir=tmp_path / "r.scp")


def test_kaldi_text_accepted_by_text_option_and_comments(tmp_path):
    write_tone(tmp_path / "g" / "u1.wav", seed=1)
    write_tone(tmp_path / "g" / "u2.wav", seed=2)
    (tmp_path / "text").write_text("# kaldi text\nu1 HELLO  WORLD\nu2\n")
    s = manifest.load_speech_set(tmp_path / "g", text_file=tmp_path / "text")
    assert s["u1"].text == "HELLO WORLD" and s["u2"].text == ""


def test_jsonl_segments_roundtrip(tmp_path):
    long_wav, clips = _long_recording(tmp_path)
    a, b, x = clips[1]
    src = _jsonl(tmp_path / "m.jsonl", [{"id": "c1", "path": "long.wav", "offset": a,
                                          "duration": b - a}])
    s = manifest.load_speech_set(src)
    np.testing.assert_array_equal(s["c1"].load().samples, x)
    s.to_jsonl(tmp_path / "copy.jsonl")
    again = manifest.from_jsonl(tmp_path / "copy.jsonl")
    assert again.items == s.items
