"""Training a tiny unit HiFi-GAN on CPU: losses fall, resume is exact, data loading does not
depend on the number of workers."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch
from unit_vocoder_helpers import tiny_vocoder

from speechqe.errors import ConfigError
from speechqe.vocoders.unit_hifigan.config import DurationPredictorConfig
from speechqe.vocoders.unit_hifigan.data import (
    SegmentDataset,
    StepBatchSampler,
    Utterance,
    collate,
)
from speechqe.vocoders.unit_hifigan.infer import UnitVocoder
from speechqe.vocoders.unit_hifigan.train import train

SR, HOP = 16000, 320


def _synthetic_corpus(folder, n=3, frames=60, seed=0):
    """Utterances whose units set the pitch of a harmonic tone (one unit per 20 ms frame)."""
    g = np.random.default_rng(seed)
    utts = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        runs = g.integers(2, 8, size=frames)
        units = np.repeat(g.integers(0, 12, size=frames), runs)[:frames]
        f = 110.0 + 25.0 * np.repeat(units, HOP)
        phase = 2 * np.pi * np.cumsum(f) / SR
        x = 0.3 * np.sin(phase) + 0.15 * np.sin(2 * phase) + 0.003 * g.standard_normal(f.size)
        path = folder / f"u{i}.wav"
        sf.write(path, x.astype(np.float32), SR)
        utts.append(Utterance(id=f"u{i}", audio_path=str(path), units=units))
    return utts


def _dataset(utts, cfg):
    return SegmentDataset(utts, sample_rate=SR, hop_size=HOP,
                          segment_frames=cfg.train.segment_size // HOP)


def _log(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_training_reduces_mel_loss(tmp_path):
    utts = _synthetic_corpus(tmp_path / "wav")
    cfg = tiny_vocoder(steps_adv=30, learning_rate=5e-3)
    res = train(cfg, _dataset(utts, cfg), tmp_path / "run", steps=50)
    rows = _log(tmp_path / "run" / "train_log.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 51))
    first = np.mean([float(r["mel_l1"]) for r in rows[:5]])
    last = np.mean([float(r["mel_l1"]) for r in rows[-5:]])
    assert last < 0.5 * first, (first, last)
    # the adversarial terms start at adv_start_step
    assert float(rows[20]["loss_d"]) == 0.0 and float(rows[40]["loss_d"]) > 0.0
    assert float(rows[40]["loss_fm"]) > 0.0
    assert res.end_step == 50 and res.steps_per_s > 0
    s = res.summary()
    assert s["batch"] == 2 and s["segment_samples"] == 8 * HOP
    voc = UnitVocoder.from_checkpoint(tmp_path / "run")
    wav = voc.synthesize([utts[0].units[:33]])[0]
    assert wav.shape == (33 * HOP,)


def test_resume_continues_from_the_same_step_with_identical_weights(tmp_path):
    utts = _synthetic_corpus(tmp_path / "wav")
    base = tiny_vocoder(steps_adv=0, checkpoint_every=3)
    cfg = base.replace(generator=base.generator.replace(
        dur_predictor=DurationPredictorConfig(encoder_embed_dim=16, var_pred_hidden_dim=8,
                                              var_pred_kernel_size=3, var_pred_dropout=0.5)))
    ds = _dataset(utts, cfg)
    train(cfg, ds, tmp_path / "a", steps=6)
    train(cfg, ds, tmp_path / "b", steps=3)
    res = train(cfg, ds, tmp_path / "b", steps=6)
    assert (res.start_step, res.end_step) == (3, 6)
    for name in ("g_00000006", "do_00000006"):
        a = torch.load(tmp_path / "a" / name, weights_only=True)
        b = torch.load(tmp_path / "b" / name, weights_only=True)
        for key in ("generator",) if name.startswith("g") else ("mpd", "msd"):
            assert a[key].keys() == b[key].keys()
            for k in a[key]:
                assert torch.equal(a[key][k], b[key][k]), (name, key, k)
    assert [r["step"] for r in _log(tmp_path / "b" / "train_log.csv")] == \
        [str(s) for s in range(1, 7)]
    # nothing left to do
    assert train(cfg, ds, tmp_path / "b", steps=6).end_step == 6


def test_batches_do_not_depend_on_workers(tmp_path):
    utts = _synthetic_corpus(tmp_path / "wav", n=4)
    cfg = tiny_vocoder()
    ds = _dataset(utts, cfg)

    def batches(workers):
        sampler = StepBatchSampler(ds, 3, seed=5, start_step=2, end_step=6)
        loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=workers,
                                             collate_fn=collate)
        return list(loader)

    a, b = batches(0), batches(2)
    assert len(a) == len(b) == 4
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k])
    assert a[0]["audio"].shape == (3, cfg.train.segment_size)
    # step 3's batch is the same whether the run started at 0 or 2
    s0 = StepBatchSampler(ds, 3, seed=5, start_step=0, end_step=6)
    assert list(s0)[3] == list(StepBatchSampler(ds, 3, seed=5, start_step=2, end_step=6))[1]


def test_segment_longer_than_every_utterance_is_refused(tmp_path):
    utts = _synthetic_corpus(tmp_path / "wav", frames=5)
    with pytest.raises(ConfigError, match="shorter segment"):
        SegmentDataset(utts, sample_rate=SR, hop_size=HOP, segment_frames=8)


def test_training_with_quantised_f0_and_speaker_ids(tmp_path):
    from speechqe.vocoders.f0 import F0Quantizer, extract_f0

    utts = _synthetic_corpus(tmp_path / "wav")
    tracks = {u.id: extract_f0(sf.read(u.audio_path)[0], SR, 50, len(u.units)) for u in utts}
    q = F0Quantizer.fit(list(tracks.values()), n_bins=4)
    utts = [dataclasses.replace(u, f0=q.quantize(tracks[u.id]), speaker=i % 2)
            for i, u in enumerate(utts)]
    base = tiny_vocoder(steps_adv=0)
    cfg = base.replace(generator=base.generator.replace(
        f0=True, f0_quant_num_bin=4, multispkr=True, num_speakers=2))
    res = train(cfg, _dataset(utts, cfg), tmp_path / "run", steps=3,
                meta={"f0_quantizer": q.to_dict(), "speakers": ["a", "b"]})
    assert res.end_step == 3
    voc = UnitVocoder.from_checkpoint(tmp_path / "run")
    assert F0Quantizer.from_dict(voc.meta["f0_quantizer"]) == q
    u = utts[1]
    wav = voc.synthesize([u.units[:20]], f0=[u.f0[:20]], speakers=[1])[0]
    assert wav.shape == (20 * HOP,) and np.isfinite(wav).all()


def test_learning_rate_decays_every_lr_decay_steps(tmp_path):
    utts = _synthetic_corpus(tmp_path / "wav")
    cfg = tiny_vocoder(steps_adv=100, learning_rate=1e-3, lr_decay=0.5, lr_decay_steps=2)
    train(cfg, _dataset(utts, cfg), tmp_path / "run", steps=5)
    lrs = [float(r["lr"]) for r in _log(tmp_path / "run" / "train_log.csv")]
    np.testing.assert_allclose(lrs, [1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
