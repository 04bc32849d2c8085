"""F0 at the unit frame rate, and its quantisation into bins for vocoder conditioning.

F0 is tracked with WORLD's DIO + StoneMask (``pyworld``; Morise et al. 2016), one value per unit
frame, 0 for unvoiced frames. Quantisation follows pGSLM (Kharitonov et al., ACL 2022, fairseq
``examples/textless_nlp/pgslm``): log-F0 of voiced frames, optionally minus the speaker's mean
log-F0, cut at quantiles of the training distribution so that every voiced bin is equally
used. Bin 0 is reserved for unvoiced frames, so an ``n_bins`` quantiser has ``n_bins - 1``
voiced bins (``n_bins - 2`` edges); this index sequence feeds the vocoder's ``f0_quant_embed``
table (public config field ``f0_quant_num_bin``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from speechqe.errors import ConfigError

#: DIO's search range in Hz: covers low male voices to high child voices.
F0_FLOOR = 50.0
F0_CEIL = 800.0


def extract_f0(wave: np.ndarray, sample_rate: int, frame_rate: float,
               n_frames: int | None = None) -> np.ndarray:
    """F0 in Hz per frame (0 = unvoiced) with WORLD DIO + StoneMask.

    Args:
        wave: ``(samples,)`` float mono.
        sample_rate: Hz.
        frame_rate: frames per second (the unit rate, e.g. 50).
        n_frames: trim or zero-pad the track to this many frames (the unit count).

    Returns:
        ``(frames,)`` float32.
    """
    import pyworld

    x = np.ascontiguousarray(wave, dtype=np.float64)
    period_ms = 1000.0 / frame_rate
    f0, t = pyworld.dio(x, sample_rate, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL,
                        frame_period=period_ms)
    f0 = pyworld.stonemask(x, f0, t, sample_rate).astype(np.float32)
    if n_frames is not None:
        f0 = f0[:n_frames] if f0.size >= n_frames else np.pad(f0, (0, n_frames - f0.size))
    return f0


@dataclass(frozen=True)
class F0Quantizer:
    """Quantile bins of (speaker-normalised) log-F0; bin 0 = unvoiced.

    Attributes:
        n_bins: total bins including the unvoiced bin (the vocoder's ``f0_quant_num_bin``).
        edges: ``n_bins - 2`` increasing log-F0 edges between the voiced bins.
        normalize: ``'none'`` or ``'mean'`` (subtract the speaker's mean voiced log-F0).
        speaker_means: mean voiced log-F0 per speaker seen in training (for ``'mean'``).
    """

    n_bins: int
    edges: tuple[float, ...]
    normalize: str = "none"
    speaker_means: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.n_bins < 2:
            raise ConfigError("an F0 quantiser needs at least 2 bins (unvoiced + voiced)")
        if len(self.edges) != self.n_bins - 2:
            raise ConfigError(f"{self.n_bins} bins need {self.n_bins - 2} edges")
        if self.normalize not in ("none", "mean"):
            raise ConfigError(f"normalize must be 'none' or 'mean' (got {self.normalize!r})")

    @classmethod
    def fit(cls, tracks: Iterable[np.ndarray], n_bins: int, *, speakers: Iterable[str] | None
            = None, normalize: str = "none") -> "F0Quantizer":
        """Fit edges on F0 tracks (Hz, 0 = unvoiced); ``speakers`` aligns with ``tracks``."""
        tracks = [np.asarray(t, dtype=np.float64) for t in tracks]
        spk = list(speakers) if speakers is not None else ["_"] * len(tracks)
        if len(spk) != len(tracks):
            raise ConfigError("speakers and F0 tracks differ in number")
        means: dict[str, list[np.ndarray]] = {}
        for s, t in zip(spk, tracks):
            means.setdefault(s, []).append(np.log(t[t > 0]))
        speaker_means = {s: float(np.concatenate(v).mean()) for s, v in means.items()
                         if sum(a.size for a in v)}
        values = []
        for s, t in zip(spk, tracks):
            lf = np.log(t[t > 0])
            if normalize == "mean":
                lf = lf - speaker_means.get(s, 0.0)
            values.append(lf)
        allv = np.concatenate(values) if values else np.zeros(0)
        if allv.size < n_bins:
            raise ConfigError(f"only {allv.size} voiced frames to fit {n_bins} F0 bins")
        qs = np.arange(1, n_bins - 1) / (n_bins - 1)
        edges = tuple(float(e) for e in np.quantile(allv, qs))
        return cls(n_bins=n_bins, edges=edges, normalize=normalize,
                   speaker_means=tuple(sorted(speaker_means.items())))

    def quantize(self, f0: np.ndarray, speaker: str | None = None) -> np.ndarray:
        """``(frames,)`` Hz -> ``(frames,)`` int64 bins (0 = unvoiced)."""
        f0 = np.asarray(f0, dtype=np.float64)
        out = np.zeros(f0.shape, dtype=np.int64)
        voiced = f0 > 0
        lf = np.log(f0[voiced])
        if self.normalize == "mean":
            means = dict(self.speaker_means)
            if speaker is None and len(means) == 1:
                speaker = next(iter(means))
            if speaker not in means:
                raise ConfigError(f"no mean log-F0 for speaker {speaker!r} in this quantiser")
            lf = lf - means[speaker]
        out[voiced] = 1 + np.searchsorted(np.asarray(self.edges), lf, side="right")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["edges"] = list(self.edges)
        d["speaker_means"] = [list(p) for p in self.speaker_means]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "F0Quantizer":
        names = {f.name for f in dataclasses.fields(cls)}
        if set(d) - names:
            raise ConfigError(f"unknown F0 quantiser keys {sorted(set(d) - names)}")
        return cls(
            n_bins=int(d["n_bins"]), edges=tuple(float(e) for e in d["edges"]),
            normalize=str(d.get("normalize", "none")),
            speaker_means=tuple((str(a), float(b)) for a, b in d.get("speaker_means", ())),
        )
