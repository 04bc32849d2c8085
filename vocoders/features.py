"""Features for the tokenizer, from the shared encoder layer (:mod:`speechqe.encoders`).

An encoder is named by a spec string (``'whisper-ct2'``, ``'whisper-ct2:whisper-tiny.en-ct2'``,
``'ssl:/path/hubert.pt'``, ``'logmel'``, ``'whisper-tiny.en'``, a fitted layer interface
``'aggregate:/path/interface.safetensors'``) or an encoder-spec dict, and a layer (``None``: the
last hidden state). Each item is decoded once, resampled once to the encoder's rate, encoded
once and stored in the content-keyed feature cache, so k-means epochs after the first and the
later ``units encode`` read features from disk instead of running the encoder again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from speechqe.errors import ConfigError, ItemError, item_error
from speechqe.manifest import AudioItem


@dataclass
class FeatureSource:
    """An encoder, one of its layers, and an optional feature cache.

    Attributes:
        encoder: a :class:`speechqe.encoders.Encoder`.
        layer: hidden-state index (negative counts from the top; ``None``: the last).
        cache: a :class:`speechqe.encoders.FeatureCache` or ``None``.
        spec: the spec it was built from (kept in codebooks).
    """

    encoder: Any
    layer: int | None
    cache: Any = None
    spec: Any = None

    @property
    def resolved_layer(self) -> int:
        return self.encoder.resolve_layers([-1 if self.layer is None else self.layer])[0]

    @property
    def encoder_id(self) -> str:
        return str(self.encoder.encoder_id)

    @property
    def frame_rate(self) -> float:
        return float(self.encoder.frame_rate)

    @property
    def sample_rate(self) -> int:
        return int(self.encoder.sample_rate)

    def features(self, items: Sequence[AudioItem]) -> list[np.ndarray | ItemError]:
        """``(frames, dim)`` float32 per item, or the :class:`ItemError` that item raised
        (unreadable, silent, ...): aligned with ``items``, never filtered."""
        from speechqe.encoders import encode_cached

        layer = self.resolved_layer
        out: list[np.ndarray | ItemError] = [None] * len(items)  # type: ignore[list-item]
        signals, hashes, where = [], [], []
        for i, it in enumerate(items):
            try:
                if not it.ok:
                    raise item_error(it.error_type or "unreadable", it.error or "unreadable")
                sig = it.load().at(self.sample_rate)  # honours a segment/channel
            except ItemError as exc:
                out[i] = exc
                continue
            signals.append(sig)
            hashes.append(it.sha256)
            where.append(i)
        if signals:
            feats = encode_cached(self.encoder, signals, hashes, [layer], self.cache)
            for i, f in zip(where, feats):
                out[i] = np.asarray(f[0], dtype=np.float32)
        return out

    def stream(self, items: Sequence[AudioItem], *, batch: int = 8,
               max_frames_per_item: int | None = None, seed: int = 0):
        """A re-iterable feature stream for :func:`speechqe.vocoders.units.fit_kmeans`.

        Items that fail to load are skipped here (``units train`` reports them); with
        ``max_frames_per_item``, a fixed random subset of each item's frames is used.
        """

        def gen() -> Iterator[np.ndarray]:
            rng = np.random.default_rng(seed)
            for s in range(0, len(items), batch):
                for f in self.features(items[s:s + batch]):
                    if isinstance(f, ItemError) or f.shape[0] == 0:
                        continue
                    if max_frames_per_item and f.shape[0] > max_frames_per_item:
                        f = f[np.sort(rng.choice(f.shape[0], max_frames_per_item, replace=False))]
                    yield f

        return gen


def load_any_encoder(encoder: str | dict, *, device: str = "cpu") -> Any:
    """:func:`speechqe.encoders.load_encoder`, plus ``'aggregate:<file>'``: a fitted layer
    interface over all of an encoder's hidden states
    (:func:`speechqe.encoders.aggregate.load_aggregated_encoder`)."""
    if isinstance(encoder, str) and encoder.startswith("aggregate:"):
        from speechqe.encoders.aggregate import load_aggregated_encoder

        return load_aggregated_encoder(encoder.split(":", 1)[1], device=device)
    from speechqe.encoders import load_encoder

    return load_encoder(encoder, device=device)


def load_feature_source(encoder: str | dict, layer: int | None = None, *, device: str = "cpu",
                        cache_dir: str | None = None, use_cache: bool = True) -> FeatureSource:
    """Build a :class:`FeatureSource` from an encoder spec.

    Raises:
        ConfigError: unknown encoder, missing weights (with instructions), bad layer.
        MissingDependencyError: the encoder's extra is not installed.
    """
    try:
        from speechqe.encoders import FeatureCache
    except ImportError as exc:  # pragma: no cover - the encoder layer ships with speechqe
        raise ConfigError(f"the shared encoder layer is unavailable: {exc}") from exc
    enc = load_any_encoder(encoder, device=device)
    src = FeatureSource(enc, layer, FeatureCache(cache_dir, enabled=use_cache), spec=encoder)
    src.resolved_layer  # validates the layer now, not after minutes of work
    return src
