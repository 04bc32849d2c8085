"""kNN voice conversion on WORLD features (the kNN-VC mechanism: Baas, van Niekerk & Kamper,
"Voice Conversion With Just Nearest Neighbors", Interspeech 2023; SSL-TTS uses the same
matching for synthesis).

A target speaker's *matching set* is a few utterances of theirs, encoded by an encoder layer
(:class:`~speechqe.vocoders.features.FeatureSource`) and analysed with WORLD. Every source
frame's feature is replaced by the mean of the WORLD features (coded envelope and
aperiodicity, :mod:`speechqe.vocoders.world`) of its ``k`` nearest matching frames by cosine
similarity (kNN-VC's choice, ``k = 4``), and WORLD synthesises the result. Since every
envelope comes from the target, the timbre is the target's; the content follows the source
as far as the encoder layer's nearest neighbours are phonetically alike across speakers.

F0 is the source's, moved to the target's range: log-F0 is standardised with the source
utterance's voiced mean and standard deviation and mapped onto the matching set's (the usual
Gaussian log-F0 transform of voice conversion).

Two inputs are possible:

* ``'continuous'`` (kNN-VC): the source's continuous encoder features;
* ``'units'``: the centroids of the source's units (a
  :class:`~speechqe.vocoders.units.Codebook`), so only tokens and a voice prompt are needed
  (token-to-speech with a prompt; the bitrate is the codebook's).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field

from speechqe.config import StrictModel
from speechqe.errors import ConfigError, ItemError, item_error

from .world import (
    WorldAnalysisConfig,
    WorldAnalyzer,
    interp_positions,
    synthesize,
    unit_index,
)


class KnnConfig(StrictModel):
    """kNN-VC settings.

    Attributes:
        k: neighbours averaged per source frame (kNN-VC: 4).
        inputs: ``'continuous'`` encoder features or the codebook ``'units'``' centroids.
        analysis: the WORLD analysis of the matching set and of the synthesis.
    """

    k: int = Field(4, ge=1, le=64)
    inputs: Literal["continuous", "units"] = "continuous"
    analysis: WorldAnalysisConfig = WorldAnalysisConfig()


@dataclass
class MatchingSet:
    """A target speaker's frames: features for matching, WORLD features to average.

    Attributes:
        features: ``(N, dim)`` float32, unit-norm rows (encoder frames).
        envelope: ``(N, envelope_dims)`` mean coded envelope of each encoder frame's WORLD
            frames.
        aperiodicity: ``(N, ap_dims)`` the same for the coded aperiodicity.
        lf0_mean, lf0_std: the target's voiced log-F0 mean and standard deviation (log Hz).
        frame_rate: encoder frames per second.
        meta: encoder id, layer, items, seconds, set hash.
    """

    features: np.ndarray
    envelope: np.ndarray
    aperiodicity: np.ndarray
    lf0_mean: float
    lf0_std: float
    frame_rate: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.features.shape[0])


def _unit_norm(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


def pool_world(n_enc: int, frame_rate: float, feats: Any, cfg: WorldAnalysisConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean coded envelope, aperiodicity and voicing of the WORLD frames inside each of
    ``n_enc`` encoder frames (an encoder frame with no WORLD frame takes the nearest one)."""
    idx = unit_index(feats.frames, cfg.frame_period_ms, frame_rate, n_enc)
    counts = np.bincount(idx, minlength=n_enc).astype(np.float64)
    env = np.zeros((n_enc, feats.envelope.shape[1]))
    ap = np.zeros((n_enc, feats.aperiodicity.shape[1]))
    np.add.at(env, idx, feats.envelope)
    np.add.at(ap, idx, feats.aperiodicity)
    voiced = np.bincount(idx, weights=(feats.f0 > 0).astype(np.float64), minlength=n_enc)
    empty = counts == 0
    if empty.any():
        near = np.clip(np.round((np.arange(n_enc) + 0.5) / frame_rate * cfg.frame_rate)
                       .astype(np.int64), 0, feats.frames - 1)
        env[empty] = feats.envelope[near[empty]]
        ap[empty] = feats.aperiodicity[near[empty]]
        voiced[empty] = (feats.f0[near[empty]] > 0)
        counts[empty] = 1
    return env / counts[:, None], ap / counts[:, None], voiced / counts


