"""Readers for the VoiceMOS 2022 / BVCC layout (with per-listener ratings) and NISQA CSVs,
on small folders written in the real formats."""

from __future__ import annotations

import pytest

from conftest import write_tone
from speechqe.errors import ConfigError
from speechqe.predictors.data import (
    DataSpec, group_of, load_data, read_bvcc, read_bvcc_system_mos, read_nisqa,
)


def _bvcc(root):
    data = root / "phase1-main" / "DATA"
    for utt in ("sys64e2f-utt491a78f", "sys64e2f-uttab12cd3", "sys7ab3c-utt491a78f"):
        write_tone(data / "wav" / f"{utt}.wav", seconds=0.2, seed=hash(utt) % 100)
    (data / "sets").mkdir(parents=True)
    info = "{}_{}_{}_Female_na_na_No"
    lines = [
        f"sys64e2f,sys64e2f-utt491a78f.wav,3,,{info.format('', '18-29', 'ZQ3K2L')}",
        f"sys64e2f,sys64e2f-utt491a78f.wav,4,,{info.format('', '30-39', 'P9X1W0')}",
        f"sys64e2f,sys64e2f-uttab12cd3.wav,5,,{info.format('', '18-29', 'ZQ3K2L')}",
        f"sys7ab3c,sys7ab3c-utt491a78f.wav,2,,{info.format('', '30-39', 'P9X1W0')}",
        f"sys7ab3c,sys7ab3c-utt491a78f.wav,1,,{info.format('', '18-29', 'ZQ3K2L')}",
    ]
    (data / "sets" / "TRAINSET").write_text("\n".join(lines) + "\n")
    (data / "sets" / "train_mos_list.txt").write_text(
        "sys64e2f-utt491a78f.wav,3.5\nsys64e2f-uttab12cd3.wav,5.0\nsys7ab3c-utt491a78f.wav,1.5\n")
    (data / "mydata_system.csv").write_text("system_ID,mean\nsys64e2f,3.9\nsys7ab3c,1.8\n")
    return root / "phase1-main"


def test_bvcc_split_with_listener_ratings(tmp_path):
    track = _bvcc(tmp_path)
    sset = read_bvcc(track, "train")
    assert len(sset) == 3
    it = sset["sys64e2f-utt491a78f"]
    assert it.system == "sys64e2f" and it.mos == 3.5 and it.ok
    assert sorted(it.listener_scores) == [("P9X1W0", 4.0), ("ZQ3K2L", 3.0)]
    assert it.get("domain") == "phase1-main"
    assert read_bvcc_system_mos(track) == {"sys64e2f": 3.9, "sys7ab3c": 1.8}
    assert group_of(it, "system") == "sys64e2f"
    same = load_data(DataSpec(format="bvcc", path="phase1-main", split="train"), base=tmp_path)
    assert same.content_hash() == sset.content_hash()
    with pytest.raises(ConfigError, match="split"):
        read_bvcc(track, "valid")
    with pytest.raises(ConfigError, match="no BVCC dev labels"):
        read_bvcc(track, "dev")


