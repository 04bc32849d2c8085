"""F0 at the unit rate (WORLD DIO + StoneMask) and its quantile bins."""

from __future__ import annotations

import numpy as np
import pytest

from speechqe.errors import ConfigError
from speechqe.vocoders.f0 import F0Quantizer, extract_f0


def test_extract_f0_of_a_tone_and_silence():
    sr = 16000
    t = np.arange(sr) / sr
    x = np.concatenate([0.5 * np.sin(2 * np.pi * 200 * t), np.zeros(sr // 2)]).astype(np.float32)
    f0 = extract_f0(x, sr, frame_rate=50, n_frames=75)
    assert f0.shape == (75,)
    voiced = f0[5:45]
    assert np.all(voiced > 0) and np.median(voiced) == pytest.approx(200, rel=0.02)
    assert np.all(f0[55:] == 0)
    assert extract_f0(x, sr, 50, n_frames=90)[-10:].tolist() == [0.0] * 10


def test_quantizer_bins_are_balanced_and_unvoiced_is_zero():
    g = np.random.default_rng(0)
    tracks = [np.where(g.random(500) < 0.3, 0.0, np.exp(g.normal(np.log(180), 0.2, 500)))
              for _ in range(4)]
    q = F0Quantizer.fit(tracks, n_bins=6)
    assert len(q.edges) == 4 and list(q.edges) == sorted(q.edges)
    bins = np.concatenate([q.quantize(t) for t in tracks])
    voiced = np.concatenate(tracks) > 0
    assert np.all(bins[~voiced] == 0) and np.all(bins[voiced] >= 1) and bins.max() == 5
    counts = np.bincount(bins[voiced], minlength=6)[1:]
    assert counts.min() > 0.9 * counts.mean()  # quantile bins: equally used
    assert F0Quantizer.from_dict(q.to_dict()) == q


def test_quantizer_speaker_mean_normalisation():
    low = np.full(100, 100.0)
    high = np.full(100, 200.0)
    high[::2] = 220.0
    low[::2] = 110.0
    q = F0Quantizer.fit([low, high], n_bins=3, speakers=["a", "b"], normalize="mean")
    # after removing each speaker's mean, both speakers use both voiced bins the same way
    np.testing.assert_array_equal(q.quantize(low, "a"), q.quantize(high, "b"))
    with pytest.raises(ConfigError, match="speaker"):
        q.quantize(low, "c")
    with pytest.raises(ConfigError, match="voiced frames"):
        F0Quantizer.fit([np.zeros(10)], n_bins=4)
