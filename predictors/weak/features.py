"""Utterance-level feature vectors for the weak learners, cached by content hash.

A feature set is one of:

* ``encoder``: any registered encoder (SSL, openai-whisper, CTranslate2 Whisper, log-mel);
  each selected hidden state is pooled over valid frames into its mean and standard deviation
  (UTMOS's weak learners used mean-pooled SSL features), and the layers are concatenated;
* ``dnsmos``: DNSMOS P.835 SIG, BAK, OVRL and P.808 (the registered ``dnsmos`` metric);
* ``distillmos``: the DistillMOS score (the registered ``distillmos`` metric);
* ``metric``: the outputs of any registered, non-intrusive speechqe metric (``metric: NAME``),
  so metrics added later are usable as features without code here.

Each item's vector is cached under (item sha256, feature id, layers, pooling) in the
:class:`~speechqe.encoders.FeatureCache`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np

from speechqe.encoders import EncoderSpec, FeatureCache, feature_key, load_encoder
from speechqe.encoders.base import stable_hash
from speechqe.errors import ConfigError, ItemError, MetricComputationError

SOURCES = ("encoder", "dnsmos", "distillmos", "metric")
POOLS = ("mean", "std", "max", "min")


@dataclass(frozen=True)
class FeatureSetSpec:
    """A named feature set.

    Attributes:
        name: column prefix, e.g. ``ct2`` or ``wavlm``.
        source: ``encoder``, ``dnsmos``, ``distillmos`` or ``metric``.
        encoder: the :class:`~speechqe.encoders.EncoderSpec` mapping (``source: encoder``).
        layers: hidden states to pool (``None``: all of them).
        pooling: statistics over frames, concatenated (``mean``, ``std``, ``max``, ``min``).
        metric: registered metric name (``source: metric``).
    """

    name: str
    source: str = "encoder"
    encoder: dict[str, Any] | None = None
    layers: tuple[int, ...] | None = None
    pooling: tuple[str, ...] = ("mean", "std")
    metric: str = ""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"feature set '{self.name}': source must be one of {', '.join(SOURCES)}")
        if self.source == "encoder" and not self.encoder:
            raise ConfigError(f"feature set '{self.name}': an encoder feature set needs 'encoder'")
        if self.source == "metric" and not self.metric:
            raise ConfigError(f"feature set '{self.name}': a metric feature set needs 'metric'")
        bad = set(self.pooling) - set(POOLS)
        if bad or not self.pooling:
            raise ConfigError(f"feature set '{self.name}': pooling must use {', '.join(POOLS)}")


def pool(frames: np.ndarray, stats: Sequence[str]) -> np.ndarray:
    """``(layers, frames, dim)`` -> ``(layers * len(stats) * dim,)`` float32."""
    f = np.asarray(frames, dtype=np.float64)
    parts = []
    for layer in f:
        for s in stats:
            parts.append(getattr(np, s)(layer, axis=0))
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
        # dnsmos and distillmos are the registered metrics of those names
        return _MetricFeatures(s.metric or s.source, self.device)

    @property
    def feature_id(self) -> str:
        m = self._model
        if self.spec.source == "encoder":
            return f"{m.encoder_id}|{stable_hash({'layers': self.spec.layers, 'pool': self.spec.pooling}, 8)}"
        return m.feature_id

    def vectors(self, signals: Callable[[int], np.ndarray], hashes: Sequence[str]) -> list[np.ndarray | ItemError]:
        """One vector per item, or the item's :class:`ItemError`."""
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
        return out  # type: ignore[return-value]


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
