"""F0 accuracy of a signal against its reference, on frame pairs (after alignment).

Over the aligned frame pairs ``(i_k, j_k)`` (a DTW path, or frames in order):

* ``f0_rmse_cents``: RMS of ``1200 log2(f_deg / f_ref)`` over pairs voiced in both.
* ``f0_corr``: Pearson correlation of ``f_ref`` and ``f_deg`` (Hz) over the same pairs.
* ``vuv_error``: fraction of pairs whose voiced/unvoiced decisions differ.
* ``f0_gpe``: gross pitch error, the fraction of pairs voiced in both whose F0 deviates by more
  than 20% (Chu & Alwan, "Reducing F0 frame error of F0 tracking algorithms under noisy
  conditions with an unvoiced/voiced classification frontend", ICASSP 2009). The RMSE in cents
  is dominated by a tracker's occasional octave errors; GPE counts them, so read the two
  together (median error is near 0 cents when only a few frames jump an octave).

A pair counts once per occurrence on the path (a frame matched to two frames counts twice), the
same weighting as MCD on that path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speechqe.errors import MetricComputationError

#: Fewest frame pairs voiced in both signals for the RMSE and correlation to be reported.
MIN_VOICED_PAIRS = 2
#: Relative F0 deviation above which a voiced pair is a gross pitch error (20%).
GPE_THRESHOLD = 0.2


@dataclass(frozen=True)
class F0Scores:
    """Scores over aligned frames; an undefined score is NaN with its reason in ``undefined``."""

    f0_rmse_cents: float
    f0_corr: float
    vuv_error: float
    f0_gpe: float
    frames: int
    voiced_ref: int
    voiced_deg: int
    voiced_both: int
    undefined: tuple[tuple[str, str], ...] = ()

    def values(self) -> dict[str, float]:
        """The defined scores by output name."""
        reasons = dict(self.undefined)
        return {k: v for k, v in (("f0_rmse_cents", self.f0_rmse_cents),
                                  ("f0_corr", self.f0_corr), ("vuv_error", self.vuv_error),
                                  ("f0_gpe", self.f0_gpe))
                if k not in reasons}

    def counts(self) -> dict[str, int]:
        return {"frames": self.frames, "voiced_ref": self.voiced_ref,
                "voiced_deg": self.voiced_deg, "voiced_both": self.voiced_both}


def in_order_pairs(n_ref: int, n_deg: int) -> np.ndarray:
    """Frame pairs ``(k, k)`` for ``k < min(n_ref, n_deg)`` (no alignment)."""
    k = np.arange(min(n_ref, n_deg))
    return np.stack([k, k], axis=1)


def f0_scores(f0_ref: np.ndarray, f0_deg: np.ndarray, pairs: np.ndarray) -> F0Scores:
    """F0 RMSE (cents), correlation and V/UV error over aligned frame pairs.

    Args:
        f0_ref, f0_deg: ``(frames,)`` F0 in Hz, 0 (or negative) where unvoiced.
        pairs: ``(K, 2)`` frame pairs ``(reference frame, signal frame)``.

    With fewer than :data:`MIN_VOICED_PAIRS` pairs voiced in both, RMSE and correlation are
    undefined (NaN, reason in ``undefined``) while the V/UV error is still reported; so is the
    correlation when F0 does not vary over the voiced pairs.

    Raises:
        MetricComputationError: no aligned frames at all.
    """
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[0] == 0:
        raise MetricComputationError("no aligned frames")
    r = np.asarray(f0_ref, dtype=np.float64)[pairs[:, 0]]
    d = np.asarray(f0_deg, dtype=np.float64)[pairs[:, 1]]
    vr, vd = r > 0, d > 0
    both = vr & vd
    n_both = int(both.sum())
    counts = dict(frames=int(pairs.shape[0]), voiced_ref=int(vr.sum()), voiced_deg=int(vd.sum()),
                  voiced_both=n_both)
    vuv = float(np.mean(vr != vd))
    if n_both < MIN_VOICED_PAIRS:
        why = (
            f"only {n_both} aligned frames are voiced in both signals "
            f"(reference voiced {counts['voiced_ref']}, signal voiced {counts['voiced_deg']} "
            f"of {counts['frames']}); F0 RMSE and correlation need {MIN_VOICED_PAIRS}"
        )
        return F0Scores(np.nan, np.nan, vuv, np.nan, **counts,
                        undefined=(("f0_rmse_cents", why), ("f0_corr", why), ("f0_gpe", why)))
    rb, db = r[both], d[both]
    cents = 1200.0 * np.log2(db / rb)
    rmse = float(np.sqrt(np.mean(cents * cents)))
    gpe = float(np.mean(np.abs(db / rb - 1.0) > GPE_THRESHOLD))
    if np.ptp(rb) == 0.0 or np.ptp(db) == 0.0:
        why = "F0 is constant over the voiced frames: correlation undefined"
        return F0Scores(rmse, np.nan, vuv, gpe, **counts, undefined=(("f0_corr", why),))
    corr = float(np.corrcoef(rb, db)[0, 1])
    return F0Scores(f0_rmse_cents=rmse, f0_corr=corr, vuv_error=vuv, f0_gpe=gpe, **counts)
