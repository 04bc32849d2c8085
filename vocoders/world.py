"""Training-free token vocoders on WORLD (Morise et al., IEICE 2016): a fitted unit codebook
vocoder (``world``) and kNN voice conversion (``knn``, :mod:`speechqe.vocoders.knn`).

WORLD splits speech into F0, a smooth spectral envelope (CheapTrick) and band aperiodicity
(D4C); ``pyworld.synthesize`` turns them back into a waveform. Here the envelope and the
aperiodicity are kept in WORLD's own compact codes (``pyworld.code_spectral_envelope``, a
mel-cepstrum of ``envelope_dims`` coefficients, and ``pyworld.code_aperiodicity``, one
coefficient per 3 kHz band), so statistics are averages of a few dozen numbers per frame and
decode back to full spectra.

:class:`WorldUnitVocoder` is a codebook of WORLD statistics, one entry per unit: fitted by
analysing a speech set, tokenizing it with the unit :class:`~speechqe.vocoders.units.Codebook`
and averaging, per unit, the coded envelope and aperiodicity of its frames, separately for
voiced and unvoiced frames (a unit's fricative and vowel frames have different envelopes;
the voicing of the F0 track picks the statistic at synthesis). F0 comes from

* ``'source'``: the original recording (resynthesis; WORLD DIO + StoneMask or Harvest),
* a given contour (Hz, see :func:`read_f0_contour`), or
* ``'units'``: predicted from the units when only tokens exist: each unit's voicing
  probability and mean voiced log-F0 from the fit, smoothed over time (a per-unit model with
  context from the smoothing window).

Unit frames are held at the codebook's frame rate (e.g. 20 ms) but synthesis runs at WORLD's
5 ms frame period: the coded envelope is interpolated linearly between unit frame centres
(``interpolate=True``), so unit boundaries do not click.

The vocoder is saved as one ``safetensors`` file: tensors only, and a JSON header in the
file's string metadata (format, analysis settings, the codebook fingerprint it was fitted on,
the fit facts). Loading runs no code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydantic import Field, model_validator

from speechqe.config import StrictModel
from speechqe.errors import ConfigError, ItemError, item_error

WORLD_FORMAT = "speechqe-world-unit-vocoder/1"


class WorldAnalysisConfig(StrictModel):
    """How speech is analysed into (and synthesised from) WORLD features.

    Attributes:
        sample_rate: analysis and output rate in Hz (16 kHz: the encoders' and ASR's rate).
        frame_period_ms: WORLD frame period (5 ms, WORLD's default).
        envelope_dims: mel-cepstral coefficients of the coded envelope
            (``pyworld.code_spectral_envelope``).
        f0_method: ``'dio'`` (DIO + StoneMask, fast) or ``'harvest'`` (fewer voicing errors,
            about 10x slower).
        f0_floor, f0_ceil: F0 search range in Hz.
    """

    sample_rate: int = Field(16000, ge=8000)
    frame_period_ms: float = Field(5.0, gt=0, le=50)
    envelope_dims: int = Field(40, ge=8, le=128)
    f0_method: Literal["dio", "harvest"] = "dio"
    f0_floor: float = Field(60.0, gt=0)
    f0_ceil: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _range(self) -> "WorldAnalysisConfig":
        if self.f0_ceil <= self.f0_floor:
            raise ValueError("f0_ceil must be above f0_floor")
        return self

    @property
    def fft_size(self) -> int:
        import pyworld

        return int(pyworld.get_cheaptrick_fft_size(self.sample_rate, self.f0_floor))

    @property
    def ap_dims(self) -> int:
        import pyworld

        return int(pyworld.get_num_aperiodicities(self.sample_rate))

    @property
    def frame_rate(self) -> float:
        return 1000.0 / self.frame_period_ms


@dataclass(frozen=True)
class WorldFeatures:
    """WORLD analysis of one signal, ``T`` frames at the frame period.

    Attributes:
        f0: ``(T,)`` Hz, 0 = unvoiced.
        envelope: ``(T, envelope_dims)`` coded spectral envelope.
        aperiodicity: ``(T, ap_dims)`` coded aperiodicity.
    """

    f0: np.ndarray
    envelope: np.ndarray
    aperiodicity: np.ndarray

    @property
    def frames(self) -> int:
        return int(self.f0.shape[0])

    def pack(self) -> np.ndarray:
        """One ``(T, 1 + envelope_dims + ap_dims)`` float64 array (for the feature cache)."""
        return np.concatenate([self.f0[:, None], self.envelope, self.aperiodicity], axis=1)

    @classmethod
    def unpack(cls, a: np.ndarray, envelope_dims: int) -> "WorldFeatures":
        return cls(a[:, 0].copy(), a[:, 1:1 + envelope_dims].copy(),
                   a[:, 1 + envelope_dims:].copy())


def track_f0(x: np.ndarray, cfg: WorldAnalysisConfig) -> np.ndarray:
    """F0 in Hz at the frame period (0 = unvoiced) with ``cfg.f0_method``."""
    import pyworld

    x = np.ascontiguousarray(x, dtype=np.float64)
    kw = dict(f0_floor=cfg.f0_floor, f0_ceil=cfg.f0_ceil, frame_period=cfg.frame_period_ms)
    if cfg.f0_method == "harvest":
        f0, _ = pyworld.harvest(x, cfg.sample_rate, **kw)
        return f0
    f0, t = pyworld.dio(x, cfg.sample_rate, **kw)
    return pyworld.stonemask(x, f0, t, cfg.sample_rate)


def analyze(x: np.ndarray, cfg: WorldAnalysisConfig) -> WorldFeatures:
    """WORLD analysis of a mono signal at ``cfg.sample_rate``.

    Raises:
        ItemError: (``too_short``) a signal shorter than one analysis window.
    """
    import pyworld

    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.size < cfg.fft_size:
        raise item_error("too_short", f"{x.size} samples are too few for WORLD analysis "
                         f"(at least {cfg.fft_size} at {cfg.sample_rate} Hz)")
    f0 = track_f0(x, cfg)
    t = np.arange(f0.size) * cfg.frame_period_ms / 1000.0
    sp = pyworld.cheaptrick(x, f0, t, cfg.sample_rate, f0_floor=cfg.f0_floor,
                            fft_size=cfg.fft_size)
    ap = pyworld.d4c(x, f0, t, cfg.sample_rate, fft_size=cfg.fft_size)
    env = pyworld.code_spectral_envelope(sp, cfg.sample_rate, cfg.envelope_dims)
    cap = pyworld.code_aperiodicity(ap, cfg.sample_rate)
    return WorldFeatures(f0, env, cap)


def synthesize(f0: np.ndarray, envelope: np.ndarray, aperiodicity: np.ndarray,
               cfg: WorldAnalysisConfig) -> np.ndarray:
    """Coded WORLD features -> ``(samples,)`` float32 waveform at ``cfg.sample_rate``."""
    import pyworld

    fft = cfg.fft_size
    sp = pyworld.decode_spectral_envelope(np.ascontiguousarray(envelope, np.float64),
                                          cfg.sample_rate, fft)
    ap = pyworld.decode_aperiodicity(np.ascontiguousarray(aperiodicity, np.float64),
                                     cfg.sample_rate, fft)
    y = pyworld.synthesize(np.ascontiguousarray(f0, np.float64), sp, np.clip(ap, 0.0, 1.0),
                           cfg.sample_rate, cfg.frame_period_ms)
    return y.astype(np.float32)


class WorldAnalyzer:
    """Analyses speech-set items once: decode, resample to ``cfg.sample_rate``, WORLD analysis,
    kept in the content-keyed feature cache (key: the item's content hash + the analysis
    settings), so fitting many tokenizers on one set analyses it once."""

    def __init__(self, cfg: WorldAnalysisConfig, cache: Any = None):
        self.cfg = cfg
        self.cache = cache
        self._memo: dict[str, WorldFeatures] = {}

    @property
    def analysis_id(self) -> str:
        return "world:" + json.dumps(self.cfg.model_dump(), sort_keys=True)

    def features(self, item: Any) -> WorldFeatures:
        """WORLD features of a :class:`~speechqe.manifest.AudioItem`.

        Raises:
            ItemError: the item cannot be read or is too short.
        """
        from speechqe.encoders import feature_key

        if not item.ok:
            raise item_error(item.error_type or "unreadable", item.error or "unreadable")
        if item.sha256 and item.sha256 in self._memo:
            return self._memo[item.sha256]
        key = feature_key(item.sha256, self.analysis_id) if item.sha256 else None
        packed = self.cache.get(key) if (self.cache is not None and key) else None
        if packed is not None:
            feats = WorldFeatures.unpack(packed, self.cfg.envelope_dims)
        else:
            x = item.load().at(self.cfg.sample_rate)  # a cut: its segment only
            feats = analyze(x, self.cfg)
            if self.cache is not None and key:
                self.cache.put(key, feats.pack())
        if item.sha256:
            self._memo[item.sha256] = feats
        return feats

    def signal_f0(self, item: Any) -> np.ndarray:
        return self.features(item).f0


def unit_index(n_world: int, frame_period_ms: float, unit_rate: float, n_units: int
               ) -> np.ndarray:
    """For each WORLD frame (time ``t * period``), the unit frame covering it
    (``floor(time * unit_rate)``, clipped to the unit sequence)."""
    t = np.arange(n_world) * frame_period_ms / 1000.0
    return np.clip(np.floor(t * unit_rate + 1e-9).astype(np.int64), 0, max(n_units - 1, 0))


def interp_positions(n_world: int, frame_period_ms: float, unit_rate: float, n_units: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i0, i1, w)``: each WORLD frame between the centres of unit frames ``i0`` and ``i1``
    (weight ``w`` on ``i1``); unit frame ``i`` is centred at ``(i + 0.5) / unit_rate``."""
    t = np.arange(n_world) * frame_period_ms / 1000.0
    pos = np.clip(t * unit_rate - 0.5, 0.0, max(n_units - 1, 0))
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_units - 1)
    return i0, i1, pos - i0


