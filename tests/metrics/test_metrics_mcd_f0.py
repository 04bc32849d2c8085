"""MCD and F0: the DTW against librosa, the SPTK mel-cepstrum against an independently built
warped cepstrum, MCD against an independent implementation, analytic golden values, golden
values on real speech, the shared per-item analysis, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import corpus
from metric_helpers import load_clip, make_input, score, value
from speechqe import degrade
from speechqe.audio import LoadedAudio, resample
from speechqe.errors import LengthMismatchError, MetricComputationError
from speechqe import plugins
from speechqe.metrics.functional import mcd as mcd_core
from speechqe.metrics.functional import world
from speechqe.metrics.functional.dtw import dtw
from speechqe.metrics.functional.f0 import f0_scores, in_order_pairs

SR = 16000


# --- DTW ------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), m=st.integers(1, 40))
def test_dtw_equals_librosa(seed, n, m):
    librosa = pytest.importorskip("librosa")
    cost = np.random.default_rng(seed).random((n, m))
    total, path = dtw(cost)
    acc, wp = librosa.sequence.dtw(C=cost)
    assert total == pytest.approx(acc[-1, -1], rel=1e-12)
    np.testing.assert_array_equal(path, wp[::-1])
    assert cost[path[:, 0], path[:, 1]].sum() == pytest.approx(total, rel=1e-12)


def test_dtw_path_is_monotone_and_complete():
    cost = np.random.default_rng(0).random((300, 200))
    _, path = dtw(cost)
    assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (299, 199)
    steps = np.diff(path, axis=0)
    assert set(map(tuple, steps)) <= {(0, 1), (1, 0), (1, 1)}


# --- mel-cepstrum and MCD, independently ----------------------------------------------------
def _warped_cepstrum(sp: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """The mel-cepstrum from its definition, built differently from SPTK's sp2mc/freqt: the
    log amplitude envelope is resampled on a uniform grid of the *warped* frequency (through
    the inverse all-pass map) and cosine-transformed by numerical integration, so that
    ``log|H(w~)| = sum_m c_m cos(m w~)``."""
    bins = np.linspace(0.0, np.pi, sp.shape[1])
    w_warped = np.linspace(0.0, np.pi, 8192)
    w = w_warped + 2 * np.arctan(-alpha * np.sin(w_warped) / (1 + alpha * np.cos(w_warped)))
    log_amp = 0.5 * np.log(sp)
    resampled = np.stack([np.interp(w, bins, row) for row in log_amp])
    # trapezoidal rule as a matrix: c = resampled @ (weights * cos(m w~)) / pi
    weights = np.full(w_warped.size, w_warped[1] - w_warped[0])
    weights[[0, -1]] *= 0.5
    basis = np.cos(np.outer(w_warped, np.arange(order + 1))) * weights[:, None]
    c = resampled @ basis / np.pi
    c[:, 1:] *= 2.0
    return c


def _independent_mcd(ref: np.ndarray, deg: np.ndarray) -> float:
    """MCD from the definition with the warped cepstrum above and librosa's DTW."""
    librosa = pytest.importorskip("librosa")
    import pyworld as pw
    from scipy.spatial.distance import cdist

    p = world.WorldParams()

    def mcep(x):
        x = x.astype(np.float64)
        f0, t = pw.harvest(x, SR, f0_floor=p.f0_floor, f0_ceil=p.f0_ceil, frame_period=5.0)
        sp = pw.cheaptrick(x, f0, t, SR, f0_floor=p.f0_floor)
        return _warped_cepstrum(sp, 24, 0.41)[:, 1:]

    a, b = mcep(ref), mcep(deg)
    _, wp = librosa.sequence.dtw(C=cdist(a, b))
    d = a[wp[:, 0]] - b[wp[:, 1]]
    return float(np.mean(10 / np.log(10) * np.sqrt(2 * np.sum(d * d, axis=1))))


@pytest.fixture(scope="module")
def clip():
    """LJ001-0013 (2.6 s, 22.05 kHz) and two degraded versions: white noise at 10 dB
    (seed 3) and the same clip played 5 % faster (resampled 22050 -> 21000 Hz, labelled 22050:
    shorter, F0 up by 1200 log2(1.05) = 84.5 cents), like a TTS output of another length."""
    a = load_clip(str(corpus("ljspeech-32") / "wavs" / "LJ001-0013.wav"))
    noisy = LoadedAudio.from_array(
        degrade.add_noise(a.samples, degrade.white_noise(a.samples.size, 3), 10.0), a.sample_rate
    )
    faster = LoadedAudio.from_array(resample(a.samples, 22050, 21000), 22050)
    return a, noisy, faster


