"""Length handling for intrusive metrics that compare a signal with its reference sample by
sample (SI-SDR, STOI, LSD, F0 without alignment).

Enhancement, codec and vocoder outputs often differ from their reference by a few samples
(resampling rounding, padding to a whole number of frames); those are trimmed from the end. A
larger difference means the pair is not time-aligned (e.g. TTS output against natural speech),
and a sample-by-sample metric on it would be meaningless, so it is an error.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from speechqe.config import Float
from speechqe.errors import LengthMismatchError

#: Largest reference/signal length difference, in seconds, that is trimmed rather than refused
#: (50 ms: above a 1024-sample codec frame at 22.05 kHz, far below a word).
MAX_LENGTH_DIFF_S = 0.05
#: The type of the ``max_length_diff_s`` parameter of the metrics that use :func:`match_lengths`.
MaxLengthDiff = Annotated[Float, Field(ge=0)]


def match_lengths(
    ref: np.ndarray, deg: np.ndarray, sample_rate: int, max_diff_s: float = MAX_LENGTH_DIFF_S
) -> tuple[np.ndarray, np.ndarray]:
    """Trim the longer of two signals at its end to the length of the shorter.

    Args:
        ref, deg: ``(samples,)`` signals at the same ``sample_rate``.
        max_diff_s: largest length difference (seconds) that is trimmed.

    Returns:
        ``(ref, deg)`` of equal length (views, not copies).

    Raises:
        LengthMismatchError: the lengths differ by more than ``max_diff_s``.
    """
    n_ref, n_deg = int(ref.shape[-1]), int(deg.shape[-1])
    if n_ref == n_deg:
        return ref, deg
    diff = abs(n_ref - n_deg)
    if diff > max_diff_s * sample_rate:
        raise LengthMismatchError(
            f"reference is {n_ref / sample_rate:.3f} s and the signal {n_deg / sample_rate:.3f} s "
            f"long; the difference ({1000 * diff / sample_rate:.1f} ms) exceeds the "
            f"{1000 * max_diff_s:g} ms this metric trims (it compares samples in place, so the "
            "pair must be time-aligned)"
        )
    n = min(n_ref, n_deg)
    return ref[..., :n], deg[..., :n]
