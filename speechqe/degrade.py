"""Controlled degradations of clean speech (for demo data, tests and MOS training sets).

All functions take and return mono float32 arrays at a given rate, keep the length and the
time alignment (so intrusive metrics can compare with the clean signal), and are deterministic
given a seed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def power(x: np.ndarray) -> float:
    """Mean power of a signal."""
    return float(np.mean(np.square(x, dtype=np.float64)))


def add_noise(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Mix ``noise`` into ``clean`` at ``snr_db`` (power ratio over the whole signal).

    ``noise`` is cropped or tiled to the length of ``clean``.
    """
    noise = fit_length(noise, clean.size)
    pn = power(noise)
    if pn == 0:
        raise ValueError("noise is silent")
    gain = np.sqrt(power(clean) / (pn * 10.0 ** (snr_db / 10.0)))
    return (clean + gain * noise).astype(np.float32)


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or tile ``x`` to ``n`` samples."""
    if x.size >= n:
        return x[:n]
    reps = int(np.ceil(n / x.size))
    return np.tile(x, reps)[:n]


def white_noise(n: int, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Gaussian white noise of unit variance."""
    return _rng(seed).standard_normal(n).astype(np.float32)


def babble(
    talkers: Sequence[np.ndarray], n: int, seed: int | np.random.Generator | None = 0
) -> np.ndarray:
    """Babble noise: the sum of ``talkers`` (other utterances), each normalised to unit power,
    tiled to ``n`` samples and started at a random offset."""
    if not talkers:
        raise ValueError("babble needs at least one talker")
    rng = _rng(seed)
    out = np.zeros(n, dtype=np.float64)
    for t in talkers:
        t = np.asarray(t, dtype=np.float64)
        t = t / np.sqrt(max(power(t), 1e-12))
        start = int(rng.integers(0, max(t.size, 1)))
        out += fit_length(np.roll(t, -start), n)
    return out.astype(np.float32)


def band_limit(x: np.ndarray, sample_rate: int, cutoff_hz: float, order: int = 8) -> np.ndarray:
    """Zero-phase Butterworth low-pass at ``cutoff_hz`` (keeps alignment)."""
    from scipy.signal import butter, sosfiltfilt

    if not 0 < cutoff_hz < sample_rate / 2:
        raise ValueError(f"cutoff {cutoff_hz} Hz must lie in (0, {sample_rate / 2}) Hz")
    sos = butter(order, cutoff_hz, btype="low", fs=sample_rate, output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def mu_law(x: np.ndarray, bits: int = 8, mu: float | None = None) -> np.ndarray:
    """mu-law companding to ``bits`` bits and back (G.711-like quantisation noise)."""
    mu = float(2**bits - 1) if mu is None else mu
    x = np.clip(x, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    levels = 2**bits
    q = np.round((y + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
    return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu).astype(np.float32)


def quantise(x: np.ndarray, bits: int) -> np.ndarray:
    """Uniform quantisation to ``bits`` bits over [-1, 1]."""
    step = 2.0 / (2**bits)
    return (np.clip(np.round(x / step) * step, -1.0, 1.0)).astype(np.float32)


def hard_clip(x: np.ndarray, level: float) -> np.ndarray:
    """Clip at ``level`` times the peak, then rescale so the clipped peak is at full scale
    (what an overdriven recording chain gives)."""
    peak = float(np.max(np.abs(x)))
    if peak == 0:
        return x.astype(np.float32)
    thr = level * peak
    return (np.clip(x, -thr, thr) / thr * 0.999).astype(np.float32)


def normalise_peak(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    m = float(np.max(np.abs(x)))
    return (x if m == 0 else x * (peak / m)).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR of ``noisy`` with respect to ``clean`` (same length), in dB."""
    noise = noisy.astype(np.float64) - clean.astype(np.float64)
    return 10.0 * np.log10(power(clean) / max(power(noise), 1e-20))
