"""Mel-cepstral distortion (MCD).

Kubichek, "Mel-cepstral distance measure for objective speech quality assessment", IEEE
PACRIM 1993; the DTW form used in TTS/VC evaluation (e.g. ESPnet's ``evaluate_mcd``):

    MCD = 1/K sum_k (10 / ln 10) sqrt(2 sum_{d=1}^{M} (c_d[i_k] - c'_d[j_k])^2)   [dB]

over the K frame pairs ``(i_k, j_k)`` of the DTW path between reference and synthesised
mel-cepstra. ``c_0`` (frame energy) is excluded by default. The constant makes MCD the RMS
(over the warped frequency axis) of the dB difference of the two log envelopes that the
cepstra ``c_1..c_M`` represent: with ``log|H| = sum_m c_m cos(m w)``, ``20 log10 |H|`` has RMS
difference ``(20 / ln 10) sqrt(sum_m dc_m^2 / 2) = (10 / ln 10) sqrt(2 sum_m dc_m^2)``.
"""

from __future__ import annotations

import numpy as np

from .dtw import dtw

#: (10 / ln 10) * sqrt(2): per-frame MCD = this times the Euclidean cepstral distance.
MCD_CONSTANT = 10.0 / np.log(10.0) * np.sqrt(2.0)


def _coeffs(mc: np.ndarray, include_c0: bool) -> np.ndarray:
    mc = np.asarray(mc, dtype=np.float64)
    if mc.ndim != 2 or mc.shape[1] < 2:
        raise ValueError(f"mel-cepstra must be (frames, order + 1), got {mc.shape}")
    return mc if include_c0 else mc[:, 1:]


def dtw_path(mc_ref: np.ndarray, mc_deg: np.ndarray, include_c0: bool = False) -> np.ndarray:
    """DTW path between two mel-cepstrum sequences with the Euclidean distance of
    ``c_1..c_M`` (or ``c_0..c_M``) as the frame cost, no band constraint.

    Returns:
        ``(K, 2)`` pairs ``(reference frame, signal frame)``.
    """
    from scipy.spatial.distance import cdist

    a, b = _coeffs(mc_ref, include_c0), _coeffs(mc_deg, include_c0)
    _, path = dtw(cdist(a, b, metric="euclidean"))
    return path


def mcd(
    mc_ref: np.ndarray,
    mc_deg: np.ndarray,
    path: np.ndarray | None = None,
    include_c0: bool = False,
) -> float:
    """MCD in dB between two mel-cepstrum sequences ``(frames, order + 1)``.

    Args:
        path: ``(K, 2)`` frame pairs (from :func:`dtw_path`); ``None`` pairs frames in order
            (the sequences must then have the same number of frames).
        include_c0: include the energy coefficient (off by default, as in Kubichek 1993).
    """
    a, b = _coeffs(mc_ref, include_c0), _coeffs(mc_deg, include_c0)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"mel-cepstrum orders differ: {a.shape[1]} and {b.shape[1]}")
    if path is None:
        if a.shape[0] != b.shape[0]:
            raise ValueError("without a path the sequences need the same number of frames")
        diff = a - b
    else:
        path = np.asarray(path)
        diff = a[path[:, 0]] - b[path[:, 1]]
    return float(np.mean(MCD_CONSTANT * np.sqrt(np.sum(diff * diff, axis=1))))
