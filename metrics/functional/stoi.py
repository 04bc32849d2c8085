"""STOI and ESTOI through ``pystoi``.

* STOI: Taal, Hendriks, Heusdens, Jensen. "An Algorithm for Intelligibility Prediction of
  Time-Frequency Weighted Noisy Speech", IEEE TASLP 2011.
* ESTOI: Jensen, Taal. "An Algorithm for Predicting the Intelligibility of Speech Masked by
  Modulated Noise Maskers", IEEE TASLP 2016.

Both are defined at 10 kHz (pystoi's ``FS``); given signals at 10 kHz pystoi uses them as they
are, at any other rate it resamples them itself (``resample_oct``, scipy's polyphase filter). The
adapters pass the input rate by default, so the value equals ``pystoi.stoi(ref, deg, fs)``; their
``resample='runner'`` option feeds 10 kHz from the runner's resampler instead (faster, slightly
different numbers).
"""

from __future__ import annotations

import numpy as np

from speechqe.errors import MetricComputationError

#: pystoi's internal rate.
STOI_RATE = 10000
#: pystoi returns exactly this value (with a RuntimeWarning) when fewer than 30 STFT frames
#: (384 ms) remain after it drops the frames 40 dB below the loudest one.
_PYSTOI_TOO_FEW_FRAMES = 1e-5


def stoi(ref: np.ndarray, deg: np.ndarray, sample_rate: int, extended: bool = False) -> float:
    """STOI (or ESTOI with ``extended``) of ``deg`` against ``ref``, in [-1, 1] (mostly [0, 1]).

    Args:
        ref, deg: ``(samples,)`` signals of equal length at ``sample_rate``.

    Raises:
        ValueError: the lengths differ.
        MetricComputationError: fewer than 30 non-silent frames (pystoi's sentinel return).
    """
    from pystoi import stoi as _stoi

    if ref.shape != deg.shape:
        raise ValueError(f"STOI needs equal lengths, got {ref.shape} and {deg.shape}")
    value = float(_stoi(ref, deg, sample_rate, extended=extended))
    if value == _PYSTOI_TOO_FEW_FRAMES:
        raise MetricComputationError(
            f"{'ESTOI' if extended else 'STOI'} needs at least 30 frames (384 ms) of speech "
            "within 40 dB of the loudest frame of the reference; this pair has fewer"
        )
    if not np.isfinite(value):
        raise MetricComputationError(f"{'ESTOI' if extended else 'STOI'} returned {value}")
    return value
