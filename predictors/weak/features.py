"""Utterance-level feature vectors for the weak learners, cached by content hash.

A feature set (:class:`~speechqe.predictors.config.FeatureSetSpec`) is one of:

* ``encoder``: any registered encoder (SSL, openai-whisper with every block, CTranslate2
  Whisper, log-mel); each selected hidden state is pooled over valid frames into statistics
  (:func:`pool`; UTMOS's weak learners used mean-pooled SSL features), and the layers are
  concatenated; with ``layer_mode: each`` every layer is also a block of its own
  (:meth:`FeatureExtractor.blocks`), trained on separately, so that the stacker's non-negative
  weights over the blocks are learned layer weights;
* ``dnsmos``: DNSMOS P.835 SIG, BAK, OVRL and P.808 (the registered ``dnsmos`` metric);
* ``distillmos``: the DistillMOS score (the registered ``distillmos`` metric);
* ``metric``: the outputs of any registered, non-intrusive speechqe metric (``metric: NAME``),
  so metrics added later are usable as features without code here;
* ``signal``: cheap degradation descriptors (:mod:`speechqe.predictors.weak.signal`).

Each item's vector is cached under (item sha256, feature id, layers, pooling) in the
:class:`~speechqe.encoders.FeatureCache`.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Callable, Sequence

import numpy as np

from speechqe.encoders import EncoderSpec, FeatureCache, feature_key, load_encoder
from speechqe.encoders.base import stable_hash
from speechqe.errors import ConfigError, ItemError, MetricComputationError

from ..config import FEATURE_SOURCES as SOURCES  # noqa: F401 - re-exported
from ..config import POOLS, FeatureSetSpec  # noqa: F401 - re-exported


def _stat(layer: np.ndarray, s: str) -> np.ndarray:
    """One pooling statistic of ``(frames, dim)`` -> ``(dim,)``."""
    if s in ("mean", "std", "max", "min", "median"):
        return getattr(np, s)(layer, axis=0)
    if s in ("p10", "p90"):
        return np.percentile(layer, int(s[1:]), axis=0)
    d = np.diff(layer, axis=0) if layer.shape[0] > 1 else np.zeros_like(layer)
    return np.abs(d).mean(axis=0) if s == "dmean" else d.std(axis=0)


def pool(frames: np.ndarray, stats: Sequence[str]) -> np.ndarray:
    """``(layers, frames, dim)`` -> ``(layers * len(stats) * dim,)`` float32, layer-major
    (each layer's statistics are one contiguous block)."""
    f = np.asarray(frames, dtype=np.float64)
    parts = []
    for layer in f:
        for s in stats:
            parts.append(_stat(layer, s))
    return np.concatenate(parts).astype(np.float32)


class FeatureExtractor:
    """Computes (and caches) one feature set's vectors.

    ``signals(i)`` returns item ``i``'s 16 kHz signal; heavy models are built on first use.
    """

    def __init__(self, spec: FeatureSetSpec, *, device: str = "cpu", cache: FeatureCache | None = None):
        self.spec = spec
        self.device = device
        self.cache = cache
        self._lock = threading.Lock()

    @cached_property
    def _model(self):
        s = self.spec
        if s.source == "encoder":
            return load_encoder(EncoderSpec.from_dict(dict(s.encoder)), device=self.device)
        if s.source == "signal":
            return _SignalFeatures()
        # dnsmos and distillmos are the registered metrics of those names
        return _MetricFeatures(s.metric or s.source, self.device)

    @property
    def feature_id(self) -> str:
        m = self._model
        if self.spec.source == "encoder":
            pooled = {"layers": list(self.spec.layers) if self.spec.layers is not None else None,
                      "pool": list(self.spec.pooling)}
            return f"{m.encoder_id}|{stable_hash(pooled, 8)}"
        return m.feature_id

    def blocks(self, dim: int) -> list[tuple[str, slice]]:
        """The column blocks learners are trained on, for vectors of size ``dim``: the whole
        vector (``("", slice(0, dim))``) or, with ``layer_mode: each``, one block per layer
        (``("L3", ...)``, named by the hidden state's index)."""
        if self.spec.layer_mode != "each":
            return [("", slice(0, dim))]
        layers = self._model.resolve_layers(self.spec.layers)
        if dim % len(layers):
            raise RuntimeError(f"feature set '{self.spec.name}': {dim} values for {len(layers)} layers")
        size = dim // len(layers)
        return [(f"L{k}", slice(i * size, (i + 1) * size)) for i, k in enumerate(layers)]

    def vectors(self, signals: Callable[[int], np.ndarray], hashes: Sequence[str],
                progress: Callable[[int, int], None] | None = None) -> list[np.ndarray | ItemError]:
        """One vector per item, or the item's :class:`ItemError`. ``progress(done, total)`` is
        called after every batch of items computed (cache hits are not reported)."""
        out: list[np.ndarray | ItemError | None] = [None] * len(hashes)
        fid = self.feature_id
        keys = [feature_key(h, fid) for h in hashes]
        todo = []
        for i, k in enumerate(keys):
            hit = self.cache.get(k) if self.cache is not None else None
            if hit is not None:
                out[i] = hit
            else:
                todo.append(i)
        m = self._model
        for b in range(0, len(todo), 8):
            idx = todo[b : b + 8]
            sigs, ok = [], []
            for i in idx:
                try:
                    sigs.append(signals(i))
                    ok.append(i)
                except ItemError as exc:
                    out[i] = exc
            if not ok:
                continue
            if self.spec.source == "encoder":
                frames = m.encode(sigs, self.spec.layers)
                vecs = [pool(f, self.spec.pooling) for f in frames]
            else:
                vecs = m.vectors(sigs)
            for i, v in zip(ok, vecs):
                out[i] = v
                if self.cache is not None and isinstance(v, np.ndarray):
                    self.cache.put(keys[i], v)
            if progress is not None:
                progress(min(b + 8, len(todo)), len(todo))
        return out  # type: ignore[return-value]


class _SignalFeatures:
    """:func:`~speechqe.predictors.weak.signal.signal_features` as a feature source."""

    def __init__(self) -> None:
        from .signal import NAMES

        self.feature_id = f"signal:1:{stable_hash(list(NAMES), 8)}"

    def vectors(self, signals: Sequence[np.ndarray]) -> list[np.ndarray | ItemError]:
        from .signal import signal_features

        out: list[np.ndarray | ItemError] = []
        for x in signals:
            try:
                out.append(signal_features(x, 16000))
            except ValueError as exc:
                out.append(MetricComputationError(f"signal features: {exc}"))
        return out


class _MetricFeatures:
    """The outputs of a registered speechqe metric (non-intrusive, no text needed), e.g.
    ``dnsmos`` (SIG, BAK, OVRL, P.808) or ``distillmos``, in the metric's output order."""

    def __init__(self, name: str, device: str) -> None:
        from speechqe import plugins

        self.metric = plugins.create(name, device=device)
        spec = self.metric.spec
        if spec.needs_reference or spec.needs_text:
            raise ConfigError(f"metric '{name}' needs a reference or text; it cannot be a MOS feature")
        if spec.sample_rate not in (None, 16000):
            raise ConfigError(f"metric '{name}' runs at {spec.sample_rate} Hz; MOS features are 16 kHz")
        self.metric.ensure_ready()
        self.outputs = spec.output_names
        self.feature_id = f"metric:{spec.name}:{spec.version}:{self.metric.model_id()}"

    def vectors(self, signals: Sequence[np.ndarray]) -> list[np.ndarray | ItemError]:
        from speechqe.audio import LoadedAudio
        from speechqe.manifest import AudioItem
        from speechqe.metric import ScoringInput

        inputs = []
        for k, x in enumerate(signals):
            inputs.append(ScoringInput(AudioItem(id=f"feature-{k}", path="", system=""),
                                       LoadedAudio.from_array(x, 16000)))
        out: list[np.ndarray | ItemError] = []
        for inp, res in zip(inputs, self.metric.score_batch(inputs)):
            if isinstance(res, ItemError):
                out.append(res)
            elif any(o not in res.values for o in self.outputs):
                missing = [o for o in self.outputs if o not in res.values]
                out.append(MetricComputationError(f"{self.metric.spec.name} gave no {', '.join(missing)}"))
            else:
                out.append(np.array([res.values[o] for o in self.outputs], dtype=np.float32))
        return out