def test_sptk_mcep_equals_independent_warped_cepstrum(clip):
    import pysptk
    import pyworld as pw

    x = clip[0].at(SR).astype(np.float64)
    f0, t = pw.dio(x, SR, frame_period=5.0)
    sp = pw.cheaptrick(x, pw.stonemask(x, f0, t, SR), t, SR)
    ours = pysptk.sp2mc(sp, 24, world.alpha_for(SR))
    theirs = _warped_cepstrum(sp, 24, 0.41)
    # c_0..c_24 agree to ~1e-3 (nepers) while the coefficients span +-8
    assert np.abs(ours - theirs).max() < 5e-3


def test_our_sp2mc_equals_pysptk_bit_for_bit(clip):
    """The batched sp2mc (one log and inverse FFT for all frames, SPTK's freqt per frame)
    gives pysptk.sp2mc's numbers exactly, on real speech and at two orders/alphas."""
    import pysptk
    import pyworld as pw

    x = clip[1].at(SR).astype(np.float64)
    f0, t = pw.harvest(x, SR, frame_period=5.0)
    sp = pw.cheaptrick(x, f0, t, SR)
    for order, alpha in ((24, 0.41), (39, 0.455)):
        assert np.array_equal(world.sp2mc(sp, order, alpha), pysptk.sp2mc(sp, order, alpha))


# Golden MCD values (dB), computed once with the metric (default params: Harvest, 16 kHz,
# order 24, alpha 0.41, c0 excluded, DTW) and checked against the independent path below.
MCD_GOLDEN = {"noisy": 12.625105, "faster": 3.822282}


@pytest.mark.parametrize("which", ["noisy", "faster"])
def test_mcd_golden_and_equal_to_independent_implementation(clip, which):
    ref, deg = clip[0], clip[1] if which == "noisy" else clip[2]
    inp = make_input(deg, ref=ref)
    got = value(plugins.create("mcd"), inp)
    assert got == pytest.approx(MCD_GOLDEN[which], abs=1e-5)
    assert got == pytest.approx(_independent_mcd(inp.reference(SR), inp.signal(SR)), rel=2e-3)


def test_mcd_analytic_gain(clip):
    """A gain g moves only c_0 (by ln g), so MCD without c_0 is 0 and with c_0 it is
    (10 / ln 10) sqrt(2) |ln g|."""
    ref = clip[0]
    half = LoadedAudio.from_array(ref.samples * 0.5, ref.sample_rate)
    inp = make_input(half, ref=ref)
    assert value(plugins.create("mcd"), inp) == pytest.approx(0.0, abs=1e-5)
    with_c0 = value(plugins.create("mcd", {"include_c0": True}), inp)
    assert with_c0 == pytest.approx(mcd_core.MCD_CONSTANT * np.log(2.0), abs=1e-5)
    assert mcd_core.MCD_CONSTANT == pytest.approx(6.141851463713754, rel=1e-15)


def test_mcd_identical_is_zero_and_noise_orders(clip):
    ref, noisy, _ = clip
    assert value(plugins.create("mcd", {"f0_method": "dio"}), make_input(ref, ref=ref)) == 0.0
    noisier = LoadedAudio.from_array(
        degrade.add_noise(ref.samples, degrade.white_noise(ref.samples.size, 3), 0.0), 22050
    )
    m = plugins.create("mcd", {"f0_method": "dio"})
    assert value(m, make_input(noisier, ref=ref)) > value(m, make_input(noisy, ref=ref)) > 1.0


# --- F0 ---------------------------------------------------------------------------------------
def _harmonic(f0: np.ndarray, n_harmonics: int = 10) -> np.ndarray:
    phase = 2 * np.pi * np.cumsum(f0) / SR
    return (0.1 * sum(np.sin(h * phase) / h for h in range(1, n_harmonics + 1))).astype(np.float32)