def window_sum(x: np.ndarray, width: int) -> np.ndarray:
    """Sum of ``x`` over a centred window of ``width`` frames, cut at the edges (the output
    has the input's length whatever the width)."""
    x = np.asarray(x, dtype=np.float64)
    n, half = x.size, width // 2
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(n)
    return c[np.minimum(n, i + half + 1)] - c[np.maximum(0, i - half)]


def smooth_voiced(lf0: np.ndarray, voiced: np.ndarray, width: int) -> np.ndarray:
    """Moving average of ``lf0`` over voiced frames only, window ``width`` frames."""
    if width <= 1:
        return lf0
    num = window_sum(np.where(voiced, lf0, 0.0), width)
    den = window_sum(voiced, width)
    return np.where(den > 0, num / np.maximum(den, 1e-9), lf0)


def read_f0_contour(path: str | Path, frame_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """A given F0 contour -> ``(times in s, Hz)`` (0 = unvoiced).

    Accepted: ``.npy`` or text (``.txt``/``.csv``/``.f0``, whitespace or comma separated), with
    one column (Hz per frame at ``frame_rate``, frame ``i`` at ``i / frame_rate`` s) or two
    (time in s, Hz).

    Raises:
        ConfigError: unreadable file, wrong shape, negative or non-finite values.
    """
    path = Path(path)
    try:
        if path.suffix == ".npy":
            a = np.load(path, allow_pickle=False)
        else:
            a = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=1)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"F0 contour {path}: {exc}") from None
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        t, hz = np.arange(a.size) / frame_rate, a
    elif a.ndim == 2 and a.shape[1] == 2:
        t, hz = a[:, 0], a[:, 1]
    else:
        raise ConfigError(f"F0 contour {path}: expected (frames,) Hz or (frames, 2) time/Hz, "
                          f"got shape {a.shape}")
    if a.size == 0 or not np.isfinite(a).all() or (hz < 0).any():
        raise ConfigError(f"F0 contour {path}: empty, negative or non-finite values")
    if (np.diff(t) <= 0).any():
        raise ConfigError(f"F0 contour {path}: times must increase")
    return t, hz


