"""Audio loading, resampling (cached kernels) and validation."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import write_tone
from hypothesis import given, settings
from hypothesis import strategies as st

from speechqe import audio
from speechqe.errors import (
    AudioReadError, EmptyAudioError, NonFiniteAudioError, SilentAudioError, TooShortError,
)


def test_read_stereo_to_mono_float32(tmp_path):
    p = tmp_path / "st.wav"
    left = np.full(1000, 0.5, np.float32)
    right = np.full(1000, -0.25, np.float32)
    sf.write(p, np.stack([left, right], 1), 8000, subtype="FLOAT")
    x, sr = audio.read(p)
    assert sr == 8000 and x.dtype == np.float32 and x.shape == (1000,)
    np.testing.assert_allclose(x, 0.125)


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg"])
def test_formats(tmp_path, ext):
    ref = write_tone(tmp_path / f"t{ext}", seconds=0.3, sr=16000)
    info = audio.probe(tmp_path / f"t{ext}")
    x, sr = audio.read(tmp_path / f"t{ext}")
    assert sr == 16000 and info.sample_rate == 16000 and abs(x.size - ref.size) < 2000
    if ext != ".ogg":  # lossy
        np.testing.assert_allclose(x, ref, atol=1e-4)


def test_unreadable_and_empty(tmp_path):
    (tmp_path / "e.wav").write_bytes(b"")
    (tmp_path / "t.wav").write_text("hello")
    with pytest.raises(EmptyAudioError):
        audio.read(tmp_path / "e.wav")
    with pytest.raises(AudioReadError, match="cannot decode"):
        audio.read(tmp_path / "t.wav")
    with pytest.raises(AudioReadError, match="no such file"):
        audio.probe(tmp_path / "missing.wav")
    sf.write(tmp_path / "zero.wav", np.zeros((0,), np.float32), 16000)
    with pytest.raises(EmptyAudioError):
        audio.probe(tmp_path / "zero.wav")


def test_validate_errors_and_clipping_warning():
    with pytest.raises(NonFiniteAudioError, match="1 of 3"):
        audio.validate(np.array([0.1, np.nan, 0.2], np.float32))
    with pytest.raises(SilentAudioError):
        audio.validate(np.zeros(100, np.float32))
    with pytest.raises(SilentAudioError):
        audio.validate(np.full(100, 1e-6, np.float32))
    x = np.sin(np.linspace(0, 100, 16000)).astype(np.float32) * 2
    chk = audio.validate(np.clip(x, -1, 1))
    assert chk.clipped_fraction > 0.1 and chk.warnings and "clipped" in chk.warnings[0]
    assert audio.validate(x * 0.1).warnings == ()


def test_resample_matches_torchaudio_and_caches_kernel():
    import torch
    import torchaudio

    x = np.random.default_rng(0).standard_normal(22050).astype(np.float32)
    audio._resampler.cache_clear()
    y = audio.resample(x, 22050, 16000)
    ref = torchaudio.functional.resample(torch.from_numpy(x), 22050, 16000).numpy()
    np.testing.assert_array_equal(y, ref)
    assert y.size == 16000
    audio.resample(x, 22050, 16000)
    assert audio._resampler.cache_info().hits >= 1


def test_loaded_audio_resamples_each_rate_once(monkeypatch):
    calls = []
    real = audio.resample

    def counting(x, a, b):
        calls.append((a, b))
        return real(x, a, b)

    monkeypatch.setattr(audio, "resample", counting)
    la = audio.LoadedAudio.from_array(np.random.default_rng(1).standard_normal(4410).astype(np.float32) * 0.1, 44100)
    a = la.at(16000)
    b = la.at(16000)
    c = la.at(8000)
    assert a is b and c.size == 800 and la.at(None) is la.samples
    assert calls == [(44100, 16000), (44100, 8000)]  # both from the native signal


def test_check_duration():
    audio.check_duration(16000, 16000, 1.0, "x")
    with pytest.raises(TooShortError, match="shorter than the 1 s"):
        audio.check_duration(15999, 16000, 1.0, "x")


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]),
    st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000]),
    st.integers(min_value=1, max_value=3000),
)
def test_resample_length_sweep(sr_in, sr_out, n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    y = audio.resample(x, sr_in, sr_out)
    assert y.size == int(np.ceil(n * sr_out / sr_in)) and y.dtype == np.float32


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".mp3"])
def test_partial_read_equals_the_slice_of_a_full_read(tmp_path, ext):
    """A segment is read by seeking: the same samples as cutting the full decode (lossy
    formats within their decoder's frame-boundary tolerance)."""
    p = tmp_path / f"t{ext}"
    rng = np.random.default_rng(0)
    x = (0.3 * np.sin(np.arange(48000) * 0.05) + 0.01 * rng.standard_normal(48000)).astype(np.float32)
    sf.write(p, x, 16000)
    full, sr = audio.read(p)
    part, _ = audio.read(p, start=16000, frames=8000)
    assert part.shape == (8000,)
    if ext in (".wav", ".flac"):
        np.testing.assert_array_equal(part, full[16000:24000])
    else:
        assert np.sqrt(np.mean((part - full[16000:24000]) ** 2)) < 0.02
    tail, _ = audio.read(p, start=40000)
    assert tail.size == full.size - 40000


def test_partial_read_channel_and_bounds(tmp_path):
    p = tmp_path / "st.wav"
    left, right = np.full(1000, 0.5, np.float32), np.full(1000, -0.25, np.float32)
    sf.write(p, np.stack([left, right], 1), 8000, subtype="FLOAT")
    assert np.all(audio.read(p, channel=1)[0] == -0.25)
    assert np.all(audio.read(p, start=10, frames=20, channel=0)[0] == 0.5)
    with pytest.raises(AudioReadError, match="channel 2 requested, the file has 2"):
        audio.read(p, channel=2)
    with pytest.raises(AudioReadError, match="the file ends .* before the segment"):
        audio.read(p, start=900, frames=200)
    loaded = audio.LoadedAudio.from_file(p, start=100, frames=50, channel=0)
    assert loaded.samples.shape == (50,) and loaded.duration == 50 / 8000
