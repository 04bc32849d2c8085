"""The WORLD analysis shared by the ``mcd`` and ``f0`` metrics, memoised per item.

Both metrics read the signal's and the reference's WORLD features, and the DTW path between
their mel-cepstra, through :meth:`ScoringInput.cached` under keys built from the analysis
settings, so with equal settings (the defaults) each item is analysed once and aligned once
whichever of the two metrics runs first. This module defines no metric (:class:`WorldMetric` is their common base).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from speechqe.metric import Metric, ScoringInput, params_id
from .functional import mcd as mcd_core
from .functional import world
from .functional.align import MAX_LENGTH_DIFF_S, MaxLengthDiff, match_lengths
from .pesq import lib_version

#: The rate of the shared analysis (both metrics declare it).
WORLD_RATE = 16000
Alignment = Literal["dtw", "none"]
ALIGNMENTS = get_args(Alignment)


class AlignedWorldParams(world.WorldParams):
    """The WORLD analysis settings plus how frames are paired.

    Attributes:
        align: ``'dtw'`` (default; TTS and VC output against natural speech, different
            lengths) or ``'none'`` (frames in order; enhancement/codec output that is
            time-aligned with its reference).
        max_length_diff_s: with ``align='none'``, the largest length difference (seconds)
            tolerated (extra frames at the end are dropped); above it ``length_mismatch``.
    """

    align: Alignment = "dtw"
    max_length_diff_s: MaxLengthDiff = MAX_LENGTH_DIFF_S


def _key(kind: str, p: world.WorldParams, *rest) -> str:
    return "world/" + kind + "/" + repr((WORLD_RATE, p.analysis_key(), *rest))


def features(inp: ScoringInput, which: str, p: world.WorldParams) -> world.WorldFeatures:
    """WORLD features of the item's signal (``which='deg'``) or its reference (``'ref'``)."""
    if which == "deg":
        return inp.cached(
            _key("deg", p), lambda: world.analyse(inp.signal(WORLD_RATE), WORLD_RATE, p)
        )
    if which == "ref":
        return inp.cached(
            _key("ref", p), lambda: world.analyse(inp.reference(WORLD_RATE), WORLD_RATE, p)
        )
    raise ValueError(which)


def mcep_path(inp: ScoringInput, p: world.WorldParams, include_c0: bool = False) -> np.ndarray:
    """DTW path ``(K, 2)`` (reference frame, signal frame) between the two mel-cepstra
    (Euclidean distance of c_1..c_M, or c_0..c_M with ``include_c0``)."""

    def compute() -> np.ndarray:
        ref, deg = features(inp, "ref", p), features(inp, "deg", p)
        return mcd_core.dtw_path(ref.mcep, deg.mcep, include_c0=include_c0)

    return inp.cached(_key("dtw", p, include_c0), compute)


def frame_pairs(inp: ScoringInput, p: AlignedWorldParams, include_c0: bool = False) -> np.ndarray:
    """The frame pairs ``(K, 2)`` the metric averages over, per ``p.align``.

    Raises:
        LengthMismatchError: ``align='none'`` and the lengths differ by more than
            ``p.max_length_diff_s``.
    """
    if p.align == "dtw":
        return mcep_path(inp, p, include_c0)
    match_lengths(inp.reference(WORLD_RATE), inp.signal(WORLD_RATE), WORLD_RATE,
                  p.max_length_diff_s)
    n = min(features(inp, "ref", p).frames, features(inp, "deg", p).frames)
    k = np.arange(n)
    return np.stack([k, k], axis=1)


def world_model_id() -> str:
    """Library versions that determine the analysis."""
    return f"pyworld-{lib_version('pyworld')}/pysptk-{lib_version('pysptk')}"


class WorldMetric(Metric):
    """Base of the metrics computed from the shared WORLD analysis (``mcd``, ``f0``): their
    identity includes the WORLD/SPTK library versions, and setup checks both are installed."""

    def model_id(self) -> str:
        return f"{params_id(self.params)}/{world_model_id()}"

    def setup(self) -> None:
        import pysptk  # noqa: F401
        import pyworld  # noqa: F401
