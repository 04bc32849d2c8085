"""Speech set -> codebook -> unit sequences (the work behind ``speechqe units train|encode``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speechqe.errors import ConfigError, ItemError
from speechqe.manifest import SpeechSet

from .features import FeatureSource
from .units import Codebook, KMeansConfig, UnitRecord, deduplicate, fit_kmeans


def train_codebook(speech_set: SpeechSet, source: FeatureSource, cfg: KMeansConfig, *,
                   max_frames_per_item: int | None = None, batch: int = 8) -> Codebook:
    """Fit a K-means codebook on the features of ``speech_set``.

    Items that fail to load are left out of the fit and listed in ``info['skipped']``.

    Raises:
        ConfigError: no usable item, or fewer frames than ``k``.
    """
    items = list(speech_set)
    failed = {}
    # First pass also warms the feature cache, so later epochs read features from disk.
    n_frames = 0
    for s in range(0, len(items), batch):
        for it, f in zip(items[s:s + batch], source.features(items[s:s + batch])):
            if isinstance(f, ItemError):
                failed[it.id] = f"{f.code}: {f}"
            else:
                n_frames += f.shape[0]
    if n_frames < cfg.k:
        raise ConfigError(f"{n_frames} feature frames from {len(items) - len(failed)} items "
                          f"are too few for k={cfg.k}")
    usable = [it for it in items if it.id not in failed]
    stream = source.stream(usable, batch=batch, max_frames_per_item=max_frames_per_item,
                           seed=cfg.seed)
    centroids, info = fit_kmeans(stream, cfg)
    info.update({"items": len(usable), "skipped": failed, "speech_set": speech_set.name,
                 "speech_set_hash": speech_set.content_hash()[:16],
                 "encoder_spec": source.spec, "k": cfg.k})
    return Codebook(centroids=centroids, encoder=source.encoder_id,
                    layer=source.resolved_layer, frame_rate=source.frame_rate,
                    sample_rate=source.sample_rate, info=info)


def check_compatible(source: FeatureSource, codebook: Codebook) -> None:
    """The source must be the encoder and layer the codebook was trained on."""
    if source.encoder_id != codebook.encoder or source.resolved_layer != codebook.layer:
        raise ConfigError(
            f"the codebook was trained on {codebook.encoder} layer {codebook.layer}, not on "
            f"{source.encoder_id} layer {source.resolved_layer}"
        )


@dataclass
class EncodeResult:
    records: list[UnitRecord]
    errors: dict[str, str] = field(default_factory=dict)

    def units(self) -> list[np.ndarray]:
        return [r.frame_units() for r in self.records]


def encode_set(speech_set: SpeechSet, source: FeatureSource, codebook: Codebook, *,
               dedup: bool = False, device: str = "cpu", batch: int = 8) -> EncodeResult:
    """Units of every item (frame-level, or run-length deduplicated with durations).

    An item that cannot be encoded is listed in ``errors`` (id -> ``code: message``); the
    others keep the set's order.
    """
    check_compatible(source, codebook)
    items = list(speech_set)
    records, errors = [], {}
    for s in range(0, len(items), batch):
        for it, f in zip(items[s:s + batch], source.features(items[s:s + batch])):
            if isinstance(f, ItemError):
                errors[it.id] = f"{f.code}: {f}"
                continue
            if f.shape[0] == 0:
                errors[it.id] = "too_short: the encoder gave no frame"
                continue
            u = codebook.assign(f, device=device)
            units, durs = deduplicate(u) if dedup else (u, None)
            records.append(UnitRecord(id=it.id, path=it.path, sha256=it.sha256, units=units,
                                      durations=durs, frames=int(u.size), text=it.text,
                                      speaker=it.speaker))
    return EncodeResult(records, errors)


def codebook_summary(codebook: Codebook) -> dict[str, Any]:
    h = codebook.header()
    h.pop("format", None)
    return h
