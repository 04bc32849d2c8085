"""Shared speech encoders: SSL (wav2vec 2.0, HuBERT, WavLM), Whisper (openai-whisper and
CTranslate2) and log-mel, with a content-keyed feature cache.

Every encoder follows :class:`~speechqe.encoders.base.Encoder`: mono float32 signals at
``encoder.sample_rate`` in, per-layer ``(layers, frames, dim)`` float32 arrays out, padded
batches equal to batch size 1. Encoders are described in configs by an :class:`EncoderSpec`
(``kind`` + ``source`` + options) and built with :func:`load_encoder`.

This package imports nothing heavy at import time; torch, torchaudio, whisper and ctranslate2
are imported by the module that needs them.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence, get_args

import numpy as np
from pydantic import field_validator, model_validator

from speechqe.config import Int, StrictModel, validate

from .base import Encoder, stable_hash
from .cache import FeatureCache, array_sha256, feature_key

EncoderKind = Literal["ssl", "whisper", "whisper-ct2", "logmel"]
KINDS = get_args(EncoderKind)


class EncoderSpec(StrictModel):
    """A configured encoder (in configs: a mapping with these keys; unknown keys are errors).

    Attributes:
        kind: ``ssl``, ``whisper`` (openai-whisper), ``whisper-ct2`` or ``logmel``.
        source: asset name, file or folder (see each loader); unused for ``logmel``.
        factory: torchaudio factory for an SSL state dict file (``wavlm_base``).
        pad_to_30s: Whisper only (see :mod:`speechqe.encoders.whisper`).
        compute_type: CTranslate2 only.
        trust_pickle: allow a fairseq checkpoint that needs unpickling beyond plain data.
        arch: SSL only: build a *random-weight* model from this architecture (tests, benches);
            a mapping in configs, kept as sorted ``(key, value)`` pairs (lists as tuples) so
            that the spec stays hashable.
        seed: seed of the random weights.
    """

    kind: EncoderKind
    source: str = ""
    factory: str = ""
    pad_to_30s: bool = True
    compute_type: str = "float32"
    trust_pickle: bool = False
    arch: tuple[tuple[str, Any], ...] = ()
    seed: Int = 0

    @field_validator("arch", mode="before")
    @classmethod
    def _arch(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return tuple(sorted((str(k), _freeze(x)) for k, x in v.items()))
        return v

    @model_validator(mode="after")
    def _needs_source(self) -> "EncoderSpec":
        if self.kind in ("ssl", "whisper") and not (self.source or self.arch):
            raise ValueError(f"a '{self.kind}' encoder needs a source")
        return self

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "encoder") -> "EncoderSpec":
        """From a config mapping; ``source`` (the file and key) is named in errors.

        Raises:
            ConfigError: an unknown key or a bad value, named.
        """
        return validate(cls, d, source)

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump()
        d["arch"] = {k: _thaw(v) for k, v in self.arch}
        return d


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v


def parse_spec(text: str) -> EncoderSpec:
    """``'kind:source'`` -> :class:`EncoderSpec`; a bare name of
    :data:`speechqe.encoders.whisper.PACKAGED_CONVERSIONS` (``'whisper-tiny.en'``) is the
    openai-whisper encoder built from packaged weights."""
    from .whisper import PACKAGED_CONVERSIONS

    kind, _, source = text.partition(":")
    if not source and kind in PACKAGED_CONVERSIONS:
        kind, source = "whisper", kind
    return EncoderSpec.from_dict({"kind": kind, "source": source}, f"encoder '{text}'")


def load_encoder(spec: EncoderSpec | dict[str, Any] | str, *, device: str = "cpu") -> Encoder:
    """Build the encoder a spec describes (``'kind:source'`` strings are accepted, and the
    shorthand ``'whisper-tiny.en'`` for ``'whisper:whisper-tiny.en'``: the openai-whisper
    model converted from the packaged weights, every block available)."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    elif isinstance(spec, Mapping):
        spec = EncoderSpec.from_dict(spec)
    if spec.kind == "ssl":
        from . import ssl

        if spec.arch:
            arch = {k: _thaw(v) for k, v in spec.arch}
            return ssl.build_random(arch, seed=spec.seed, name=f"random-{stable_hash(arch, 8)}").to(device)
        return ssl.load_ssl(spec.source, factory=spec.factory or None,
                            trust_pickle=spec.trust_pickle, device=device)
    if spec.kind == "whisper":
        from .whisper import load_openai_whisper

        return load_openai_whisper(spec.source, device=device, pad_to_30s=spec.pad_to_30s)
    if spec.kind == "whisper-ct2":
        from .whisper import load_ct2_whisper

        return load_ct2_whisper(spec.source or "whisper-tiny.en-ct2", device=device,
                                compute_type=spec.compute_type, pad_to_30s=spec.pad_to_30s)
    from .logmel import LogMelEncoder

    return LogMelEncoder()


def encode_cached(
    encoder: Encoder,
    signals: Sequence[np.ndarray],
    hashes: Sequence[str],
    layers: Sequence[int] | None,
    cache: FeatureCache | None,
    *,
    batch: int = 8,
) -> list[np.ndarray]:
    """Encode ``signals`` (content hashes ``hashes``), reading and filling ``cache``.

    Returns one ``(len(layers), frames, dim)`` array per signal.
    """
    sel = encoder.resolve_layers(layers)
    out: list[np.ndarray | None] = [None] * len(signals)
    todo: list[int] = []
    keys = [feature_key(h, encoder.encoder_id, sel) for h in hashes]
    for i, k in enumerate(keys):
        hit = cache.get(k) if cache is not None else None
        if hit is not None:
            out[i] = hit
        else:
            todo.append(i)
    for b in range(0, len(todo), batch):
        idx = todo[b : b + batch]
        feats = encoder.encode([signals[i] for i in idx], sel)
        for i, f in zip(idx, feats):
            out[i] = f
            if cache is not None:
                cache.put(keys[i], f)
    return out  # type: ignore[return-value]


__all__ = [
    "Encoder", "EncoderSpec", "FeatureCache", "array_sha256", "encode_cached", "feature_key",
    "load_encoder", "parse_spec",
]
