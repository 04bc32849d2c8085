"""Scale-invariant signal-to-distortion ratio (SI-SDR).

Le Roux, Wisdom, Erdogan, Hershey. "SDR - half-baked or well done?", ICASSP 2019, eq. (5):

    alpha = <s_hat, s> / ||s||^2,   e = alpha * s - s_hat,
    SI-SDR = 10 log10( ||alpha * s||^2 / ||e||^2 )

with both signals made zero-mean first (the paper's recommendation). The small constant ``eps``
(float64 machine epsilon) is added exactly where ``torchmetrics`` adds it, so the two agree to
float64 rounding and identical signals give a large finite value instead of infinity.
"""

from __future__ import annotations

import numpy as np

from speechqe.errors import SilentAudioError

_EPS = float(np.finfo(np.float64).eps)


def si_sdr(ref: np.ndarray, deg: np.ndarray, zero_mean: bool = True) -> float:
    """SI-SDR of ``deg`` against ``ref`` in dB (higher is better, unbounded).

    Args:
        ref: ``(samples,)`` reference (clean) signal.
        deg: ``(samples,)`` estimate, same length (see :func:`.align.match_lengths`).
        zero_mean: remove each signal's mean first (default, as in the paper).

    Raises:
        ValueError: the shapes differ.
        SilentAudioError: the reference or the estimate has zero energy (after mean removal),
            where SI-SDR is undefined.
    """
    s = np.asarray(ref, dtype=np.float64)
    s_hat = np.asarray(deg, dtype=np.float64)
    if s.shape != s_hat.shape or s.ndim != 1:
        raise ValueError(
            f"si_sdr needs two 1-D signals of equal length, got {s.shape} and {s_hat.shape}"
        )
    if zero_mean:
        s = s - s.mean()
        s_hat = s_hat - s_hat.mean()
    ss = float(s @ s)
    if ss == 0.0:
        raise SilentAudioError(
            "SI-SDR is undefined: the reference has no energy (after mean removal)"
        )
    if float(s_hat @ s_hat) == 0.0:
        raise SilentAudioError(
            "SI-SDR is undefined: the signal has no energy (after mean removal)"
        )
    alpha = (float(s_hat @ s) + _EPS) / (ss + _EPS)
    target = alpha * s
    err = target - s_hat
    return float(10.0 * np.log10((float(target @ target) + _EPS) / (float(err @ err) + _EPS)))