def test_nisqa_csv(tmp_path):
    write_tone(tmp_path / "NISQA_TRAIN_SIM" / "deg" / "c00001_a.wav", seconds=0.2, seed=1)
    write_tone(tmp_path / "NISQA_TRAIN_SIM" / "deg" / "c00002_b.wav", seconds=0.2, seed=2)
    write_tone(tmp_path / "NISQA_TRAIN_SIM" / "ref" / "a.wav", seconds=0.2, seed=3)
    write_tone(tmp_path / "NISQA_VAL_SIM" / "deg" / "c00003_c.wav", seconds=0.2, seed=4)
    (tmp_path / "NISQA_corpus_file.csv").write_text(
        "db,con,file,con_description,filename_deg,filename_ref,source,lang,votes,mos,noi,col,dis,loud,"
        "noi_std,col_std,dis_std,loud_std,mos_std,filepath_deg,filepath_ref\n"
        "NISQA_TRAIN_SIM,1,1,x,c00001_a.wav,a.wav,s,en,5,3.4,3.1,4.0,4.2,3.9,1,1,1,1,0.8,"
        "NISQA_TRAIN_SIM/deg/c00001_a.wav,NISQA_TRAIN_SIM/ref/a.wav\n"
        "NISQA_TRAIN_SIM,2,2,x,c00002_b.wav,b.wav,s,en,5,2.0,2.1,3.0,3.2,2.9,1,1,1,1,0.9,"
        "NISQA_TRAIN_SIM/deg/c00002_b.wav,\n"
        "NISQA_VAL_SIM,1,3,x,c00003_c.wav,c.wav,s,en,5,4.1,4.0,4.0,4.2,3.9,1,1,1,1,0.7,"
        "NISQA_VAL_SIM/deg/c00003_c.wav,\n")
    sset = read_nisqa(tmp_path / "NISQA_corpus_file.csv", db="NISQA_TRAIN_SIM")
    assert len(sset) == 2
    a = sset["NISQA_TRAIN_SIM/deg/c00001_a"]
    assert a.mos == 3.4 and a.system == "NISQA_TRAIN_SIM/1" and a.ref_path and a.get("noi") == "3.1"
    assert a.get("domain") == "NISQA_TRAIN_SIM"
    assert len(read_nisqa(tmp_path / "NISQA_corpus_file.csv")) == 3
    with pytest.raises(ConfigError, match="no rows"):
        read_nisqa(tmp_path / "NISQA_corpus_file.csv", db="NISQA_TEST_FOR")


def test_sheet_csv_with_per_rating_rows(tmp_path):
    write_tone(tmp_path / "a.wav", seconds=0.2)
    (tmp_path / "train.csv").write_text(
        "wav_path,system_id,sample_id,avg_score,listener_id,score\n"
        "a.wav,S1,s1,,L1,4\na.wav,S1,s1,,L2,2\n")
    sset = load_data(DataSpec(format="sheet", path=str(tmp_path / "train.csv"), domain="mytest"))
    it = sset["s1"]
    assert it.mos == 3.0 and dict(it.listener_scores) == {"L1": 4.0, "L2": 2.0}
    assert it.get("domain") == "mytest"
    from speechqe.config import validate

    with pytest.raises(ConfigError, match="format: Input should be"):
        validate(DataSpec, {"format": "xlsx", "path": "x"}, "cfg")


def test_sheet_speaker_and_text_columns_group_the_folds(tmp_path):
    """Issue 16: the ``speaker`` column of a SHEET CSV fills ``item.speaker`` (it used to land
    in ``extra``, so ``group_by: speaker`` silently made every item its own group)."""
    write_tone(tmp_path / "a.wav", seconds=0.2)
    (tmp_path / "t.csv").write_text(
        "wav_path,system_id,sample_id,avg_score,speaker,text\n"
        "a.wav,A,a1,3,spk1,hello world\na.wav,B,b1,4,spk1,hello world\na.wav,A,a2,2,spk2,good night\n")
    sset = load_data(DataSpec(format="sheet", path=str(tmp_path / "t.csv")))
    assert [it.speaker for it in sset] == ["spk1", "spk1", "spk2"]
    from speechqe.predictors.data import groups_of

    assert groups_of(list(sset), "speaker") == ["spk1", "spk1", "spk2"]
    assert groups_of(list(sset), "text") == ["hello world", "hello world", "good night"]


def test_an_item_without_its_group_is_an_error_naming_how_many(tmp_path):
    from speechqe.predictors.data import groups_of

    write_tone(tmp_path / "a.wav", seconds=0.2)
    (tmp_path / "t.csv").write_text(
        "wav_path,system_id,sample_id,avg_score,speaker,sentence\n"
        "a.wav,A,a1,3,spk1,s1\na.wav,B,b1,4,,s1\na.wav,A,a2,2,,\n")
    items = list(load_data(DataSpec(format="sheet", path=str(tmp_path / "t.csv"))))
    with pytest.raises(ConfigError, match=r"group_by 'speaker': 2 of 3 items have no speaker \(e\.g\. b1, a2\)"):
        groups_of(items, "speaker")
    with pytest.raises(ConfigError, match="1 of 3 items have no sentence"):
        groups_of(items, "sentence")
    with pytest.raises(ConfigError, match="3 of 3 items have no text"):
        groups_of(items, "text")
    assert groups_of(items, "system") == ["A", "B", "A"]