def test_f0_analytic_shift_on_synthetic_voice():
    """A harmonic tone with vibrato and its copy 50 cents higher (equal lengths, no
    alignment): RMSE ~50 cents, correlation ~1, no voicing errors."""
    t = np.arange(2 * SR) / SR
    f = 150 + 20 * np.sin(2 * np.pi * 3 * t)
    ref, deg = _harmonic(f), _harmonic(f * 2 ** (50 / 1200))
    res = score(plugins.create("f0", {"align": "none"}), make_input(deg, SR, ref=ref))
    assert res.values["f0_rmse_cents"] == pytest.approx(50.0, abs=2.0)
    assert res.values["f0_corr"] > 0.999
    assert res.values["vuv_error"] == 0.0
    assert res.extra["voiced_both"] == res.extra["frames"] == 401


def test_f0_voicing_error_counts():
    """The last 40 % of the signal replaced by quiet noise: those frames are unvoiced in the
    signal only, so ~40 % of frame pairs disagree."""
    t = np.arange(2 * SR) / SR
    ref = _harmonic(150 + 20 * np.sin(2 * np.pi * 3 * t))
    deg = ref.copy()
    cut = int(1.2 * SR)
    deg[cut:] = 0.01 * np.random.default_rng(0).standard_normal(deg.size - cut)
    res = score(plugins.create("f0", {"align": "none", "f0_method": "dio"}),
                make_input(deg, SR, ref=ref))
    e = res.extra
    assert res.values["vuv_error"] == pytest.approx(0.4, abs=0.02)
    assert e["voiced_both"] <= min(e["voiced_ref"], e["voiced_deg"])
    assert e["voiced_deg"] < e["voiced_ref"] <= e["frames"]
    assert res.values["vuv_error"] == pytest.approx(
        (e["voiced_ref"] + e["voiced_deg"] - 2 * e["voiced_both"]) / e["frames"])


def test_f0_scores_from_definition():
    f_ref = np.array([0, 100, 200, 0, 110, 120.0])
    f_deg = np.array([0, 200, 200, 90, 0, 240.0])
    s = f0_scores(f_ref, f_deg, in_order_pairs(6, 6))
    assert (s.frames, s.voiced_ref, s.voiced_deg, s.voiced_both) == (6, 4, 4, 3)
    assert s.vuv_error == pytest.approx(2 / 6)
    assert s.f0_rmse_cents == pytest.approx(np.sqrt((1200**2 + 0 + 1200**2) / 3))
    assert s.f0_corr == pytest.approx(np.corrcoef([100, 200, 120], [200, 200, 240])[0, 1])
    assert s.f0_gpe == pytest.approx(2 / 3)  # 100->200 and 120->240 deviate by 100%
    near = f0_scores(np.array([100.0, 100.0]), np.array([119.0, 121.0]), in_order_pairs(2, 2))
    assert near.f0_gpe == pytest.approx(0.5)  # 19% is not gross, 21% is


# Golden F0 values for the 5 % faster clip (DTW on mel-cepstra, Harvest). They equal, to
# float rounding, the independent derivation in ``_independent_f0`` (pyworld called directly,
# the warped cepstrum built here, librosa's DTW, the scores written out from their
# definitions), which the test recomputes. The true shift is 84.5 cents; Harvest's occasional
# octave errors on either side raise the RMSE.
F0_GOLDEN = {"f0_rmse_cents": 110.066143, "f0_corr": 0.993308, "vuv_error": 0.034816,
             "f0_gpe": 0.006881}


def _independent_f0(ref: np.ndarray, deg: np.ndarray) -> tuple[dict[str, float], dict[str, int]]:
    """F0 scores without the metric's code: Harvest F0 and CheapTrick envelopes from pyworld,
    the warped cepstrum above (c_1..c_24), librosa's DTW on their Euclidean distances, then
    over the aligned pairs: RMSE of 1200 log2(f_deg / f_ref) and Pearson r (Hz) where both are
    voiced, the fraction of pairs whose voicing differs, and the fraction of voiced pairs off by
    more than 20 %."""
    librosa = pytest.importorskip("librosa")
    import pyworld as pw
    from scipy.spatial.distance import cdist

    def analyse(x):
        x = x.astype(np.float64)
        f0, t = pw.harvest(x, SR, f0_floor=71.0, f0_ceil=800.0, frame_period=5.0)
        sp = pw.cheaptrick(x, f0, t, SR, f0_floor=71.0)
        return f0, _warped_cepstrum(sp, 24, 0.41)[:, 1:]

    (f_ref, c_ref), (f_deg, c_deg) = analyse(ref), analyse(deg)
    _, wp = librosa.sequence.dtw(C=cdist(c_ref, c_deg))
    r, d = f_ref[wp[::-1, 0]], f_deg[wp[::-1, 1]]
    vr, vd = r > 0, d > 0
    both = vr & vd
    cents = 1200.0 * np.log2(d[both] / r[both])
    values = {"f0_rmse_cents": float(np.sqrt(np.mean(cents ** 2))),
              "f0_corr": float(np.corrcoef(r[both], d[both])[0, 1]),
              "vuv_error": float(np.mean(vr != vd)),
              "f0_gpe": float(np.mean(np.abs(d[both] / r[both] - 1.0) > 0.2))}
    counts = {"frames": len(wp), "voiced_ref": int(vr.sum()), "voiced_deg": int(vd.sum()),
              "voiced_both": int(both.sum())}
    return values, counts