def resample_contour(t: np.ndarray, hz: np.ndarray, n: int, frame_period_ms: float
                     ) -> np.ndarray:
    """A contour at the WORLD frame times: log-F0 interpolated inside voiced regions, a
    frame unvoiced where the nearest contour point is."""
    tw = np.arange(n) * frame_period_ms / 1000.0
    nearest = np.clip(np.searchsorted(t, tw), 0, t.size - 1)
    left = np.clip(nearest - 1, 0, t.size - 1)
    nearest = np.where(np.abs(t[left] - tw) < np.abs(t[nearest] - tw), left, nearest)
    voiced = hz[nearest] > 0
    out = np.zeros(n)
    v = hz > 0
    if v.sum() >= 2:
        out[voiced] = np.exp(np.interp(tw[voiced], t[v], np.log(hz[v])))
    elif v.sum() == 1:
        out[voiced] = hz[v][0]
    return out


# ------------------------------------------------------------------------------------------
# The fitted unit vocoder
# ------------------------------------------------------------------------------------------
F0Mode = Literal["source", "units"]


@dataclass
class WorldUnitVocoder:
    """Per-unit WORLD statistics (see the module docstring).

    Attributes:
        cfg: the analysis settings.
        unit_rate: unit frames per second (the codebook's frame rate).
        envelope: ``(K, 2, envelope_dims)`` mean coded envelope of each unit's unvoiced (0)
            and voiced (1) frames.
        aperiodicity: ``(K, 2, ap_dims)`` the same for the coded aperiodicity.
        counts: ``(K, 2)`` WORLD frames behind each mean.
        lf0: ``(K,)`` mean log-F0 (natural log of Hz) of each unit's voiced frames.
        voicing: ``(K,)`` fraction of each unit's frames that are voiced.
        meta: JSON-able facts (codebook fingerprint, fit set, frames, items, seconds...).
        min_count: a unit/voicing cell with fewer frames falls back to the unit's pooled
            mean (and a unit never seen to the global mean), recorded in ``meta``.
    """

    cfg: WorldAnalysisConfig
    unit_rate: float
    envelope: np.ndarray
    aperiodicity: np.ndarray
    counts: np.ndarray
    lf0: np.ndarray
    voicing: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    interpolate: bool = True
    f0_smooth_frames: int = 5

    kind = "world"

    @property
    def k(self) -> int:
        return int(self.envelope.shape[0])

    @property
    def sample_rate(self) -> int:
        return int(self.cfg.sample_rate)

    @property
    def checkpoint_id(self) -> str:
        """Identifies the statistics (sha256 of the tensors and header), for resume checks."""
        import hashlib

        h = hashlib.sha256()
        for a in (self.envelope, self.aperiodicity, self.counts, self.lf0, self.voicing):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(json.dumps([self.cfg.model_dump(), self.unit_rate, self.interpolate,
                             self.f0_smooth_frames], sort_keys=True).encode())
        return "world-" + h.hexdigest()[:16]

    # --- fitting ------------------------------------------------------------------------------
    @classmethod
    def fit(cls, unit_seqs: Sequence[np.ndarray], feats: Sequence[WorldFeatures], k: int,
            unit_rate: float, cfg: WorldAnalysisConfig, *, min_count: int = 3,
            meta: Mapping[str, Any] | None = None) -> "WorldUnitVocoder":
        """Fit from aligned frame-level unit sequences and WORLD analyses of the same items.

        Args:
            unit_seqs: ``(frames_i,)`` int unit ids per item, at ``unit_rate``.
            feats: the WORLD features of the same items, at ``cfg.frame_period_ms``.
            k: the codebook size.

        Raises:
            ConfigError: no frames, mismatched inputs, or a unit id outside ``[0, k)``.
        """
        if len(unit_seqs) != len(feats) or not unit_seqs:
            raise ConfigError("fit needs one WORLD analysis per unit sequence, and at least one")
        ed, ad = cfg.envelope_dims, cfg.ap_dims
        s_env = np.zeros((k, 2, ed))
        s_ap = np.zeros((k, 2, ad))
        n = np.zeros((k, 2))
        s_lf0 = np.zeros(k)
        for u, f in zip(unit_seqs, feats):
            u = np.asarray(u, dtype=np.int64)
            if u.size == 0:
                continue
            if u.min() < 0 or u.max() >= k:
                raise ConfigError(f"unit ids outside [0, {k})")
            idx = u[unit_index(f.frames, cfg.frame_period_ms, unit_rate, u.size)]
            # WORLD frames past the units' end (the encoders round lengths) are not used
            last = int(math.ceil(u.size / unit_rate * cfg.frame_rate))
            idx, f0 = idx[:last], f.f0[:last]
            env, ap = f.envelope[:last], f.aperiodicity[:last]
            v = (f0 > 0).astype(np.int64)
            np.add.at(s_env, (idx, v), env)
            np.add.at(s_ap, (idx, v), ap)
            np.add.at(n, (idx, v), 1.0)
            np.add.at(s_lf0, idx[v == 1], np.log(f0[v == 1]))
        total = n.sum()
        if total == 0:
            raise ConfigError("no WORLD frames to fit the unit statistics on")
        g_env = s_env.sum((0, 1)) / total
        g_ap = s_ap.sum((0, 1)) / total
        pooled_n = n.sum(1)
        pooled_env = s_env.sum(1) / np.maximum(pooled_n, 1)[:, None]
        pooled_ap = s_ap.sum(1) / np.maximum(pooled_n, 1)[:, None]
        env = s_env / np.maximum(n, 1)[..., None]
        ap = s_ap / np.maximum(n, 1)[..., None]
        thin = n < min_count
        env[thin] = np.broadcast_to(pooled_env[:, None, :], env.shape)[thin]
        ap[thin] = np.broadcast_to(pooled_ap[:, None, :], ap.shape)[thin]
        unseen = pooled_n == 0
        env[unseen] = g_env
        ap[unseen] = g_ap
        voiced_all = n[:, 1].sum()
        g_lf0 = s_lf0.sum() / voiced_all if voiced_all else math.log(120.0)
        lf0 = np.where(n[:, 1] > 0, s_lf0 / np.maximum(n[:, 1], 1), g_lf0)
        voicing = np.where(pooled_n > 0, n[:, 1] / np.maximum(pooled_n, 1),
                           voiced_all / total)
        info = dict(meta or {})
        info.update({"world_frames": int(total), "unseen_units": int(unseen.sum()),
                     "thin_cells": int((thin & ~unseen[:, None]).sum()), "min_count": min_count})
        return cls(cfg=cfg, unit_rate=float(unit_rate), envelope=env.astype(np.float32),
                   aperiodicity=ap.astype(np.float32), counts=n.astype(np.float32),
                   lf0=lf0.astype(np.float32), voicing=voicing.astype(np.float32), meta=info)

    # --- synthesis ----------------------------------------------------------------------------
    def _checked(self, units: np.ndarray) -> np.ndarray:
        u = np.asarray(units, dtype=np.int64).reshape(-1)
        if u.size == 0:
            raise item_error("too_short", "no unit to vocode")
        if u.min() < 0 or u.max() >= self.k:
            raise ConfigError(f"unit ids outside [0, {self.k}): the units are not this "
                              "vocoder's codebook's")
        return u

    def n_world_frames(self, n_units: int) -> int:
        return max(1, int(round(n_units / self.unit_rate * self.cfg.frame_rate)))

    def predict_f0(self, units: np.ndarray, n_world: int | None = None) -> np.ndarray:
        """F0 (Hz) at the WORLD frame period from units alone: a frame is voiced where the
        units' voicing probability, averaged over ``f0_smooth_frames`` unit frames, is above
        one half; its log-F0 is the units' mean voiced log-F0, averaged over the voiced frames
        of the same window."""
        u = self._checked(units)
        w = max(1, int(self.f0_smooth_frames))
        pv = window_sum(self.voicing[u], w) / window_sum(np.ones(u.size), w)
        voiced_u = pv > 0.5
        lf0_u = smooth_voiced(self.lf0[u].astype(np.float64), voiced_u, w)
        n = self.n_world_frames(u.size) if n_world is None else n_world
        i0, i1, wt = interp_positions(n, self.cfg.frame_period_ms, self.unit_rate, u.size)
        lf0 = (1 - wt) * lf0_u[i0] + wt * lf0_u[i1]
        voiced = voiced_u[unit_index(n, self.cfg.frame_period_ms, self.unit_rate, u.size)]
        return np.where(voiced, np.exp(lf0), 0.0)

    def features_for(self, units: np.ndarray, f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coded envelope and aperiodicity at the WORLD frame period for frame-level ``units``
        and an F0 track (Hz, one value per WORLD frame; its voicing picks the statistic)."""
        u = self._checked(units)
        n = f0.shape[0]
        v = (np.asarray(f0) > 0).astype(np.int64)
        if self.interpolate:
            i0, i1, w = interp_positions(n, self.cfg.frame_period_ms, self.unit_rate, u.size)
            env = ((1 - w)[:, None] * self.envelope[u[i0], v]
                   + w[:, None] * self.envelope[u[i1], v])
            ap = ((1 - w)[:, None] * self.aperiodicity[u[i0], v]
                  + w[:, None] * self.aperiodicity[u[i1], v])
        else:
            idx = u[unit_index(n, self.cfg.frame_period_ms, self.unit_rate, u.size)]
            env, ap = self.envelope[idx, v], self.aperiodicity[idx, v]
        return env, ap

    def synthesize(self, units: np.ndarray, f0: np.ndarray | str = "units") -> np.ndarray:
        """Frame-level ``units`` -> ``(samples,)`` float32 at :attr:`sample_rate`.

        Args:
            units: ``(frames,)`` unit ids at :attr:`unit_rate`.
            f0: ``'units'`` (predicted, :meth:`predict_f0`) or ``(T,)`` Hz at the WORLD
                frame period (from the source or a given contour); its length sets the output
                length (``T`` frames).
        """
        u = self._checked(units)
        if isinstance(f0, str):
            if f0 != "units":
                raise ConfigError(f"f0 must be 'units' or an array of Hz (got {f0!r})")
            f0 = self.predict_f0(u)
        f0 = np.asarray(f0, dtype=np.float64)
        env, ap = self.features_for(u, f0)
        return synthesize(f0, env, ap, self.cfg)

    # --- file ---------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {"format": WORLD_FORMAT, "k": self.k, "unit_rate": self.unit_rate,
                "analysis": self.cfg.model_dump(), "interpolate": self.interpolate,
                "f0_smooth_frames": self.f0_smooth_frames, "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.safetensors``): the five tensors, the header as metadata."""
        from speechqe import tensorfile

        tensors = {"envelope": self.envelope, "aperiodicity": self.aperiodicity,
                   "counts": self.counts, "lf0": self.lf0, "voicing": self.voicing}
        return tensorfile.write(
            path, {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
            self.header())

    @classmethod
    def load(cls, path: str | Path) -> "WorldUnitVocoder":
        """Read a file written by :meth:`save`.

        Raises:
            ConfigError: missing file, not a WORLD unit vocoder, tensors that disagree with
                the header.
        """
        from speechqe import tensorfile
        from speechqe.config import validate

        t, header = tensorfile.read(path, "WORLD unit vocoder", WORLD_FORMAT)
        cfg = validate(WorldAnalysisConfig, header["analysis"], f"{path}: analysis")
        k = int(header["k"])
        want = {"envelope": (k, 2, cfg.envelope_dims), "aperiodicity": (k, 2, cfg.ap_dims),
                "counts": (k, 2), "lf0": (k,), "voicing": (k,)}
        for name, shape in want.items():
            if name not in t or tuple(t[name].shape) != shape:
                raise ConfigError(f"{path}: tensor {name!r} should be {shape}, got "
                                  f"{None if name not in t else tuple(t[name].shape)}")
        return cls(cfg=cfg, unit_rate=float(header["unit_rate"]), envelope=t["envelope"],
                   aperiodicity=t["aperiodicity"], counts=t["counts"], lf0=t["lf0"],
                   voicing=t["voicing"], meta=dict(header.get("meta") or {}),
                   interpolate=bool(header.get("interpolate", True)),
                   f0_smooth_frames=int(header.get("f0_smooth_frames", 5)))


def fit_world_vocoder(speech_set: Any, source: Any, codebook: Any, *,
                      cfg: WorldAnalysisConfig | None = None, analyzer: WorldAnalyzer | None
                      = None, min_count: int = 3, device: str = "cpu",
                      units: Sequence[Any] | None = None) -> WorldUnitVocoder:
    """Fit a :class:`WorldUnitVocoder` on ``speech_set``: tokenize it with ``codebook``
    (through ``source``, the codebook's encoder layer; or reuse ``units``, frame-level
    :class:`~speechqe.vocoders.units.UnitRecord` s of the same set) and analyse it with WORLD.

    Items that cannot be read or encoded are left out and listed in ``meta['skipped']``.

    Raises:
        ConfigError: no usable item.
    """
    import time

    from speechqe.encoders import FeatureCache

    from .tokenize import encode_set

    t0 = time.perf_counter()
    cfg = cfg or (analyzer.cfg if analyzer is not None else WorldAnalysisConfig())
    analyzer = analyzer or WorldAnalyzer(cfg, FeatureCache())
    if analyzer.cfg != cfg:
        raise ConfigError("the analyzer's settings differ from cfg")
    skipped: dict[str, str] = {}
    if units is None:
        enc = encode_set(speech_set, source, codebook, device=device)
        records, skipped = enc.records, dict(enc.errors)
    else:
        records = list(units)
    by_id = {it.id: it for it in speech_set}
    seqs, feats = [], []
    for r in records:
        try:
            feats.append(analyzer.features(by_id[r.id]))
        except ItemError as exc:
            skipped[r.id] = f"{exc.code}: {exc}"
            continue
        seqs.append(r.frame_units())
    if not seqs:
        raise ConfigError(f"no item of {speech_set.name!r} could be analysed to fit the WORLD "
                          f"vocoder ({len(skipped)} failed)")
    meta = {"codebook": codebook.fingerprint(), "encoder": codebook.encoder,
            "layer": codebook.layer, "fit_set": speech_set.name,
            "fit_set_hash": speech_set.content_hash()[:16], "items": len(seqs),
            "skipped": skipped}
    voc = WorldUnitVocoder.fit(seqs, feats, codebook.k, codebook.frame_rate, cfg,
                               min_count=min_count, meta=meta)
    voc.meta["seconds"] = round(time.perf_counter() - t0, 3)
    return voc
