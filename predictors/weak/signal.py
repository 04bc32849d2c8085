"""Cheap signal descriptors of degradation, a weak feature set (``source: signal``).

Each item gives :data:`NAMES` (in that order), computed from its 16 kHz signal with numpy and
scipy in a few milliseconds per second of audio. They describe what listeners hear in degraded
speech; none is a quality score by itself:

* **bandwidth**: the frequencies below which 95% and 99% of the active frames' long-term
  power lies (spectral roll-off, as ``librosa.feature.spectral_rolloff`` defines it per
  frame), and the highest frequency whose long-term level is within 50 dB of the peak, all in
  kHz;
* **spectral flatness** (Wiener entropy, geometric over arithmetic mean of the power
  spectrum, as ``librosa.feature.spectral_flatness`` with ``amin=1e-10``): mean over active
  frames and over pauses (the noise floor's whiteness), and its standard deviation;
* **spectral tilt**: slope of the long-term level of active frames in dB per octave, fitted
  between 100 Hz and 7.5 kHz;
* **SNR estimate**: the spread of frame energies, 95th minus 10th percentile in dB (a
  percentile estimator in the spirit of energy-distribution SNR estimates; pauses carry the
  noise floor), and the 10th percentile relative to the peak frame;
* **clipping**: the share of samples within 0.1% of the signal's peak (a flat top of the
  amplitude histogram; clean speech has a handful of such samples, clipped speech many) and
  ``log2`` of the number of distinct sample values at 16-bit resolution (coarse quantisation);
* **voicing**: the share of active frames whose normalised autocorrelation has a peak above
  0.5 at a lag of 60-400 Hz, and the mean of that peak over active frames (a harmonicity
  measure that noise and distortion lower);
* **level**: active level in dBFS and the share of active frames.

Frames: 32 ms Hann windows, 16 ms hop. Active frames: energy within 30 dB of the 95th
percentile frame.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000

NAMES = (
    "rolloff95_khz", "rolloff99_khz", "band_edge_khz",
    "flatness_active", "flatness_pause", "flatness_std",
    "tilt_db_per_octave",
    "snr_estimate_db", "floor_db",
    "clip_share", "log2_levels",
    "voiced_share", "periodicity",
    "active_level_dbfs", "active_share",
)


def _frames(x: np.ndarray, n: int, hop: int) -> np.ndarray:
    if x.size < n:
        x = np.pad(x, (0, n - x.size))
    count = 1 + (x.size - n) // hop
    idx = np.arange(n)[None, :] + hop * np.arange(count)[:, None]
    return x[idx]


def signal_features(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The descriptors of :data:`NAMES` for mono signal ``x`` (float, ``[-1, 1]``) at
    ``sample_rate`` Hz -> float32 ``(len(NAMES),)``.

    Raises:
        ValueError: an empty or non-finite signal.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError("signal features need a non-empty, finite signal")
    sr = int(sample_rate)
    n = int(round(0.032 * sr))
    hop = n // 2
    fr = _frames(x, n, hop)
    energy_db = 10 * np.log10(np.mean(fr ** 2, axis=1) + 1e-12)
    p95 = float(np.percentile(energy_db, 95))
    active = energy_db > p95 - 30.0
    pause = ~active
    win = np.hanning(n)
    spec = np.abs(np.fft.rfft(fr * win, axis=1)) ** 2  # (frames, bins)
    freqs = np.fft.rfftfreq(n, 1.0 / sr)

    # bandwidth (long-term spectrum of active frames)
    ltas = spec[active].mean(axis=0)
    cum = np.cumsum(ltas)
    total = cum[-1] if cum[-1] > 0 else 1.0
    roll95 = freqs[min(np.searchsorted(cum, 0.95 * total), len(freqs) - 1)]
    roll99 = freqs[min(np.searchsorted(cum, 0.99 * total), len(freqs) - 1)]
    ltas_db = 10 * np.log10(ltas + 1e-20)
    above = np.nonzero(ltas_db > ltas_db.max() - 50.0)[0]
    edge = freqs[above.max()] if above.size else 0.0

    # spectral flatness per frame (librosa's definition, amin = 1e-10 on the power spectrum)
    p = np.maximum(spec, 1e-10)
    flat = np.exp(np.mean(np.log(p), axis=1)) / np.mean(p, axis=1)
    flat_active = float(flat[active].mean())
    flat_pause = float(flat[pause].mean()) if pause.any() else flat_active
    flat_std = float(flat.std())

    # spectral tilt in dB/octave, 100 Hz - 7.5 kHz
    band = (freqs >= 100) & (freqs <= min(7500, sr / 2 - 1))
    tilt = float(np.polyfit(np.log2(freqs[band]), ltas_db[band], 1)[0]) if band.sum() > 2 else 0.0

    # SNR estimate
    p10 = float(np.percentile(energy_db, 10))
    snr_est = p95 - p10
    floor = p10 - float(energy_db.max())

    # clipping and quantisation
    peak = float(np.abs(x).max())
    clip_share = float(np.mean(np.abs(x) >= 0.999 * peak)) if peak > 0 else 0.0
    levels = np.unique(np.round(x * 32767).astype(np.int32)).size
    log2_levels = float(np.log2(max(levels, 1)))

    # voicing: normalised autocorrelation peak at 60-400 Hz lags, active frames
    lag_lo, lag_hi = int(sr / 400), int(sr / 60)
    af = fr[active] - fr[active].mean(axis=1, keepdims=True)
    if af.shape[1] <= lag_hi:
        af = np.pad(af, ((0, 0), (0, lag_hi + 1 - af.shape[1])))
    nfft = 1 << int(np.ceil(np.log2(2 * af.shape[1])))
    ac = np.fft.irfft(np.abs(np.fft.rfft(af, nfft, axis=1)) ** 2, axis=1)[:, : lag_hi + 1]
    r0 = ac[:, :1]
    ac = np.where(r0 > 1e-12, ac / np.maximum(r0, 1e-12), 0.0)
    # unbiased for the shrinking overlap at longer lags
    lags = np.arange(ac.shape[1])
    ac = ac * (af.shape[1] / np.maximum(af.shape[1] - lags, 1))[None, :]
    peak_r = np.clip(ac[:, lag_lo:].max(axis=1), 0.0, 1.0) if ac.shape[0] else np.zeros(1)
    voiced = float(np.mean(peak_r > 0.5))
    periodicity = float(np.mean(peak_r))

    active_level = float(10 * np.log10(np.mean(fr[active] ** 2) + 1e-12))
    out = np.array([
        roll95 / 1000, roll99 / 1000, edge / 1000,
        flat_active, flat_pause, flat_std,
        tilt,
        snr_est, floor,
        clip_share, log2_levels,
        voiced, periodicity,
        active_level, float(active.mean()),
    ], dtype=np.float32)
    return out