def test_f0_golden_on_speech_with_dtw_equals_independent_derivation(clip):
    ref, _, faster = clip
    inp = make_input(faster, ref=ref)
    res = score(plugins.create("f0"), inp)
    theirs, counts = _independent_f0(inp.reference(SR), inp.signal(SR))
    for k, v in F0_GOLDEN.items():
        assert theirs[k] == pytest.approx(v, abs=1e-6), k  # the pins are the independent values
        assert res.values[k] == pytest.approx(theirs[k], abs=1e-9), k
    assert res.values["f0_rmse_cents"] > 84.0  # never below the true shift here
    assert res.extra == counts == {"frames": 517, "voiced_ref": 436, "voiced_deg": 454,
                                   "voiced_both": 436}


def test_mcd_and_f0_share_one_analysis_and_one_path(clip, monkeypatch):
    calls = {"analyse": 0, "dtw": 0}
    real_analyse, real_path = world.analyse, mcd_core.dtw_path

    def counting_analyse(*a, **k):
        calls["analyse"] += 1
        return real_analyse(*a, **k)

    def counting_path(*a, **k):
        calls["dtw"] += 1
        return real_path(*a, **k)

    monkeypatch.setattr(world, "analyse", counting_analyse)
    monkeypatch.setattr(mcd_core, "dtw_path", counting_path)
    ref, _, faster = clip
    inp = make_input(faster, ref=ref)
    params = {"f0_method": "dio"}
    mcd_value = value(plugins.create("mcd", params), inp)
    f0_value = value(plugins.create("f0", params), inp)
    assert calls == {"analyse": 2, "dtw": 1}
    # in the other order, on a fresh item: the same numbers, again one analysis each
    fresh = make_input(faster, ref=ref)
    assert value(plugins.create("f0", params), fresh) == f0_value
    assert value(plugins.create("mcd", params), fresh) == mcd_value
    assert calls == {"analyse": 4, "dtw": 2}
    # different analysis settings do not share
    value(plugins.create("f0", {"f0_method": "dio", "frame_period_ms": 10.0}), inp)
    assert calls == {"analyse": 6, "dtw": 3}


# --- bad input ------------------------------------------------------------------------------
def test_f0_unvoiced_input_fails_rmse_and_corr_but_keeps_vuv():
    rng = np.random.default_rng(0)
    a = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    b = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    metric = plugins.create("f0", {"f0_method": "dio", "align": "none"})
    res = score(metric, make_input(b, SR, ref=a))
    assert set(res.values) == {"vuv_error"} and 0.0 <= res.values["vuv_error"] <= 1.0
    assert set(res.errors) == {"f0_rmse_cents", "f0_corr", "f0_gpe"}
    assert all(isinstance(e, MetricComputationError) and "voiced in both" in str(e)
               for e in res.errors.values())


def test_unaligned_lengths_need_dtw(clip):
    ref, _, faster = clip
    for name in ("f0", "mcd"):
        res = score(plugins.create(name, {"align": "none", "f0_method": "dio"}),
                    make_input(faster, ref=ref))
        assert isinstance(res, LengthMismatchError), name


def test_world_params_are_validated():
    from speechqe.errors import ConfigError

    with pytest.raises(ConfigError):
        plugins.create("f0", {"align": "nearest"})
    with pytest.raises(ConfigError):
        plugins.create("mcd", {"f0_method": "yin"})
    with pytest.raises(ConfigError):
        plugins.create("mcd", {"mcep_order": 24, "window": "hann"})
