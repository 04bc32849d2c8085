"""SI-SDR and LSD: analytic golden values, parity with torchmetrics / librosa, invariants,
length handling and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import corpus
from metric_helpers import load_clip, make_input, score, value
from speechqe import degrade
from speechqe.audio import LoadedAudio
from speechqe.errors import LengthMismatchError, MissingReferenceError, SilentAudioError
from speechqe import plugins
from speechqe.metrics.functional.align import match_lengths
from speechqe.metrics.functional.lsd import lsd, power_spectrogram
from speechqe.metrics.functional.sisdr import si_sdr


def _orthogonal_noise(s: np.ndarray, ratio_db: float, seed: int) -> np.ndarray:
    """Noise that is zero-mean, orthogonal to ``s`` and ``ratio_db`` below ``||s||^2``."""
    n = np.random.default_rng(seed).standard_normal(s.size)
    n -= n.mean()
    n -= (n @ s) / (s @ s) * s
    return n * np.sqrt((s @ s) / (n @ n) / 10 ** (ratio_db / 10))


def _speechlike(n: int, seed: int) -> np.ndarray:
    s = np.random.default_rng(seed).standard_normal(n)
    s = np.convolve(s, np.hanning(31), mode="same")  # coloured, like speech
    return s - s.mean()


# --- SI-SDR ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio_db", [-10.0, 0.0, 7.5, 30.0])
def test_si_sdr_analytic_golden(ratio_db):
    s = _speechlike(16000, 1)
    n = _orthogonal_noise(s, ratio_db, 2)
    assert si_sdr(s, s + n) == pytest.approx(ratio_db, abs=1e-9)
    # a gain on the estimate and a DC offset change nothing (scale invariant, zero-mean)
    assert si_sdr(s, 0.01 * (s + n) + 0.3) == pytest.approx(ratio_db, abs=1e-9)
    # without mean removal an offset as strong as the signal is distortion
    assert si_sdr(s, s + n + s.std(), zero_mean=False) < ratio_db - 0.3


def test_si_sdr_equals_torchmetrics():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.audio")
    rng = np.random.default_rng(3)
    for k in range(5):
        ref = _speechlike(8000 + 977 * k, k) + 0.1 * k
        deg = 0.7 * ref + rng.standard_normal(ref.size) * (0.2 + k)
        for zero_mean in (True, False):
            want = tm.scale_invariant_signal_distortion_ratio(
                torch.from_numpy(deg), torch.from_numpy(ref), zero_mean=zero_mean
            ).item()
            assert si_sdr(ref, deg, zero_mean=zero_mean) == pytest.approx(want, abs=1e-9)


def test_si_sdr_adapter_equals_torchmetrics_on_speech():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.audio")
    a = load_clip(str(corpus("ljspeech-32") / "wavs" / "LJ001-0013.wav"))
    x = a.samples
    y = degrade.add_noise(x, degrade.white_noise(x.size, 5), 5.0)
    inp = make_input(y, a.sample_rate, ref=x)
    got = value(plugins.create("si_sdr"), inp)
    want = tm.scale_invariant_signal_distortion_ratio(
        torch.from_numpy(inp.signal(16000).astype(np.float64)),
        torch.from_numpy(inp.reference(16000).astype(np.float64)), zero_mean=True,
    ).item()
    assert got == pytest.approx(want, abs=1e-9)
    # golden: computed once with torchmetrics on this pair (white noise, seed 5, 5 dB)
    assert got == pytest.approx(6.407326, abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), gain=st.floats(1e-3, 1e3), offset=st.floats(-1, 1))
def test_si_sdr_invariant_to_gain_and_offset(seed, gain, offset):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(1000)
    deg = ref + rng.standard_normal(1000) * rng.uniform(0.05, 3)
    base = si_sdr(ref, deg)
    assert si_sdr(ref, gain * deg + offset) == pytest.approx(base, abs=1e-6)
    assert si_sdr(gain * ref + offset, deg) == pytest.approx(base, abs=1e-6)


def test_si_sdr_identical_is_large_and_finite():
    s = _speechlike(4000, 0)
    v = si_sdr(s, s.copy())
    assert np.isfinite(v) and v > 100


def test_si_sdr_zero_energy_is_silent_error():
    s = _speechlike(4000, 0)
    with pytest.raises(SilentAudioError, match="signal has no energy"):
        si_sdr(s, np.full(4000, 0.25))  # a constant is all mean
    with pytest.raises(SilentAudioError, match="reference has no energy"):
        si_sdr(np.zeros(4000), s)
    # through the adapter: a DC-only signal passes decoding checks but has no SI-SDR
    res = score(plugins.create("si_sdr"), make_input(np.full(16000, 0.25, np.float32), 16000,
                                                       ref=s[:4000].astype(np.float32).repeat(4)))
    assert isinstance(res, SilentAudioError)


def test_digital_silence_is_refused_when_decoded():
    with pytest.raises(SilentAudioError):
        LoadedAudio.from_array(np.zeros(16000, np.float32), 16000)


# --- length handling ------------------------------------------------------------------------
def test_match_lengths_trims_small_and_refuses_large():
    a, b = np.arange(1000.0), np.arange(1010.0)
    ra, rb = match_lengths(a, b, 1000, max_diff_s=0.05)
    assert ra.size == rb.size == 1000
    with pytest.raises(LengthMismatchError, match="exceeds the 5 ms"):
        match_lengths(a, b, 1000, max_diff_s=0.005)


@pytest.mark.parametrize("name", ["si_sdr", "stoi", "estoi", "lsd"])
def test_sample_metrics_trim_or_refuse_length_mismatch(name):
    rng = np.random.default_rng(0)
    sr = 16000
    ref = np.convolve(rng.standard_normal(sr * 2), np.hanning(31), "same").astype(np.float32)
    ref *= 0.1
    deg = ref + 0.01 * rng.standard_normal(ref.size).astype(np.float32)
    metric = plugins.create(name)
    same = value(metric, make_input(deg, sr, ref=ref))
    # 10 ms of extra samples at the end: trimmed, same score as the trimmed pair
    longer = np.concatenate([deg, 0.01 * rng.standard_normal(160).astype(np.float32)])
    assert value(metric, make_input(longer, sr, ref=ref)) == pytest.approx(same, abs=1e-9)
    # 200 ms: refused, unless the tolerance is raised
    much_longer = np.concatenate([deg, 0.01 * rng.standard_normal(3200).astype(np.float32)])
    assert isinstance(score(metric, make_input(much_longer, sr, ref=ref)), LengthMismatchError)
    loose = plugins.create(name, {"max_length_diff_s": 0.5})
    # the extra samples are trimmed from the end: exactly the pair scored above
    assert value(loose, make_input(much_longer, sr, ref=ref)) == pytest.approx(same, abs=1e-9)


@pytest.mark.parametrize("name", ["si_sdr", "stoi", "estoi", "lsd", "pesq", "pesq_nb", "mcd", "f0"])
def test_intrusive_metrics_need_a_reference(name):
    x = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    res = score(plugins.create(name), make_input(x, 16000))
    assert isinstance(res, MissingReferenceError)


# --- LSD ------------------------------------------------------------------------------------
def test_lsd_golden_from_definition():
    x = np.random.default_rng(0).standard_normal(16000)
    assert lsd(x, x) == 0.0
    assert lsd(x, 2 * x) == pytest.approx(np.log10(4.0), abs=1e-9)
    assert lsd(x, 0.1 * x) == pytest.approx(2.0, abs=1e-9)


def test_lsd_spectrogram_equals_librosa_stft():
    librosa = pytest.importorskip("librosa")
    x = np.random.default_rng(1).standard_normal(20011)
    want = np.abs(librosa.stft(x, n_fft=2048, hop_length=512, window="hann", center=True)) ** 2
    got = power_spectrogram(x, 2048, 512)
    np.testing.assert_allclose(got, want.T, rtol=1e-9, atol=1e-9 * want.max())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(600, 6000))
def test_lsd_is_symmetric_and_nonnegative(seed, n):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(n), rng.standard_normal(n) * rng.uniform(0.1, 10)
    v = lsd(a, b, n_fft=512, hop=128)
    assert v >= 0
    assert lsd(b, a, n_fft=512, hop=128) == pytest.approx(v, rel=1e-12)


def test_lsd_adapter_on_speech_uses_reference_rate():
    a = load_clip(str(corpus("ljspeech-32") / "wavs" / "LJ001-0013.wav"))
    x = a.samples
    narrow = degrade.band_limit(x, a.sample_rate, 4000.0)
    metric = plugins.create("lsd")
    res = score(metric, make_input(narrow, a.sample_rate, ref=x))
    assert res.extra["sample_rate"] == 22050
    # the definition written with librosa's STFT (independent of our framing)
    librosa = pytest.importorskip("librosa")

    def logp(sig):
        spec = librosa.stft(sig.astype(np.float64), n_fft=2048, hop_length=512, window="hann")
        return np.log10(np.abs(spec) ** 2 + 1e-10)

    want = np.mean(np.sqrt(np.mean((logp(x) - logp(narrow)) ** 2, axis=0)))
    assert res.values["lsd"] == pytest.approx(want, abs=1e-9)
    # golden (Butterworth-8 low-pass at 4 kHz at 22.05 kHz: the empty band sits at the floor)
    assert res.values["lsd"] == pytest.approx(5.100198, abs=1e-5)
    # a degraded signal at another rate is compared at the reference's rate
    at16 = LoadedAudio.from_array(make_input(narrow, a.sample_rate).signal(16000), 16000)
    res16 = score(metric, make_input(at16, ref=x, ref_sr=a.sample_rate))
    assert res16.extra["sample_rate"] == 22050
    assert res16.values["lsd"] > 0
