"""Log-spectral distance (LSD), the speech super-resolution convention (e.g. Kuleshov et al.
2017; NU-Wave, Lee & Han 2021; AudioSR, Liu et al. 2024):

    LSD = mean_t sqrt( mean_f ( log10 P_ref(t, f) - log10 P_deg(t, f) )^2 )

with ``P = |STFT|^2 + eps``: periodic Hann window of ``n_fft`` samples, ``hop`` samples,
frames centred (the signal zero-padded by ``n_fft // 2`` at both ends, ``librosa.stft``'s
default), all ``n_fft // 2 + 1`` bins. Unitless (log10 power ratio; multiply by 10 for dB).
A signal scaled by ``g`` has LSD ``log10(g^2)`` against itself (2 -> log10 4 = 0.602). Not
scale-invariant, and symmetric in its two arguments.
"""

from __future__ import annotations

import numpy as np

N_FFT = 2048
HOP = 512
EPS = 1e-10


def power_spectrogram(x: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """``(frames, n_fft // 2 + 1)`` power spectrogram: periodic Hann window, frames centred on
    ``t * hop`` (zero padding of ``n_fft // 2`` at both ends), ``1 + len // hop`` frames."""
    from scipy.signal import get_window

    x = np.asarray(x, dtype=np.float64)
    pad = n_fft // 2
    xp = np.pad(x, (pad, pad), mode="constant")
    n_frames = 1 + (xp.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(xp, n_fft)[::hop][:n_frames]
    spec = np.fft.rfft(frames * get_window("hann", n_fft, fftbins=True), axis=1)
    return spec.real**2 + spec.imag**2


def lsd(
    ref: np.ndarray, deg: np.ndarray, n_fft: int = N_FFT, hop: int = HOP, eps: float = EPS
) -> float:
    """LSD between two equal-length signals (see the module docstring)."""
    if ref.shape != deg.shape:
        raise ValueError(f"LSD needs equal lengths, got {ref.shape} and {deg.shape}")
    lr = np.log10(power_spectrogram(ref, n_fft, hop) + eps)
    ld = np.log10(power_spectrogram(deg, n_fft, hop) + eps)
    return float(np.mean(np.sqrt(np.mean((lr - ld) ** 2, axis=1))))
