"""Strong learner on a tiny random SSL config: padding invariance, losses, augmentation,
training, checkpoint/resume, mixed precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechqe.encoders.ssl import TINY_ARCH, build_random
from speechqe.manifest import AudioItem
from speechqe.predictors.ssl_strong.augment import pitch_shift, speed
from speechqe.predictors.ssl_strong.loss import clipped_mse, contrastive
from speechqe.predictors.ssl_strong.model import StrongLearner, StrongModelConfig, text_to_ids
from speechqe.predictors.ssl_strong.train import (
    StrongTrainConfig, predict_strong, tables, train_strong,
)

HEAD = dict(domain_dim=8, listener_dim=8, blstm_hidden=16, proj_hidden=32)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return StrongLearner(build_random(TINY_ARCH, seed=seed), StrongModelConfig(**{**HEAD, **kw}),
                         n_domains=2, n_listeners=3).eval()


def _sigs(lengths=(16000, 5000, 9300, 12000), seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in lengths]


@pytest.mark.parametrize("kw", [{}, {"layer": "weighted"}, {"phoneme": True, "phoneme_dim": 8, "phoneme_layers": 2}],
                         ids=["last-layer", "weighted-layers", "with-text"])
def test_padded_batches_equal_batch_size_one(kw):
    model = _model(**kw)
    sigs = _sigs()
    texts = ["hello world", None, "a b", "the quick brown fox"]
    batched = predict_strong(model, sigs, texts=texts, max_batch=8)
    single = np.array([predict_strong(model, [s], texts=[t])[0] for s, t in zip(sigs, texts)])
    np.testing.assert_allclose(batched, single, atol=1e-4)
    assert np.ptp(batched) > 1e-4  # the scores depend on the input


def test_padding_does_not_shift_the_mean():
    """The flaw of the public ports: averaging padded frames. Our frame mask keeps it out."""
    model = _model()
    x = _sigs((6000,))[0]
    alone = predict_strong(model, [x])[0]
    with_long = predict_strong(model, [x, _sigs((32000,), 1)[0]], max_batch=2)[0]
    assert abs(alone - with_long) < 1e-4


def test_losses_follow_utmos22():
    frames = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.2, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    target = torch.tensor([0.4, 0.2])
    # only |diff| > 0.25 counts: frames 0.0 (0.16) and 1.0 (0.36); mean over the 5 valid frames
    assert float(clipped_mse(frames, mask, target, 0.25)) == pytest.approx((0.16 + 0.36) / 5)
    p, t = torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.5])
    # pairs (0,1),(1,0): |(-1) - (-0.5)| - 0.1 = 0.4 each; mean over 4 entries, halved
    assert float(contrastive(p, t, 0.1)) == pytest.approx(0.8 / 4 / 2)


def test_augmentation_shifts_pitch_and_speed():
    sr = 16000
    t = np.arange(sr) / sr
    x = torch.from_numpy((0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))

    def f0(y):
        spec = np.abs(np.fft.rfft(y.numpy() * np.hanning(y.numel())))
        return np.argmax(spec) * sr / y.numel()

    up = pitch_shift(x, 300)
    assert up.numel() == x.numel() and f0(up) == pytest.approx(200 * 2 ** 0.25, rel=0.02)
    fast = speed(x, sr, 1.1)
    assert fast.numel() == pytest.approx(x.numel() / 1.1, rel=0.01)
    assert f0(fast) == pytest.approx(220, rel=0.02)


def _items(n=12):
    items = []
    for i in range(n):
        mos = 1.0 + 4.0 * i / (n - 1)
        items.append(AudioItem(id=f"u{i}", path="", system=f"s{i % 3}", sha256=f"h{i}", mos=mos,
                               listener_scores=(("L1", round(mos)), ("L2", min(5.0, mos + 0.5))),
                               extra=(("domain", "d1" if i % 2 else "d2"),)))
    rng = np.random.default_rng(0)
    # the quality signal: louder noise for lower scores
    sigs = [(rng.standard_normal(6000 + 400 * i) * (0.6 - 0.1 * it.mos)).astype(np.float32)
            for i, it in enumerate(items)]
    return items, sigs


def test_training_learns_and_resumes_identically(tmp_path):
    items, sigs = _items()
    domains, listeners = tables(items, True)
    assert domains == ["d1", "d2"] and listeners == ["L1", "L2"]
    cfg = StrongTrainConfig(steps=6, batch_size=4, accumulate=2, lr=3e-3, warmup_steps=2,
                            max_seconds=0.5, checkpoint_every=3, pitch_cents=100)

    def fresh():
        torch.manual_seed(1)
        return StrongLearner(build_random(TINY_ARCH, seed=1), StrongModelConfig(**HEAD), 2, 2)

    losses = []
    straight = train_strong(fresh(), items, lambda i: sigs[i], cfg, domains=domains,
                            listeners=listeners, progress=lambda s, l: losses.append(l))
    assert len(losses) == 6 and all(np.isfinite(losses))
    # interrupted after 3 steps (just after its checkpoint), then started again: resumes
    run = tmp_path / "run"

    def stop(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_strong(fresh(), items, lambda i: sigs[i], cfg, domains=domains, listeners=listeners,
                     out_dir=run, progress=stop)
    assert (run / "checkpoint.pt").is_file()
    resumed = train_strong(fresh(), items, lambda i: sigs[i], cfg, domains=domains, listeners=listeners,
                           out_dir=run)
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    with pytest.raises(Exception, match="different configuration"):
        train_strong(fresh(), items, lambda i: sigs[i], StrongTrainConfig(**{**cfg.__dict__, "lr": 1e-2}),
                     domains=domains, listeners=listeners, out_dir=run)


def test_training_reduces_error_on_a_learnable_signal():
    items, sigs = _items(16)
    y = np.array([it.mos for it in items])
    cfg = StrongTrainConfig(steps=40, batch_size=8, accumulate=1, lr=3e-3, warmup_steps=4,
                            max_seconds=0.5, augment=False, use_listeners=False, checkpoint_every=0)
    torch.manual_seed(2)
    model = StrongLearner(build_random(TINY_ARCH, seed=2), StrongModelConfig(**HEAD), 2, 0)
    before = np.mean((predict_strong(model, sigs) - y) ** 2)
    train_strong(model, items, lambda i: sigs[i], cfg, domains=["d1", "d2"], listeners=[])
    after = np.mean((predict_strong(model, sigs) - y) ** 2)
    assert after < 0.5 * before


def test_bf16_autocast_matches_fp32_within_its_precision():
    """The GPU mixed-precision branch (bf16 autocast around the SSL encoder, float32 head), run
    on CPU from the same initial weights and batches as a float32 run.

    bf16 keeps 8 significant bits: each rounding is off by up to 2^-9 (0.2%) relative. Measured
    (torch 2.11, this test's tiny model and data): per-step training loss within 4e-3 relative
    of float32 over 6 steps (3.4e-4 at step 1); predictions of the same weights under bf16
    autocast within 7e-4 MOS of float32 on the 1-5 scale. Tolerances: 2e-2 relative for the
    loss (5x the measured worst case: rounding compounds through the encoder and the Adam
    updates) and 5e-3 MOS for predictions (7x the measured worst case; a hundredth of the
    smallest step a listener can give on a 1-5 scale with half points). The losses must also
    differ from float32's: identical ones would mean the bf16 branch never ran.
    """
    items, sigs = _items(8)
    runs = {}
    for amp in ("none", "bf16"):
        cfg = StrongTrainConfig(steps=3, batch_size=4, accumulate=1, lr=1e-3, warmup_steps=1,
                                max_seconds=0.5, amp=amp, checkpoint_every=0)
        torch.manual_seed(3)
        model = StrongLearner(build_random(TINY_ARCH, seed=3), StrongModelConfig(**HEAD), 2, 2)
        losses = []
        train_strong(model, items, lambda i: sigs[i], cfg, domains=["d1", "d2"], listeners=["L1", "L2"],
                     progress=lambda s, l: losses.append(l))
        runs[amp] = (np.array(losses), model)
    fp32, bf16 = runs["none"][0], runs["bf16"][0]
    assert len(bf16) == 3 and np.isfinite(bf16).all()
    assert not np.array_equal(fp32, bf16)  # the bf16 branch ran
    np.testing.assert_allclose(bf16, fp32, rtol=2e-2)
    model = runs["none"][1]
    ref = predict_strong(model, sigs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = predict_strong(model, sigs)
    assert not np.array_equal(low, ref)
    np.testing.assert_allclose(low, ref, atol=5e-3, rtol=0)
    # the model trained in bf16 predicts (in float32) like the one trained in float32
    np.testing.assert_allclose(predict_strong(runs["bf16"][1], sigs), ref, atol=5e-3, rtol=0)


def test_text_ids():
    assert text_to_ids(None) == [1] and text_to_ids("Ab!") == [2, 3, 1]
