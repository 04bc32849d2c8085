"""PESQ (wb, nb), STOI and ESTOI: parity with direct ``pesq``/``pystoi`` calls on the same
arrays, golden values on real speech, and the library's failures as typed item errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import corpus
from metric_helpers import load_clip, make_input, score, value
from speechqe import degrade
from speechqe.audio import LoadedAudio
from speechqe.errors import ConfigError, MetricComputationError, TooShortError
from speechqe import plugins
from speechqe.metrics.functional.pesq import pesq as pesq_core
from speechqe.metrics.functional.stoi import stoi as stoi_core

# Golden values, computed once with pesq 0.0.4 / pystoi 0.4.1 called directly on
# LJ001-0001 (22.05 kHz) and its degraded copies made at 22.05 kHz: PESQ on the views
# LoadedAudio.at(rate), STOI/ESTOI on the 22.05 kHz signals (pystoi resamples them itself).
GOLDEN = {
    # white noise, seed 0, 10 dB
    "white10": {"pesq": 1.1098828315734863, "pesq_nb": 1.7572050094604492,
                "stoi": 0.9152975940760185, "estoi": 0.7235343629831491},
    # white noise, seed 0, 0 dB
    "white0": {"pesq": 1.0251661539077759, "pesq_nb": 1.3378119468688965,
               "stoi": 0.7579127527015544, "estoi": 0.46955737397334746},
    # four-talker babble of LJ001-0002..0005, seed 0, 20 dB
    "babble20": {"pesq": 2.2938170433044434, "pesq_nb": 3.003077983856201,
                 "stoi": 0.9829251136988313, "estoi": 0.9277859366881819},
}
#: The rate each metric is given (None: the input's own rate).
RATES = {"pesq": 16000, "pesq_nb": 8000, "stoi": None, "estoi": None}


def _pair(condition: str) -> tuple[LoadedAudio, LoadedAudio]:
    wavs = corpus("ljspeech-32") / "wavs"
    a = load_clip(str(wavs / "LJ001-0001.wav"))
    x = a.samples
    if condition.startswith("white"):
        noise = degrade.white_noise(x.size, 0)
    else:
        talkers = [load_clip(str(wavs / f"LJ001-000{k}.wav")).samples for k in (2, 3, 4, 5)]
        noise = degrade.babble(talkers, x.size, 0)
    snr = float(condition.removeprefix("white").removeprefix("babble"))
    return a, LoadedAudio.from_array(degrade.add_noise(x, noise, snr), a.sample_rate)


def _direct(name: str, ref: np.ndarray, deg: np.ndarray, sr: int) -> float:
    if name.startswith("pesq"):
        from pesq import pesq

        return pesq(sr, ref, deg, "nb" if name == "pesq_nb" else "wb")
    from pystoi import stoi

    return stoi(ref, deg, sr, extended=name == "estoi")


@pytest.mark.parametrize("condition", sorted(GOLDEN))
@pytest.mark.parametrize("name", ["pesq", "pesq_nb", "stoi", "estoi"])
def test_equals_library_and_golden(name, condition):
    ref, deg = _pair(condition)
    metric = plugins.create(name)
    assert metric.spec.sample_rate == RATES[name]
    got = value(metric, make_input(deg, ref=ref))
    sr = RATES[name] or ref.sample_rate
    assert got == pytest.approx(_direct(name, ref.at(sr), deg.at(sr), sr), abs=1e-6)
    assert got == pytest.approx(GOLDEN[condition][name], abs=1e-6)


@pytest.mark.parametrize("name", ["pesq", "pesq_nb", "stoi", "estoi"])
def test_scores_order_by_quality(name):
    """Scored by the metric: the clean clip against itself, then babble at 20 dB, white noise
    at 10 dB and at 0 dB, in strictly decreasing order (and the clean pair at the top of the
    scale: PESQ's maximum, STOI 1)."""
    ref, _ = _pair("white10")
    metric = plugins.create(name)
    got = [value(metric, make_input(ref, ref=ref))]
    got += [value(metric, make_input(_pair(c)[1], ref=ref)) for c in ("babble20", "white10", "white0")]
    assert got == sorted(got, reverse=True) and len(set(got)) == 4, got
    top = {"pesq": 4.64, "pesq_nb": 4.54, "stoi": 1.0, "estoi": 1.0}[name]
    assert got[0] == pytest.approx(top, abs=0.01)


@pytest.mark.parametrize("name", ["stoi", "estoi"])
@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
def test_stoi_default_equals_pystoi_at_the_input_rate(name, rate):
    """The default equals ``pystoi.stoi(ref, deg, fs)`` on the signals as given, at any input
    rate (pystoi does its own resampling to 10 kHz), to 1e-6."""
    from pystoi import stoi

    ref, deg = _pair("white10")
    r, d = ref.at(rate), deg.at(rate)
    got = value(plugins.create(name), make_input(d, rate, ref=r))
    assert got == pytest.approx(stoi(r, d, rate, extended=name == "estoi"), abs=1e-6)


def test_stoi_signal_at_another_rate_is_brought_to_the_reference_rate():
    """A 16 kHz signal against a 22.05 kHz reference: the runner's resampler brings the
    signal to the reference's rate, and the value is pystoi's on that pair."""
    from pystoi import stoi

    ref, deg = _pair("white10")
    got = value(plugins.create("stoi"), make_input(deg.at(16000), 16000, ref=ref))
    d = LoadedAudio.from_array(deg.at(16000), 16000).at(ref.sample_rate)
    n = min(d.size, ref.samples.size)  # the resampled length rounds up: trimmed at the end
    assert got == pytest.approx(stoi(ref.samples[:n], d[:n], ref.sample_rate), abs=1e-6)


@pytest.mark.parametrize("name", ["stoi", "estoi"])
def test_stoi_runner_resampling_is_an_opt_in_with_its_documented_difference(name):
    """``resample='runner'`` (the runner resamples to 10 kHz, pystoi skips its own
    resampling) equals pystoi at 10 kHz on those signals, is a different model id, and stays
    within the documented difference of the default (2e-3 STOI, 5e-3 ESTOI)."""
    from pystoi import stoi

    ref, deg = _pair("white10")
    fast = plugins.create(name, {"resample": "runner"})
    default = plugins.create(name)
    assert fast.model_id() != default.model_id()
    got = value(fast, make_input(deg, ref=ref))
    extended = name == "estoi"
    assert got == pytest.approx(stoi(ref.at(10000), deg.at(10000), 10000, extended=extended),
                                abs=1e-6)
    assert abs(got - GOLDEN["white10"][name]) < (5e-3 if extended else 2e-3)
    with pytest.raises(ConfigError, match=re.escape("resample: Input should be 'pystoi' or 'runner' (got 'scipy')")):
        plugins.create(name, {"resample": "scipy"})


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("name,rate", [("pesq", 16000), ("pesq_nb", 8000)])
def test_pesq_library_errors_become_metric_errors(name, rate):
    mode = "nb" if name == "pesq_nb" else "wb"
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(rate)).astype(np.float32)
    # digital silence on both sides: the C code finds no utterance (NoUtterancesError)
    with pytest.raises(MetricComputationError, match="NoUtterancesError"):
        pesq_core(np.zeros(rate, np.float32), np.zeros(rate, np.float32), rate, mode)
    # a degraded signal with no level: the wrapper cannot convert the C result (ValueError)
    with pytest.raises(MetricComputationError, match="PESQ failed"):
        pesq_core(noise, np.zeros(rate, np.float32), rate, mode)
    # under 1/4 s (BufferTooShortError) when called directly ...
    with pytest.raises(MetricComputationError, match="BufferTooShortError"):
        pesq_core(noise[: rate // 5], noise[: rate // 5], rate, mode)
    # ... and refused before the library by the contract's min_duration
    short = noise[: rate // 5]
    res = score(plugins.create(name), make_input(short, rate, ref=short))
    assert isinstance(res, TooShortError)


def test_pesq_error_is_never_a_score(monkeypatch):
    """Whatever PesqError the library raises becomes a metric_failed record."""
    import pesq as pesq_lib

    def boom(*args, **kwargs):
        raise pesq_lib.NoUtterancesError(b"No utterances detected")

    monkeypatch.setattr(pesq_lib, "pesq", boom)
    x = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    res = score(plugins.create("pesq"), make_input(x, 16000, ref=x))
    assert isinstance(res, MetricComputationError)
    assert res.code == "metric_failed" and "No utterances detected" in str(res)


@pytest.mark.parametrize("extended", [False, True])
def test_stoi_too_few_speech_frames_is_an_error(extended):
    """pystoi returns 1e-5 when fewer than 30 frames survive its silence removal; we refuse."""
    rng = np.random.default_rng(0)
    x = (1e-4 * rng.standard_normal(10000)).astype(np.float32)  # 1 s of very quiet noise ...
    x[:2000] = 0.5 * rng.standard_normal(2000)  # ... after 0.2 s of loud signal
    with pytest.warns(RuntimeWarning, match="Not enough STFT frames"):
        with pytest.raises(MetricComputationError, match="at least 30 frames"):
            stoi_core(x, x.copy(), 10000, extended=extended)


def test_pesq_refuses_a_reference_below_its_rate():
    """An 8 kHz reference cannot anchor wide-band PESQ; an 8 kHz signal against a 16 kHz
    reference can (the lost band is what it measures)."""
    from speechqe.errors import SampleRateError

    ref, deg = _pair("white10")
    ref8 = LoadedAudio.from_array(ref.at(8000), 8000)
    assert isinstance(score(plugins.create("pesq"), make_input(deg, ref=ref8)), SampleRateError)
    assert value(plugins.create("pesq_nb"), make_input(deg, ref=ref8)) > 1.0
    pesq = plugins.create("pesq")
    clean = value(pesq, make_input(ref, ref=ref))
    assert value(pesq, make_input(ref8, ref=ref)) < clean - 0.5  # narrow-band speech is penalised


def test_stoi_contract_min_duration():
    x = (0.1 * np.random.default_rng(0).standard_normal(3000)).astype(np.float32)
    res = score(plugins.create("stoi"), make_input(x, 10000, ref=x))
    assert isinstance(res, TooShortError)
