"""Speech set -> codebook -> units (weight-free log-mel encoder), and resynthesis: waveforms,
manifest with references, errors kept per item, scoring through the runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_tone

from speechqe.errors import ConfigError
from speechqe.manifest import from_folder
from speechqe.vocoders.features import load_feature_source
from speechqe.engine.resynthesis import comparison_table
from speechqe.engine.resynthesis import score_outputs as evaluate
from speechqe.vocoders.resynth import ResynthOptions, resynthesize
from speechqe.vocoders.tokenize import encode_set, train_codebook
from speechqe.vocoders.unit_hifigan.checkpoint import save_checkpoint
from speechqe.vocoders.unit_hifigan.config import GeneratorConfig
from speechqe.vocoders.unit_hifigan.infer import UnitVocoder
from speechqe.vocoders.unit_hifigan.model import UnitHiFiGAN
from speechqe.vocoders.units import KMeansConfig


@pytest.fixture
def tone_set(tmp_path):
    root = tmp_path / "set"
    for i, f in enumerate((150, 220, 330, 440)):
        write_tone(root / f"t{i}.wav", seconds=0.6, freq=f)  # pure: log-mel separates them
        (root / f"t{i}.txt").write_text(f"tone {i}")
    return from_folder(root)


def _source(tmp_path):
    return load_feature_source("logmel", None, cache_dir=str(tmp_path / "cache"))


def test_train_and_encode_units(tmp_path, tone_set):
    src = _source(tmp_path)
    cb = train_codebook(tone_set, src, KMeansConfig(k=6, batch_size=64, epochs=3))
    assert cb.k == 6 and cb.frame_rate == 100.0 and cb.sample_rate == 16000
    assert cb.encoder == src.encoder_id and cb.layer == 0
    assert cb.info["items"] == 4 and cb.info["encoder_spec"] == "logmel"
    res = encode_set(tone_set, src, cb)
    assert not res.errors and [r.id for r in res.records] == ["t0", "t1", "t2", "t3"]
    r0 = res.records[0]
    assert r0.frames == r0.units.size == 61  # 0.6 s at 100 Hz (centred STFT: +1)
    # different tones land in different units
    majority = [np.bincount(r.units).argmax() for r in res.records]
    assert len(set(majority)) == 4
    dd = encode_set(tone_set, src, cb, dedup=True)
    for a, b in zip(res.records, dd.records):
        np.testing.assert_array_equal(b.frame_units(), a.units)
        assert b.durations.sum() == a.frames


def test_encode_refuses_a_codebook_of_another_layer(tmp_path, tone_set):
    src = _source(tmp_path)
    cb = train_codebook(tone_set, src, KMeansConfig(k=4, batch_size=64, epochs=1))
    import dataclasses

    other = dataclasses.replace(cb, layer=3)
    with pytest.raises(ConfigError, match="layer"):
        encode_set(tone_set, src, other)


def _vocoder(tmp_path, cb):
    cfg = GeneratorConfig(num_embeddings=cb.k, embedding_dim=8, upsample_rates=(5, 4, 4, 2),
                          upsample_kernel_sizes=(11, 8, 8, 4), upsample_initial_channel=32,
                          resblock="2", resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "voc", 5, UnitHiFiGAN(cfg), cfg,
                    {"units": {"codebook": cb.fingerprint()}, "step": 5})
    return UnitVocoder.from_checkpoint(tmp_path / "voc")


def test_resynthesis_writes_waveforms_manifest_and_bitrate(tmp_path, tone_set):
    src = _source(tmp_path)
    cb = train_codebook(tone_set, src, KMeansConfig(k=4, batch_size=64, epochs=1))
    voc = _vocoder(tmp_path, cb)
    # one item whose audio became unreadable after the manifest was built
    broken = tone_set[3]
    with open(broken.path, "wb") as f:
        f.write(b"RIFF0000WAVEjunk")
    out = tmp_path / "out"
    res = resynthesize(tone_set, src, cb, voc, out, ResynthOptions(batch_size=2))
    assert len(res.speech_set) == 4  # the broken item stays, with its error
    items = {it.extra[0][1]: it for it in res.speech_set}
    assert items["t3"].error and items["t3"].error_type == "unreadable"
    for i in range(3):
        it = items[f"t{i}"]
        assert it.ok and it.ref_path == tone_set[i].path and it.text == f"tone {i}"
        assert it.id == f"{res.system}/t{i}" and it.system == res.system
        x, sr = sf.read(it.path)
        assert sr == 16000 and x.size == 9600  # 61 frames x 160, trimmed to the original
    assert "t3" in res.errors
    info = json.loads((out / "bitrate.json").read_text())
    assert info["bitrate"]["nominal_bps"] == pytest.approx(100 * 2.0)
    assert (out / "units.jsonl").is_file() and (out / "manifest.jsonl").is_file()
    # dedup with kept durations gives the same waveforms
    res2 = resynthesize(tone_set, src, cb, voc, tmp_path / "out2",
                        ResynthOptions(dedup=True, system="dd"))
    a, _ = sf.read(items["t0"].path)
    b, _ = sf.read(res2.speech_set["dd/t0"].path)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_resynthesis_refuses_a_mismatched_vocoder(tmp_path, tone_set):
    src = _source(tmp_path)
    cb = train_codebook(tone_set, src, KMeansConfig(k=4, batch_size=64, epochs=1))
    cb5 = train_codebook(tone_set, src, KMeansConfig(k=5, batch_size=64, epochs=1))
    with pytest.raises(ConfigError, match="unit embeddings"):
        resynthesize(tone_set, src, cb5, _vocoder(tmp_path, cb), tmp_path / "o")


def test_evaluate_scores_outputs_through_the_runner(tmp_path, tone_set, toy_metrics):
    src = _source(tmp_path)
    cb = train_codebook(tone_set, src, KMeansConfig(k=4, batch_size=64, epochs=1))
    voc = _vocoder(tmp_path, cb)
    a = resynthesize(tone_set, src, cb, voc, tmp_path / "a", ResynthOptions(system="pairA"))
    b = resynthesize(tone_set, src, cb, voc, tmp_path / "b",
                     ResynthOptions(system="pairB", dedup=True))
    result = evaluate([a.out_dir, b.out_dir], ["toy_level", "toy_snr"], tmp_path / "r.duckdb")
    table = {r["system"]: r for r in comparison_table(result)}
    assert set(table) == {"pairA", "pairB"}
    for row in table.values():
        assert row["nominal_bps"] == pytest.approx(200.0)
        assert np.isfinite(row["toy_peak_db"]) and row["toy_peak_db"] <= 0
        # outputs have the originals' length, so the length-strict toy SNR scores them
        assert np.isfinite(row["toy_snr"]) and "toy_snr_errors" not in row
