"""Property tests (Hypothesis) on the numeric cores (issue 12).

For every metric with a numeric core (SI-SDR, LSD, MCD, F0, PESQ wb/nb, STOI, ESTOI), through
its adapter exactly as the runner calls it: on any valid signal (any length from the metric's
minimum duration to 1 s, any rate from 8 to 48 kHz, peak amplitude from -60 dBFS to +6 dBFS,
voiced/noise/chirp/clicks/DC/clipped content) and, for intrusive metrics, any degradation of
the reference (noise at any SNR, gain, low-pass, clipping, an unrelated signal, a few samples
shorter), the metric either returns a finite value inside its declared ``valid_range`` for
every output, or raises a typed :class:`~speechqe.errors.ItemError`. Nothing else.

Identities: SI-SDR of a signal with itself is large and finite; PESQ of identical inputs is the
maximum of its mapping function; MCD and LSD of identical inputs are 0; STOI/ESTOI are 1; F0
errors are 0.

The model-based metrics (DNSMOS, DistillMOS, PLCMOS, speaker similarity, WER/CER) get the same
range property with a few examples in a ``slow`` test (DNSMOS alone takes seconds per clip on
two cores).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from speechqe import plugins
from speechqe.audio import SILENCE_PEAK, LoadedAudio
from speechqe.errors import ItemError
from speechqe.manifest import AudioItem
from speechqe.metric import ItemScore, ScoringInput

RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
FAST = settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow], deadline=None)
SLOWER = settings(max_examples=8, suppress_health_check=[HealthCheck.too_slow], deadline=None)

#: PESQ's mapping functions at the raw score of identical inputs (4.5): ITU-T P.862.2 (wide
#: band) 0.999 + 4 / (1 + exp(-1.3669 x + 3.8224)); P.862.1 (narrow band)
#: 0.999 + 4 / (1 + exp(-1.4945 x + 4.6607)).
PESQ_WB_MAX = 0.999 + 4.0 / (1.0 + math.exp(-1.3669 * 4.5 + 3.8224))
PESQ_NB_MAX = 0.999 + 4.0 / (1.0 + math.exp(-1.4945 * 4.5 + 4.6607))


def synth(kind: str, n: int, sr: int, peak: float, seed: int) -> np.ndarray:
    """A ``(n,)`` float32 signal of ``kind`` at ``sr`` Hz with peak ``peak``."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    if kind == "voiced":  # harmonics with a pitch glide and a syllable envelope
        f0 = rng.uniform(90, 260) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        nh = max(1, min(30, int(sr / 2 / 300)))
        x = sum(np.sin(k * phase) / k for k in range(1, nh + 1))
        x = x * (0.55 - 0.45 * np.cos(2 * np.pi * rng.uniform(2, 5) * t))
    elif kind == "noise":
        x = rng.standard_normal(n)
    elif kind == "chirp":
        f = np.linspace(rng.uniform(50, 500), rng.uniform(500, sr / 2.2), n)
        x = np.sin(2 * np.pi * np.cumsum(f) / sr)
    elif kind == "clicks":
        x = np.zeros(n)
        x[rng.integers(0, n, size=max(1, n // 400))] = rng.choice([-1.0, 1.0], size=max(1, n // 400))
        x += 1e-3 * rng.standard_normal(n)
    elif kind == "dc_tone":
        x = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(80, 2000) * t)
    else:  # clipped
        x = np.clip(3.0 * np.sin(2 * np.pi * rng.uniform(80, 600) * t), -1, 1)
    x = np.asarray(x, dtype=np.float64)
    m = np.max(np.abs(x))
    x = x / m if m > 0 else x
    return (peak * x).astype(np.float32)


KINDS = ("voiced", "noise", "chirp", "clicks", "dc_tone", "clipped")


@st.composite
def signals(draw, min_seconds: float, max_seconds: float = 1.0, rates=RATES, kinds=KINDS):
    sr = draw(st.sampled_from(rates))
    seconds = draw(st.floats(min_value=max(min_seconds, 1 / sr), max_value=max_seconds))
    n = max(int(math.ceil(seconds * sr)), int(math.ceil(min_seconds * sr)), 1)
    kind = draw(st.sampled_from(kinds))
    peak = 10 ** (draw(st.floats(min_value=-60.0, max_value=6.0)) / 20)
    x = synth(kind, n, sr, peak, draw(st.integers(0, 2**32 - 1)))
    assume(np.max(np.abs(x)) > SILENCE_PEAK)  # valid input: not digital silence
    return x, sr


def degrade(ref: np.ndarray, sr: int, how: str, amount: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = ref.astype(np.float64)
    if how == "noise":  # white noise at `amount` dB SNR (-10..40)
        p = np.mean(x**2) if np.any(x) else 1.0
        x = x + rng.standard_normal(x.size) * np.sqrt(p / 10 ** (amount / 10))
    elif how == "gain":
        x = x * 10 ** ((amount - 15) / 20)
    elif how == "lowpass":
        from scipy.signal import butter, sosfilt

        cut = min(0.45 * sr, 300 + 100 * (amount + 10))
        x = sosfilt(butter(4, cut, fs=sr, output="sos"), x)
    elif how == "clip":
        lim = np.max(np.abs(x)) * (0.05 + amount / 50)
        x = np.clip(x, -lim, lim)
    elif how == "other":  # an unrelated signal of the same length
        x = synth("voiced", x.size, sr, float(np.max(np.abs(x))), seed + 1)
    elif how == "shorter":  # a few samples short (the adapters' length tolerance)
        x = x[: max(1, x.size - 1 - int(amount) % 40)]
    return x.astype(np.float32)


@st.composite
def pairs(draw, min_seconds: float, max_seconds: float = 1.0, rates=RATES):
    ref, sr = draw(signals(min_seconds, max_seconds, rates))
    how = draw(st.sampled_from(("noise", "gain", "lowpass", "clip", "other", "shorter", "same")))
    deg = degrade(ref, sr, how, draw(st.floats(-10.0, 40.0)), draw(st.integers(0, 2**31)))
    assume(np.max(np.abs(deg)) > SILENCE_PEAK)
    return ref, deg, sr


def make_input(deg: np.ndarray, sr: int, ref: np.ndarray | None = None,
               text: str | None = None) -> ScoringInput:
    """What the runner hands a metric for an in-memory item (both signals at ``sr``)."""
    audio = LoadedAudio.from_array(deg, sr)
    item = AudioItem(id="item", path="/in-memory/item.wav", system="test", sample_rate=sr,
                     frames=int(deg.size), ref_path=None if ref is None else "/in-memory/ref.wav",
                     text=text)
    return ScoringInput(item=item, audio=audio,
                        ref=None if ref is None else LoadedAudio.from_array(ref, sr))


def _metric(name: str):
    m = plugins.create(name)
    m.ensure_ready()
    return m


def _in_range(metric, result) -> None:
    """A finite value inside each output's declared valid_range, or a typed ItemError."""
    if isinstance(result, ItemError):
        return
    assert isinstance(result, ItemScore), f"{metric.name} returned {result!r}"
    assert set(result.values) | set(result.errors) == set(metric.spec.output_names)
    for name, v in result.values.items():
        lo, hi = metric.spec.output(name).valid_range
        assert math.isfinite(v), f"{name} = {v}"
        assert (lo is None or v >= lo - 1e-9) and (hi is None or v <= hi + 1e-9), \
            f"{name} = {v} outside {(lo, hi)}"


def _score(metric, inp):
    """Score as the runner does; an ItemError is a result, any other exception a failure."""
    try:
        metric.check_input(inp)
        return metric.score_batch([inp])[0]
    except ItemError as exc:
        return exc


# ------------------------------------------------------------------------------------------
# Range: no crash on valid input, values inside valid_range
# ------------------------------------------------------------------------------------------
INTRUSIVE_FAST = ("si_sdr", "lsd", "pesq", "pesq_nb", "stoi", "estoi")


@pytest.mark.parametrize("name", INTRUSIVE_FAST)
def test_intrusive_metric_in_range_or_typed_error(name):
    metric = _metric(name)

    @FAST
    @given(pairs(metric.spec.min_duration or 0.0))
    def prop(p):
        ref, deg, sr = p
        _in_range(metric, _score(metric, make_input(deg, sr, ref=ref)))

    prop()


@pytest.mark.parametrize("name", ("mcd", "f0"))
def test_world_metric_in_range_or_typed_error(name):
    metric = _metric(name)

    @SLOWER
    @given(pairs(metric.spec.min_duration or 0.0, max_seconds=0.6))
    def prop(p):
        ref, deg, sr = p
        _in_range(metric, _score(metric, make_input(deg, sr, ref=ref)))

    prop()


@pytest.mark.slow
@pytest.mark.parametrize("name", ("dnsmos", "distillmos", "plcmos", "speaker_sim", "wer", "cer"))
def test_model_metric_in_range_or_typed_error(name):
    """Model-based metrics (real packaged weights): a few examples each."""
    metric = _metric(name)
    spec = metric.spec

    @settings(max_examples=4, suppress_health_check=list(HealthCheck), deadline=None)
    @given(pairs(spec.min_duration or 0.1, max_seconds=1.2),
           st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=40).filter(str.strip))
    def prop(p, text):
        ref, deg, sr = p
        inp = make_input(deg, sr, ref=ref if spec.needs_reference else None, text=text)
        _in_range(metric, _score(metric, inp))

    prop()


# ------------------------------------------------------------------------------------------
# Identities
# ------------------------------------------------------------------------------------------
@FAST
@given(st.one_of(
    arrays(np.float64, st.integers(2, 64), elements=st.floats(-1, 1, allow_nan=False)),
    st.builds(lambda n, seed: np.random.default_rng(seed).standard_normal(n),
              st.integers(64, 48000), st.integers(0, 2**32 - 1))),
    st.floats(1e-3, 1e3), st.floats(-20.0, 40.0))
def test_si_sdr_of_a_signal_with_itself_is_large_and_finite(x, gain, snr):
    from speechqe.metrics.functional.sisdr import si_sdr

    x = x * gain
    assume(np.max(np.abs(x)) > SILENCE_PEAK and np.ptp(x) > SILENCE_PEAK)  # valid, not silent
    v = si_sdr(x, x)
    # ``eps`` (as torchmetrics adds it) bounds the value: >= 60 dB for any valid signal
    assert math.isfinite(v) and v > 60.0
    # scale invariance: a noisy estimate scores the same at any gain
    noise = np.random.default_rng(2**40 + 1).standard_normal(x.size) * np.std(x) * 10 ** (-snr / 20)
    y = x + noise
    ref_value = si_sdr(x, y)
    assume(x.size >= 16 and ref_value < 80)  # not a scaled copy (eps-dominated)
    assert si_sdr(x, 0.37 * y) == pytest.approx(ref_value, abs=1e-6)


@FAST
@given(signals(0.05, rates=(16000, 22050, 44100, 48000)))
def test_lsd_of_identical_inputs_is_zero(sig):
    x, sr = sig
    metric = _metric("lsd")
    res = _score(metric, make_input(x, sr, ref=x))
    assert isinstance(res, ItemScore) and res.values["lsd"] == 0.0


@SLOWER
@given(signals(0.1, max_seconds=0.6))
def test_mcd_of_identical_inputs_is_zero(sig):
    x, sr = sig
    metric = _metric("mcd")
    res = _score(metric, make_input(x, sr, ref=x))
    assert not isinstance(res, ItemError), res
    assert res.values["mcd"] == 0.0


@SLOWER
@given(signals(0.1, max_seconds=0.6))
def test_f0_errors_of_identical_inputs_are_zero(sig):
    x, sr = sig
    metric = _metric("f0")
    res = _score(metric, make_input(x, sr, ref=x))
    assert not isinstance(res, ItemError), res
    for name in ("f0_rmse_cents", "vuv_error", "f0_gpe"):
        if name in res.values:
            assert res.values[name] == 0.0, name
    if "f0_corr" in res.values:
        assert res.values["f0_corr"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name, maximum", [("pesq", PESQ_WB_MAX), ("pesq_nb", PESQ_NB_MAX)])
def test_pesq_of_identical_inputs_is_its_maximum(name, maximum):
    metric = _metric(name)
    scored = []

    # speech-like, aperiodic content: on a strictly periodic signal (a clipped sine) PESQ's
    # delay search may align identical inputs one period apart and score below the maximum
    @FAST
    @given(signals(0.25, max_seconds=1.0, rates=(8000, 16000, 22050, 48000),
                   kinds=("voiced", "noise", "chirp")))
    def prop(sig):
        x, sr = sig
        res = _score(metric, make_input(x, sr, ref=x))
        if isinstance(res, ItemError):  # e.g. no utterance found in a click train
            return
        scored.append(res.values[name])
        assert res.values[name] == pytest.approx(maximum, abs=1e-4)

    prop()
    assert scored, "no example was scored"


@pytest.mark.parametrize("name", ["stoi", "estoi"])
def test_stoi_of_identical_inputs_is_one(name):
    metric = _metric(name)

    @FAST
    @given(signals(0.5, max_seconds=1.0))
    def prop(sig):
        x, sr = sig
        res = _score(metric, make_input(x, sr, ref=x))
        if not isinstance(res, ItemError):  # fewer than 30 speech frames is a typed error
            assert res.values[name] == pytest.approx(1.0, abs=1e-6)

    prop()
