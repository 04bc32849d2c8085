"""PESQ (wb, nb), STOI and ESTOI: parity with direct ``pesq``/``pystoi`` calls on the same
arrays, golden values on real speech, and the library's failures as typed item errors."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import corpus
from metric_helpers import load_clip, make_input, score, value
from speechqe import degrade
from speechqe.audio import LoadedAudio
from speechqe.errors import MetricComputationError, TooShortError
from speechqe import plugins
from speechqe.metrics.functional.pesq import pesq as pesq_core
from speechqe.metrics.functional.stoi import stoi as stoi_core

# Golden values, computed once with pesq 0.0.4 / pystoi 0.4.1 called directly on the views
# LoadedAudio.at(rate) of LJ001-0001 (22.05 kHz) and its degraded copies made at 22.05 kHz.
GOLDEN = {
    # white noise, seed 0, 10 dB
    "white10": {"pesq": 1.1098828315734863, "pesq_nb": 1.7572050094604492,
                "stoi": 0.9151887789999177, "estoi": 0.7242591600084495},
    # white noise, seed 0, 0 dB
    "white0": {"pesq": 1.0251661539077759, "pesq_nb": 1.3378119468688965,
               "stoi": 0.7574170795009848, "estoi": 0.4693921969618533},
    # four-talker babble of LJ001-0002..0005, seed 0, 20 dB
    "babble20": {"pesq": 2.2938170433044434, "pesq_nb": 3.003077983856201,
                 "stoi": 0.9829714735323053, "estoi": 0.9281366437706413},
}
RATES = {"pesq": 16000, "pesq_nb": 8000, "stoi": 10000, "estoi": 10000}


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


def _direct(name: str, ref: np.ndarray, deg: np.ndarray) -> float:
    if name.startswith("pesq"):
        from pesq import pesq

        return pesq(RATES[name], ref, deg, "nb" if name == "pesq_nb" else "wb")
    from pystoi import stoi

    return stoi(ref, deg, RATES[name], extended=name == "estoi")


@pytest.mark.parametrize("condition", sorted(GOLDEN))
@pytest.mark.parametrize("name", ["pesq", "pesq_nb", "stoi", "estoi"])
def test_equals_library_and_golden(name, condition):
    ref, deg = _pair(condition)
    metric = plugins.create(name)
    assert metric.spec.sample_rate == RATES[name]
    got = value(metric, make_input(deg, ref=ref))
    sr = RATES[name]
    assert got == pytest.approx(_direct(name, ref.at(sr), deg.at(sr)), abs=1e-6)
    assert got == pytest.approx(GOLDEN[condition][name], abs=1e-6)


def test_golden_values_order_by_quality():
    for name in RATES:
        g = [GOLDEN[c][name] for c in ("babble20", "white10", "white0")]
        assert g[0] > g[1] > g[2], name


def test_stoi_at_10k_is_close_to_pystoi_at_16k():
    """The documented cost of feeding 10 kHz (one torchaudio resampling) instead of letting
    pystoi resample 16 kHz input itself: differences of ~1e-4 (STOI) and ~1e-3 (ESTOI)."""
    from pystoi import stoi

    ref, deg = _pair("white10")
    for extended, tol in ((False, 5e-4), (True, 2e-3)):
        at10 = stoi(ref.at(10000), deg.at(10000), 10000, extended=extended)
        at16 = stoi(ref.at(16000), deg.at(16000), 16000, extended=extended)
        assert abs(at10 - at16) < tol


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