def build_matching_set(speech_set: Any, source: Any, analyzer: WorldAnalyzer, *,
                       codebook: Any = None, device: str = "cpu") -> MatchingSet:
    """Encode and analyse a target speaker's utterances.

    Args:
        source: the encoder layer (:class:`~speechqe.vocoders.features.FeatureSource`).
        codebook: with ``inputs='units'``: match on the target's unit centroids too, so
            source and target frames are compared in the same quantised space.

    Raises:
        ConfigError: no usable utterance.
    """
    items = list(speech_set)
    feats_enc = source.features(items)
    X, E, A, lf0 = [], [], [], []
    skipped: dict[str, str] = {}
    for it, f in zip(items, feats_enc):
        try:
            if isinstance(f, ItemError):
                raise f
            if f.shape[0] == 0:
                raise item_error("too_short", "the encoder gave no frame")
            w = analyzer.features(it)
        except ItemError as exc:
            skipped[it.id] = f"{exc.code}: {exc}"
            continue
        if codebook is not None:
            f = codebook.centroids[codebook.assign(f, device=device)]
        env, ap, _ = pool_world(f.shape[0], source.frame_rate, w, analyzer.cfg)
        X.append(f)
        E.append(env)
        A.append(ap)
        lf0.append(np.log(w.f0[w.f0 > 0]))
    if not X:
        raise ConfigError(f"no utterance of the matching set {speech_set.name!r} could be used "
                          f"({len(skipped)} failed)")
    lf = np.concatenate(lf0)
    if lf.size < 2:
        raise ConfigError("the matching set has no voiced speech to take an F0 range from")
    X = np.concatenate(X)
    meta = {"encoder": source.encoder_id, "layer": source.resolved_layer,
            "items": len(E), "skipped": skipped, "frames": int(X.shape[0]),
            "seconds": round(X.shape[0] / source.frame_rate, 2),
            "set_hash": speech_set.content_hash()[:16], "set": speech_set.name,
            "codebook": codebook.fingerprint() if codebook is not None else None}
    return MatchingSet(features=_unit_norm(X), envelope=np.concatenate(E).astype(np.float32),
                       aperiodicity=np.concatenate(A).astype(np.float32),
                       lf0_mean=float(lf.mean()), lf0_std=float(lf.std()),
                       frame_rate=float(source.frame_rate), meta=meta)


def knn_average(query: np.ndarray, keys: np.ndarray, values: Sequence[np.ndarray], k: int,
                *, chunk: int = 4096) -> list[np.ndarray]:
    """For each row of ``query`` ``(T, dim)``, the mean of ``values`` rows at its ``k``
    nearest ``keys`` rows by cosine similarity (``keys`` unit-norm).

    Returns one ``(T, value_dim)`` array per entry of ``values``.
    """
    import torch

    q = torch.as_tensor(_unit_norm(query))
    kk = torch.as_tensor(keys)
    k = min(k, kk.shape[0])
    out = [np.empty((q.shape[0], v.shape[1]), dtype=np.float64) for v in values]
    for s in range(0, q.shape[0], chunk):
        idx = torch.topk(q[s:s + chunk] @ kk.T, k, dim=1).indices.numpy()
        for o, v in zip(out, values):
            o[s:s + chunk] = v[idx].mean(axis=1)
    return out


def shift_f0(f0: np.ndarray, target_mean: float, target_std: float) -> np.ndarray:
    """Source F0 (Hz, 0 = unvoiced) with its voiced log-F0 standardised and mapped onto the
    target's mean and standard deviation (log Hz)."""
    f0 = np.asarray(f0, dtype=np.float64)
    v = f0 > 0
    if v.sum() < 2:
        return f0.copy()
    lf = np.log(f0[v])
    sd = lf.std()
    z = (lf - lf.mean()) / sd if sd > 1e-6 else np.zeros_like(lf)
    out = np.zeros_like(f0)
    out[v] = np.exp(target_mean + z * target_std)
    return out


@dataclass
class KnnVocoder:
    """kNN-VC onto one matching set (see the module docstring)."""

    matching: MatchingSet
    cfg: KnnConfig = field(default_factory=KnnConfig)
    interpolate: bool = True

    kind = "knn"

    @property
    def sample_rate(self) -> int:
        return int(self.cfg.analysis.sample_rate)

    @property
    def checkpoint_id(self) -> str:
        h = hashlib.sha256(json.dumps([self.matching.meta.get("set_hash"),
                                       self.matching.meta.get("encoder"),
                                       self.matching.meta.get("layer"),
                                       self.matching.meta.get("codebook"),
                                       self.cfg.model_dump(), self.interpolate],
                                      sort_keys=True, default=str).encode())
        return "knn-" + h.hexdigest()[:16]

    def convert(self, features: np.ndarray, f0: np.ndarray) -> np.ndarray:
        """Source frames -> ``(samples,)`` float32 in the target's voice.

        Args:
            features: ``(frames, dim)`` the source's features at the matching set's frame rate
                (continuous, or unit centroids).
            f0: ``(T,)`` the source's F0 in Hz at the WORLD frame period (sets the output
                length); it is moved to the target's range.
        """
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] == 0:
            raise item_error("too_short", "no source frame to convert")
        if x.shape[1] != self.matching.features.shape[1]:
            raise ConfigError(f"source features have dim {x.shape[1]}, the matching set "
                              f"{self.matching.features.shape[1]}: not the same encoder layer")
        env_u, ap_u = knn_average(x, self.matching.features,
                                  [self.matching.envelope, self.matching.aperiodicity],
                                  self.cfg.k)
        cfg = self.cfg.analysis
        f0t = shift_f0(f0, self.matching.lf0_mean, self.matching.lf0_std)
        n = f0t.shape[0]
        rate = self.matching.frame_rate
        if self.interpolate:
            i0, i1, w = interp_positions(n, cfg.frame_period_ms, rate, x.shape[0])
            env = (1 - w)[:, None] * env_u[i0] + w[:, None] * env_u[i1]
            ap = (1 - w)[:, None] * ap_u[i0] + w[:, None] * ap_u[i1]
        else:
            idx = unit_index(n, cfg.frame_period_ms, rate, x.shape[0])
            env, ap = env_u[idx], ap_u[idx]
        return synthesize(f0t, env, ap, cfg)


def speaker_of(items: Sequence[Any]) -> str | None:
    """The one speaker (or system) of ``items``, or None when they are several."""
    names = {it.speaker or it.system for it in items}
    return next(iter(names)) if len(names) == 1 else None

