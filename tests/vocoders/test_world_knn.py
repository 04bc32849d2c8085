"""Training-free vocoders: the WORLD unit vocoder (fit, F0 modes, file) and kNN voice
conversion, on synthetic voiced (harmonic, formant-shaped) and unvoiced (noise) signals whose
WORLD parameters are known, then through resynthesize/load_pair/finished_output and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speechqe.errors import ConfigError, ItemError
from speechqe.manifest import from_folder
from speechqe.vocoders.knn import KnnConfig, KnnVocoder, build_matching_set, knn_average, shift_f0
from speechqe.vocoders.resynth import (
    ResynthOptions,
    finished_output,
    load_pair,
    resynthesize,
    vocoder_request_id,
)
from speechqe.vocoders.tokenize import train_codebook
from speechqe.vocoders.units import KMeansConfig
from speechqe.vocoders.world import (
    WorldAnalysisConfig,
    WorldAnalyzer,
    WorldUnitVocoder,
    analyze,
    read_f0_contour,
    resample_contour,
    synthesize,
)

SR = 16000
CFG = WorldAnalysisConfig()


def harmonic(f0: float, seconds: float, formant: float = 700.0, seed: int = 0) -> np.ndarray:
    """A voiced vowel-like signal: harmonics of ``f0`` under one resonance at ``formant``."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    x = np.zeros_like(t)
    for h in range(1, int(4000 / f0)):
        fh = h * f0
        gain = 1.0 / (1.0 + ((fh - formant) / 150.0) ** 2)
        x += gain * np.sin(2 * np.pi * fh * t + rng.uniform(0, 2 * np.pi))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def noise(seconds: float, seed: int = 1) -> np.ndarray:
    return (0.05 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def voiced_f0(x: np.ndarray) -> np.ndarray:
    f0 = analyze(x, CFG).f0
    return f0[f0 > 0]


def test_analysis_and_synthesis_keep_f0():
    x = harmonic(150.0, 0.6)
    feats = analyze(x, CFG)
    assert feats.envelope.shape == (feats.frames, CFG.envelope_dims)
    assert feats.aperiodicity.shape == (feats.frames, CFG.ap_dims)
    assert abs(np.median(feats.f0[feats.f0 > 0]) - 150.0) < 3.0
    y = synthesize(feats.f0, feats.envelope, feats.aperiodicity, CFG)
    assert y.dtype == np.float32 and abs(y.size - x.size) <= CFG.fft_size
    assert abs(np.median(voiced_f0(y)) - 150.0) < 3.0
    with pytest.raises(ItemError, match="too few"):
        analyze(np.zeros(100, np.float32), CFG)


def _two_unit_fit(min_count=3):
    """Unit 0 = a 150 Hz vowel, unit 1 = noise; units at 50 Hz over each half."""
    a, b = harmonic(150.0, 0.5, formant=500.0), noise(0.5)
    x = np.concatenate([a, b])
    units = np.r_[np.zeros(25, np.int64), np.ones(25, np.int64)]
    return WorldUnitVocoder.fit([units], [analyze(x, CFG)], 3, 50.0, CFG, min_count=min_count)


def test_fit_gives_per_unit_voicing_f0_and_envelopes():
    voc = _two_unit_fit()
    assert voc.voicing[0] > 0.8 and voc.voicing[1] < 0.2
    assert abs(np.exp(voc.lf0[0]) - 150.0) < 5.0
    assert voc.meta["unseen_units"] == 1  # unit 2 never occurs: the global mean stands in
    # the vowel's and the noise's envelopes differ; the unseen unit takes the global mean
    assert np.abs(voc.envelope[0, 1] - voc.envelope[1, 0]).max() > 1.0
    np.testing.assert_allclose(voc.envelope[2, 0], voc.envelope[2, 1])
    # units alone: unit 0 is voiced at about 150 Hz, unit 1 unvoiced
    f0 = voc.predict_f0(np.zeros(20, np.int64))
    assert (f0 > 0).all() and abs(np.median(f0) - 150.0) < 5.0
    assert (voc.predict_f0(np.ones(20, np.int64)) == 0).all()
    with pytest.raises(ConfigError, match="outside"):
        voc.synthesize(np.array([0, 3]))


def test_synthesis_from_units_follows_the_units():
    voc = _two_unit_fit()
    y0 = voc.synthesize(np.zeros(30, np.int64), "units")
    y1 = voc.synthesize(np.ones(30, np.int64), "units")
    assert y0.size == y1.size == round(30 / 50 * SR)
    assert abs(np.median(voiced_f0(y0)) - 150.0) < 5.0
    env0 = analyze(y0, CFG).envelope[10:-10].mean(0)
    # the re-analysed envelope of unit 0's output is near unit 0's voiced statistic
    assert (np.abs(env0 - voc.envelope[0, 1]).mean()
            < np.abs(env0 - voc.envelope[1, 0]).mean())
    # a given F0 track sets F0 and length
    y = voc.synthesize(np.zeros(30, np.int64), np.full(200, 200.0))
    assert abs(y.size - 200 * CFG.frame_period_ms / 1000 * SR) <= SR * 0.01
    assert abs(np.median(voiced_f0(y)) - 200.0) < 5.0


def test_save_load_round_trip_and_refusals(tmp_path):
    voc = _two_unit_fit()
    path = voc.save(tmp_path / "w")
    assert path.suffix == ".safetensors" and path.stat().st_size < 10_000
    back = WorldUnitVocoder.load(path)
    assert back.checkpoint_id == voc.checkpoint_id and back.cfg == voc.cfg
    np.testing.assert_array_equal(back.envelope, voc.envelope)
    np.testing.assert_array_equal(back.synthesize(np.array([0, 0, 1, 1]), "units"),
                                  voc.synthesize(np.array([0, 0, 1, 1]), "units"))
    with pytest.raises(ConfigError, match="not found"):
        WorldUnitVocoder.load(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ConfigError, match="not a WORLD unit vocoder"):
        WorldUnitVocoder.load(tmp_path / "junk.safetensors")
    from safetensors.numpy import save_file

    save_file({"envelope": np.zeros((2, 2, 3), np.float32)}, str(tmp_path / "other.safetensors"),
              metadata={"speechqe": json.dumps({**voc.header(), "k": 2})})
    with pytest.raises(ConfigError, match="tensor 'envelope'"):
        WorldUnitVocoder.load(tmp_path / "other.safetensors")


def test_f0_contours(tmp_path):
    np.save(tmp_path / "a.npy", np.array([0.0, 100.0, 110.0, 120.0, 0.0]))
    t, hz = read_f0_contour(tmp_path / "a.npy", 50.0)
    np.testing.assert_allclose(t, np.arange(5) / 50.0)
    (tmp_path / "b.csv").write_text("0.0,0\n0.01,200\n0.03,220\n")
    t, hz = read_f0_contour(tmp_path / "b.csv", 50.0)
    assert hz.tolist() == [0.0, 200.0, 220.0]
    out = resample_contour(t, hz, 7, 5.0)  # frames at 0, 5, ..., 30 ms
    assert out[0] == 0.0 and out[2] == pytest.approx(200.0)
    assert out[6] == pytest.approx(220.0) and 200.0 < out[4] < 220.0
    (tmp_path / "c.txt").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(ConfigError, match="shape"):
        read_f0_contour(tmp_path / "c.txt", 50.0)
    np.save(tmp_path / "d.npy", np.array([100.0, -1.0]))
    with pytest.raises(ConfigError, match="negative"):
        read_f0_contour(tmp_path / "d.npy", 50.0)


def test_knn_average_is_the_cosine_top_k_mean():
    rng = np.random.default_rng(0)
    keys = rng.standard_normal((50, 6)).astype(np.float32)
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    vals = rng.standard_normal((50, 3))
    q = rng.standard_normal((9, 6)).astype(np.float32) * 5  # scale must not matter
    (got,) = knn_average(q, keys, [vals], 4)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ keys.T
    want = np.stack([vals[np.argsort(-s)[:4]].mean(0) for s in sims])
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_shift_f0_maps_log_mean_and_std():
    f0 = np.array([0.0, 100.0, 120.0, 140.0, 0.0, 110.0])
    out = shift_f0(f0, np.log(200.0), 0.1)
    v = out > 0
    assert (v == (f0 > 0)).all()
    assert np.log(out[v]).mean() == pytest.approx(np.log(200.0))
    assert np.log(out[v]).std() == pytest.approx(0.1)


@pytest.fixture
def voice_sets(tmp_path):
    """Two "speakers": A = low voice, formant 500 Hz; B = high voice, formant 1500 Hz; each
    utterance alternates vowel and noise."""
    sets = {}
    for name, f0, formant in (("A", 110.0, 500.0), ("B", 220.0, 1500.0)):
        root = tmp_path / name
        root.mkdir(parents=True)
        for i in range(3):
            x = np.concatenate([harmonic(f0 * (1 + 0.05 * i), 0.4, formant, seed=i),
                                noise(0.2, seed=i), harmonic(f0, 0.4, formant, seed=i + 5)])
            sf.write(root / f"{name}{i}.wav", x, SR, subtype="PCM_16")
            (root / f"{name}{i}.txt").write_text(f"utterance {i}")
        sets[name] = from_folder(root)
    return sets


def _logmel_codebook(tmp_path, sset, k=6):
    from speechqe.vocoders.features import load_feature_source

    src = load_feature_source("logmel", None, cache_dir=str(tmp_path / "cache"))
    return train_codebook(sset, src, KMeansConfig(k=k, batch_size=64, epochs=2)), src


def test_knn_conversion_takes_the_targets_voice(tmp_path, voice_sets):
    cb, src = _logmel_codebook(tmp_path, voice_sets["A"])
    analyzer = WorldAnalyzer(CFG)
    ms = build_matching_set(voice_sets["B"], src, analyzer)
    assert ms.meta["items"] == 3 and ms.features.shape[1] == 80
    voc = KnnVocoder(ms, KnnConfig(k=4))
    item = voice_sets["A"].items[0]
    feats = src.features([item])[0]
    y = voc.convert(feats, analyzer.features(item).f0)
    f0 = voiced_f0(y)
    # F0 moves to B's range (about 220 Hz), the envelope to B's formant
    assert abs(np.median(f0) - 225.0) < 20.0
    env_y = analyze(y, CFG).envelope
    env_a = analyzer.features(item).envelope
    env_b = analyzer.features(voice_sets["B"].items[0]).envelope
    dist = lambda e1, e2: np.abs(e1[:40].mean(0) - e2[:40].mean(0)).mean()  # noqa: E731
    assert dist(env_y, env_b) < dist(env_y, env_a)
    with pytest.raises(ConfigError, match="dim"):
        voc.convert(feats[:, :10], analyzer.features(item).f0)


def test_resynthesize_with_world_and_knn(tmp_path, voice_sets):
    cb, _ = _logmel_codebook(tmp_path, voice_sets["A"])
    cb_path = cb.save(tmp_path / "cb.npz")
    heldout = voice_sets["A"]
    fit = voice_sets["A"]
    opts = ResynthOptions()
    cbl, src, voc = load_pair(cb_path, "world", fit_set=fit, opts=opts, save_dir=tmp_path / "p0")
    assert (tmp_path / "p0" / "world.safetensors").is_file()
    assert voc.request_id == vocoder_request_id("world", cb_path, fit, opts)
    res = resynthesize(heldout, src, cbl, voc, tmp_path / "p0", opts)
    assert res.system.endswith("-world") and not res.errors
    info = json.loads((tmp_path / "p0" / "bitrate.json").read_text())
    assert info["vocoder_kind"] == "world" and info["bitrate"]["k"] == cb.k
    w, sr = sf.read(res.speech_set.items[0].path)
    assert sr == 16000 and w.size == heldout.items[0].frames
    assert finished_output(tmp_path / "p0", heldout, cb_path, "world", opts, fit) is not None
    # another fit set, or other F0, is not the same output
    assert finished_output(tmp_path / "p0", heldout, cb_path, "world", opts,
                           voice_sets["B"]) is None
    assert finished_output(tmp_path / "p0", heldout, cb_path, "world",
                           ResynthOptions(f0="units"), fit) is None
    # the saved statistics reload as a vocoder of their own
    _, _, saved = load_pair(cb_path, tmp_path / "p0" / "world.safetensors")
    assert isinstance(saved, WorldUnitVocoder) and saved.checkpoint_id == voc.checkpoint_id
    # F0 predicted from units; F0 from given contours (a missing one is that item's error)
    r2 = resynthesize(heldout, src, cbl, voc, tmp_path / "p1", ResynthOptions(f0="units"))
    assert r2.system.endswith("-world-f0units") and not r2.errors
    contours = tmp_path / "f0"
    contours.mkdir()
    np.save(contours / "A0.npy", np.full(60, 180.0))
    r3 = resynthesize(heldout, src, cbl, voc, tmp_path / "p2", ResynthOptions(f0=str(contours)))
    assert set(r3.errors) == {"A1", "A2"} and "no F0 contour" in r3.errors["A1"]
    assert abs(np.median(voiced_f0(sf.read(r3.out_dir / r3.system / "A0.wav")[0]
                                   .astype(np.float32))) - 180.0) < 8.0
    with pytest.raises(ConfigError, match="duration predictor"):
        resynthesize(heldout, src, cbl, voc, tmp_path / "p3",
                     ResynthOptions(dedup=True, durations="predict"))
    with pytest.raises(ConfigError, match="--fit"):
        load_pair(cb_path, "world")
    # kNN onto B, continuous features: no bitrate; on units: the codebook's bitrate
    _, _, knn = load_pair(cb_path, "knn", fit_set=voice_sets["B"], opts=opts)
    r4 = resynthesize(heldout, src, cbl, knn, tmp_path / "k0", opts)
    assert r4.bitrate is None and r4.system.endswith("-knn4") and not r4.errors
    assert json.loads((tmp_path / "k0" / "bitrate.json").read_text())["bitrate"] is None
    uopts = ResynthOptions(knn_inputs="units", knn_k=2)
    _, _, knnu = load_pair(cb_path, "knn", fit_set=voice_sets["B"], opts=uopts)
    r5 = resynthesize(heldout, src, cbl, knnu, tmp_path / "k1", uopts)
    assert r5.bitrate is not None and r5.system.endswith("-knn2-units") and not r5.errors


def test_cli_resynth_world_and_knn(tmp_path, voice_sets, toy_metrics):
    from speechqe.cli.vocoders import app

    cb, _ = _logmel_codebook(tmp_path, voice_sets["A"])
    cb_path = cb.save(tmp_path / "cb.npz")
    runner = CliRunner()
    a, b = str(tmp_path / "A"), str(tmp_path / "B")
    r = runner.invoke(app, ["resynth", a, "-c", str(cb_path), "-v", "world", "--fit", a,
                            "-c", str(cb_path), "-v", "knn", "--fit", b,
                            "-o", str(tmp_path / "rs"), "--metrics", "toy_level"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "rs" / "comparison.json").read_text())
    assert [row["system"].rsplit("-", 1)[1] for row in rows] == ["world", "knn4"]
    assert rows[0]["nominal_bps"] > 0 and rows[1]["nominal_bps"] is None
    # the conversion row compares speaker similarity to the target and to the source
    assert -1 <= rows[1]["sim_to_target"] <= 1 and -1 <= rows[1]["sim_to_source"] <= 1
    assert 0 <= rows[1]["target_closer"] <= 1 and "sim_to_target" not in rows[0]
    assert all("toy_peak_db" in row for row in rows)
    r = runner.invoke(app, ["resynth", a, "-c", str(cb_path), "-v", "world",
                            "-o", str(tmp_path / "rs2")])
    assert r.exit_code == 2 and "--fit" in r.output
    r = runner.invoke(app, ["resynth", a, "-c", str(cb_path), "-v", "world", "--fit", a,
                            "--f0", "nowhere", "-o", str(tmp_path / "rs3")])
    assert r.exit_code == 2 and "f0 must be" in r.output


def test_conversion_similarity_counts_items_closer_to_the_target(tmp_path, voice_sets):
    """With outputs that *are* B's utterances (ref: A's), every item is closer to B."""
    from speechqe.engine.resynthesis import conversion_similarity
    from speechqe.manifest import SpeechSet

    outs = SpeechSet(tuple(b.replace(ref_path=a.path) for a, b in
                           zip(voice_sets["A"], voice_sets["B"])), name="outs")
    sim = conversion_similarity(outs, voice_sets["B"])
    assert sim["n"] == 3 and sim["target_closer"] == 1.0
    assert sim["mean_sim_target"] > sim["mean_sim_source"]
    back = conversion_similarity(outs, voice_sets["A"], source_refs={
        it.id: voice_sets["B"] for it in outs})
    assert back["target_closer"] == 0.0
    broken = SpeechSet((outs.items[0].replace(path=str(tmp_path / "gone.wav")),), name="x")
    res = conversion_similarity(broken, voice_sets["B"])
    assert res["n"] == 0 and res["n_errors"] == 1 and np.isnan(res["mean_sim_target"])


def test_world_analysis_of_a_cut_reads_its_segment_only(tmp_path):
    """Items that are segments of a longer recording (lhotse cuts, Kaldi segments, JSONL
    offset/duration) are analysed over their segment, not the whole file."""
    import json

    from conftest import write_tone

    from speechqe.manifest import from_jsonl
    from speechqe.vocoders.world import WorldAnalysisConfig, WorldAnalyzer

    write_tone(tmp_path / "long.wav", seconds=2.0, sr=16000, freq=150.0, seed=1)
    lines = [{"path": "long.wav", "id": "a", "offset": 0.2, "duration": 0.5},
             {"path": "long.wav", "id": "b", "offset": 1.0, "duration": 0.8}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    sset = from_jsonl(tmp_path / "m.jsonl")
    cfg = WorldAnalysisConfig()
    an = WorldAnalyzer(cfg)
    frames = {it.id: an.features(it).f0.size for it in sset}
    per_s = 1000.0 / cfg.frame_period_ms
    assert abs(frames["a"] - 0.5 * per_s) <= 2 and abs(frames["b"] - 0.8 * per_s) <= 2, frames
