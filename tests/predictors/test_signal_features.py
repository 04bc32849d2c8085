"""The cheap signal descriptors on signals whose answers are known: band limits, white noise's
flatness (and parity with librosa's definition), SNR, clipping, quantisation, voicing."""

from __future__ import annotations

import numpy as np
import pytest

from speechqe import degrade as D
from speechqe.predictors.weak.signal import NAMES, signal_features

SR = 16000


def _voice(seconds=2.0, f0=140.0, seed=0):
    """A harmonic voice-like signal with syllable pauses (pauses carry the noise floor)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 2 * t))) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 40))
    env = np.clip(np.sin(2 * np.pi * 1.5 * t), 0, None) ** 0.5
    return (0.5 * x * env / np.abs(x).max() + 1e-5 * rng.standard_normal(t.size)).astype(np.float32)


def f(x):
    return dict(zip(NAMES, signal_features(x, SR)))


def test_band_limits_are_measured():
    x = _voice()
    full = f(x)
    for cutoff in (1000, 3400):
        lp = f(D.band_limit(x, SR, cutoff))
        assert lp["band_edge_khz"] < cutoff / 1000 + 0.6 < full["band_edge_khz"], (cutoff, lp)
        assert lp["rolloff99_khz"] <= cutoff / 1000 + 0.1


def test_flatness_of_white_noise_and_parity_with_librosa():
    librosa = pytest.importorskip("librosa")
    noise = D.white_noise(SR * 2, 3).astype(np.float32) * 0.3
    v = f(noise)
    assert v["flatness_active"] > 0.4  # white: near 1 for long frames (0.56 for Hann 512)
    assert f(_voice())["flatness_active"] < 0.05
    # our per-frame definition equals librosa's on the same frames (power 2, amin 1e-10)
    x = _voice()
    n, hop = 512, 256
    ref = librosa.feature.spectral_flatness(y=x, n_fft=n, hop_length=hop, center=False, power=2.0,
                                            amin=1e-10, window="hann")[0]
    fr = np.stack([x[i:i + n] for i in range(0, x.size - n + 1, hop)]).astype(np.float64)
    spec = np.abs(np.fft.rfft(fr * np.hanning(n), axis=1)) ** 2
    ours = np.exp(np.mean(np.log(np.maximum(spec, 1e-10)), 1)) / np.mean(np.maximum(spec, 1e-10), 1)
    # librosa uses a periodic Hann window, numpy a symmetric one: equal to within 2%
    np.testing.assert_allclose(ours, ref, rtol=0.02, atol=1e-4)


def test_snr_estimate_falls_with_the_true_snr():
    x = _voice()
    est = [f(D.add_noise(x, D.white_noise(x.size, 1), snr))["snr_estimate_db"] for snr in (40, 20, 10, 0)]
    assert all(a > b for a, b in zip(est, est[1:])), est
    assert est[-1] < 10 < est[0]


def test_clipping_and_quantisation_are_seen():
    x = _voice()
    clean = f(x)
    clipped = f(D.hard_clip(x, 0.3))
    assert clipped["clip_share"] > 20 * max(clean["clip_share"], 1e-4)
    assert f(D.mu_law(x, bits=4))["log2_levels"] < 5 < clean["log2_levels"]


def test_voicing_separates_voice_from_noise():
    x = _voice()
    noise = D.white_noise(x.size, 2).astype(np.float32) * 0.3
    assert f(x)["voiced_share"] > 0.8 and f(x)["periodicity"] > 0.7
    assert f(noise)["voiced_share"] < 0.2
    noisy = f(D.add_noise(x, D.white_noise(x.size, 1), 0))
    assert noisy["periodicity"] < f(x)["periodicity"]


def test_edge_cases():
    assert signal_features(np.zeros(100, np.float32)).shape == (len(NAMES),)
    with pytest.raises(ValueError):
        signal_features(np.zeros(0, np.float32))
    with pytest.raises(ValueError):
        signal_features(np.array([np.nan, 1.0]))
