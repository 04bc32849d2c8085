"""Unit HiFi-GAN generator: output lengths, batched == single, durations, conditioning, AMP
code paths on CPU, the HiFi-GAN mel against librosa, config validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from unit_vocoder_helpers import tiny_generator

from speechqe.errors import ConfigError
from speechqe.vocoders.unit_hifigan.config import (
    DurationPredictorConfig,
    GeneratorConfig,
    MelConfig,
)
from speechqe.vocoders.unit_hifigan.infer import UnitVocoder
from speechqe.vocoders.unit_hifigan.losses import LogMel
from speechqe.vocoders.unit_hifigan.model import UnitHiFiGAN
from speechqe.vocoders.unit_hifigan.train import autocast_context


def _model(**kw) -> UnitHiFiGAN:
    torch.manual_seed(0)
    m = UnitHiFiGAN(tiny_generator(**kw)).eval()
    for p in m.parameters():  # larger than HiFi-GAN's init, so outputs are not ~0
        torch.nn.init.normal_(p, 0.0, 0.2)
    return m


@pytest.mark.parametrize("frames", [1, 7, 50])
def test_output_length_is_frames_times_hop(frames):
    m = _model()
    with torch.no_grad():
        y = m(torch.randint(0, 12, (2, frames)))
    assert y.shape == (2, 1, frames * 320)
    assert torch.isfinite(y).all() and y.abs().max() <= 1.0


def test_batched_equals_single_with_all_conditioning():
    m = _model(f0=True, f0_quant_num_bin=5, multispkr=True, num_speakers=3)
    g = torch.Generator().manual_seed(1)
    lens = [23, 9, 2]
    units = [torch.randint(0, 12, (n,), generator=g) for n in lens]
    f0 = [torch.randint(0, 5, (n,), generator=g) for n in lens]
    voc = UnitVocoder(model=m, config={})
    batched = voc.synthesize([u.numpy() for u in units], f0=[f.numpy() for f in f0],
                             speakers=[0, 2, 1], batch_size=3)
    single = [voc.synthesize([u.numpy()], f0=[f.numpy()], speakers=[s])[0]
              for u, f, s in zip(units, f0, [0, 2, 1])]
    for b, s, n in zip(batched, single, lens):
        assert b.shape == s.shape == (n * 320,)
        assert np.abs(s).max() > 1e-3  # a real signal, not zeros
        np.testing.assert_allclose(b, s, atol=2e-5)


def test_speaker_vector_and_continuous_f0():
    m = _model(f0=True, multispkr=True, speaker_embedding_dim=6)
    assert m.cfg.model_in_dim == 16 + 1 + 16
    with torch.no_grad():
        y = m(torch.randint(0, 12, (2, 10)), f0=torch.rand(2, 10) * 200,
              speaker=torch.randn(2, 6))
    assert y.shape == (2, 1, 3200)
    with pytest.raises(ValueError, match="f0"):
        m(torch.randint(0, 12, (1, 4)), speaker=torch.randn(1, 6))


def test_durations_expand_units_and_output_length():
    m = _model(dur_predictor=DurationPredictorConfig(encoder_embed_dim=16, var_pred_hidden_dim=16, var_pred_dropout=0.0))
    frames = np.array([3, 3, 3, 1, 1, 7, 7, 7, 7, 2])
    from speechqe.vocoders.units import deduplicate

    u, d = deduplicate(frames)
    voc = UnitVocoder(model=m, config={})
    a = voc.synthesize([frames])[0]
    b = voc.synthesize([u], durations=[d])[0]
    np.testing.assert_allclose(a, b, atol=1e-6)
    with torch.no_grad():
        pred = m.predict_durations(torch.from_numpy(u)[None])
    assert (pred >= 1).all()
    c = voc.synthesize([u], predict_durations=True)[0]
    assert c.shape == (int(pred.sum()) * 320,)
    # batched duration prediction gives the single-item durations and waveforms
    u2 = np.array([4, 5, 6, 4, 5, 6, 1])
    both = voc.synthesize([u, u2], predict_durations=True, batch_size=2)
    np.testing.assert_allclose(both[0], c, atol=2e-5)
    np.testing.assert_allclose(both[1], voc.synthesize([u2], predict_durations=True)[0],
                               atol=2e-5)


def test_duration_loss_trains_the_predictor():
    torch.manual_seed(0)
    m = UnitHiFiGAN(tiny_generator(dur_predictor=DurationPredictorConfig(encoder_embed_dim=16, var_pred_hidden_dim=16, var_pred_dropout=0.0)))
    # unit 1 always lasts 2 frames, unit 2 lasts 6, unit 3 lasts 4
    seq = torch.tensor([[1] * 2 + [2] * 6 + [3] * 4 + [1] * 2 + [2] * 6 + [3] * 4 + [1] * 2])
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    with torch.no_grad():
        first = float(m.duration_loss(seq))
    for _ in range(150):
        loss = m.duration_loss(seq)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first
    m.eval()
    with torch.no_grad():
        d = m.predict_durations(torch.tensor([[1, 2, 3, 1, 2, 3]]))
    # the first and last runs are not trained on (a segment may cut them)
    assert d[0, 1:-1].tolist() == [6, 4, 2, 6]


def test_remove_weight_norm_keeps_outputs():
    m = _model()
    u = torch.randint(0, 12, (1, 12))
    with torch.no_grad():
        a = m(u)
        m.remove_weight_norm()
        b = m(u)
    assert not m.has_weight_norm
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_autocast_off_is_fp32_and_bf16_is_close_on_cpu():
    """The AMP code path on CPU: 'none' is exactly the fp32 forward; bf16 autocast runs the
    same graph in reduced precision (on GPU the same context manager is used)."""
    m = _model()
    u = torch.randint(0, 12, (2, 16))
    dev = torch.device("cpu")
    with torch.no_grad():
        ref = m(u)
        with autocast_context(dev, "none"):
            same = m(u)
        with autocast_context(dev, "bf16"):
            low = m(u)
    assert torch.equal(ref, same)
    assert low.dtype == torch.bfloat16
    assert float((low.float() - ref).abs().mean()) < 0.1 * float(ref.abs().mean()) + 1e-3


def test_hifigan_mel_matches_librosa_filters():
    """The loss' mel is HiFi-GAN's: librosa Slaney filters on a magnitude STFT."""
    librosa = pytest.importorskip("librosa")
    cfg = MelConfig()
    mel = LogMel(cfg, 16000)
    fb_ta = mel.mel.mel_scale.fb.numpy().T  # (n_mels, n_freqs)
    fb_lr = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=80, fmin=0, fmax=8000)
    np.testing.assert_allclose(fb_ta, fb_lr, atol=1e-6)
    t = torch.arange(16000 * 2) / 16000
    y = 0.5 * torch.sin(2 * np.pi * 440 * t)
    m = mel(y[None])
    assert m.shape == (1, 80, 2 * 16000 // 256)
    spec = np.abs(librosa.stft(np.pad(y.numpy(), (384, 384), mode="reflect"), n_fft=1024,
                               hop_length=256, win_length=1024, window="hann", center=False))
    ref = np.log(np.clip(fb_lr @ spec, 1e-5, None))
    np.testing.assert_allclose(m[0].numpy(), ref, rtol=1e-3, atol=1e-3)


def test_config_validation():
    with pytest.raises(ConfigError, match="kernel"):
        GeneratorConfig(upsample_rates=(5,), upsample_kernel_sizes=(8,),
                        upsample_initial_channel=64)
    with pytest.raises(ConfigError, match="dilations"):
        GeneratorConfig(resblock="2")
    with pytest.raises(ConfigError, match="encoder_embed_dim"):
        GeneratorConfig(dur_predictor=DurationPredictorConfig(encoder_embed_dim=64))
    assert GeneratorConfig().hop_size == 320 and GeneratorConfig().frame_rate == 50.0


def test_vocoder_rejects_bad_units():
    voc = UnitVocoder(model=_model(), config={})
    with pytest.raises(ConfigError, match="outside"):
        voc.synthesize([np.array([1, 12])])
    with pytest.raises(ConfigError, match="empty"):
        voc.synthesize([np.array([], dtype=np.int64)])
    with pytest.raises(ConfigError, match="duration predictor"):
        voc.synthesize([np.array([1, 2])], predict_durations=True)


def test_configs_are_typed_models_with_one_error_style(tmp_path):
    from speechqe.vocoders.unit_hifigan.config import TrainConfig, VocoderConfig

    with pytest.raises(ConfigError, match=r"GeneratorConfig: resblock: Input should be '1' "
                                          r"or '2' \(got '3'\)"):
        GeneratorConfig(resblock="3")
    with pytest.raises(ConfigError, match="unknown key 'batch'"):
        TrainConfig(batch=3)
    cfg = VocoderConfig(train=TrainConfig(batch_size=4, amp="bf16"))
    assert VocoderConfig.from_dict(cfg.to_dict()) == cfg  # through JSON-able lists
    assert cfg.to_dict()["generator"]["upsample_rates"] == [5, 4, 4, 2, 2]
    assert cfg.replace(train=cfg.train.replace(batch_size=8)).train.batch_size == 8
    with pytest.raises(ConfigError, match="kernel"):
        cfg.generator.replace(upsample_kernel_sizes=(10, 8, 8, 4, 4))
    path = tmp_path / "voc.yaml"
    path.write_text("generator:\n  num_embeddings: 200\ntrain:\n  batch_size: 2\n  amp: fp8\n"
                    "mel:\n  n_mels: 80\n")
    with pytest.raises(ConfigError) as e:
        VocoderConfig.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "train.amp: Input should be" in msg
    assert "mel: unknown key 'n_mels' (known: n_fft, hop_size" in msg
    path.write_text("generator:\n  num_embeddings: 200\n")
    assert VocoderConfig.load(path).generator.num_embeddings == 200
