from __future__ import annotations

import numpy as np
import pytest

from speechqe import degrade


def _tone(n=16000, sr=16000):
    t = np.arange(n) / sr
    return (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize("snr", [20.0, 10.0, 0.0, -5.0])
def test_add_noise_hits_requested_snr(snr):
    x = _tone()
    y = degrade.add_noise(x, degrade.white_noise(x.size, 1), snr)
    assert degrade.snr_db(x, y) == pytest.approx(snr, abs=1e-3)
    assert y.dtype == np.float32 and y.shape == x.shape


def test_babble_is_deterministic_and_normalised():
    talkers = [_tone(8000), np.random.default_rng(0).standard_normal(12000)]
    a = degrade.babble(talkers, 20000, seed=3)
    b = degrade.babble(talkers, 20000, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.size == 20000
    # each talker enters at unit power whatever its level: one talker -> power 1, scaling a
    # talker changes nothing, two independent talkers add up to ~2
    for t in talkers:
        one = degrade.babble([t], 20000, seed=3)
        assert degrade.power(one) == pytest.approx(1.0, rel=0.02)
        np.testing.assert_allclose(degrade.babble([100.0 * t], 20000, seed=3), one, rtol=1e-5, atol=1e-6)
    rng = np.random.default_rng(1)
    two = degrade.babble([rng.standard_normal(30000), 0.01 * rng.standard_normal(30000)], 30000, seed=0)
    assert degrade.power(two) == pytest.approx(2.0, rel=0.05)


def test_band_limit_removes_high_band():
    sr = 16000
    t = np.arange(sr) / sr
    x = (np.sin(2 * np.pi * 500 * t) + np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    y = degrade.band_limit(x, sr, 3000)
    spec = np.abs(np.fft.rfft(y))
    assert spec[6000] < 1e-3 * spec[500]


def test_mu_law_and_quantise_error_shrinks_with_bits():
    x = _tone()
    e8 = np.abs(degrade.mu_law(x, 8) - x).max()
    e4 = np.abs(degrade.mu_law(x, 4) - x).max()
    assert e8 < e4
    assert np.abs(degrade.quantise(x, 12) - x).max() <= 2.0 / 2**12


def test_hard_clip_flattens_peaks():
    y = degrade.hard_clip(_tone(), 0.3)
    assert np.mean(np.abs(y) >= 0.998) > 0.3
