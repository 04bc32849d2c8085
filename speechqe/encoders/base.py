"""The encoder contract shared by SSL, Whisper and log-mel feature extractors.

An encoder turns mono float32 signals at its :attr:`Encoder.sample_rate` into per-layer frame
features. Every encoder is *padding-aware*: encoding a padded batch gives, for each item, the
features of that item encoded alone (tested per encoder against batch size 1).

Layers are numbered ``0..num_layers``: 0 is the input to the first transformer block (after the
convolutional front end and positional embedding), ``k`` is the output of block ``k``. Encoders
with a single output (log-mel, the CTranslate2 Whisper encoder) have ``num_layers == 0``.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from speechqe.errors import ConfigError


class Encoder(ABC):
    """A frozen feature extractor.

    Attributes:
        sample_rate: the rate its input must have (Hz).
        num_layers: number of transformer blocks (hidden states are ``0..num_layers``).
        dim: feature dimension.
        frame_rate: output frames per second.
    """

    sample_rate: int
    num_layers: int
    dim: int
    frame_rate: float

    @property
    @abstractmethod
    def encoder_id(self) -> str:
        """Identifies the architecture, the weights (a checksum) and any parameter that changes
        the numbers; part of every feature-cache key."""

    @abstractmethod
    def encode(
        self, signals: Sequence[np.ndarray], layers: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        """Encode signals (each ``(samples,)`` float32 at :attr:`sample_rate`).

        Args:
            signals: one array per item; batched internally with padding masks.
            layers: hidden-state indices to return (default: all, ``0..num_layers``).

        Returns:
            One float32 array per item of shape ``(len(layers), frames_i, dim)``.
        """

    def resolve_layers(self, layers: Sequence[int] | None) -> list[int]:
        """``None`` -> all layers; negative indices count from the top (``-1`` = last)."""
        n = self.num_layers + 1
        if layers is None:
            return list(range(n))
        out = []
        for k in layers:
            k = int(k)
            j = k + n if k < 0 else k
            if not 0 <= j < n:
                raise ConfigError(
                    f"layer {k} is out of range for {self.encoder_id} (hidden states 0..{n - 1})"
                )
            out.append(j)
        return out


def stable_hash(obj: Any, n: int = 12) -> str:
    """Short sha256 of a JSON-able object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def state_dict_fingerprint(state_dict: dict, n: int = 12) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a state dict's tensors.

    Identifies weights that were built in memory (random init in tests, a converted checkpoint)
    as precisely as a file checksum does.
    """
    import torch

    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:n]


def pad_batch(signals: Sequence[np.ndarray]):
    """Stack 1-D signals into a zero-padded ``(batch, max_len)`` float32 tensor and lengths."""
    import torch

    lengths = [int(s.shape[0]) for s in signals]
    out = np.zeros((len(signals), max(lengths) if lengths else 0), dtype=np.float32)
    for i, s in enumerate(signals):
        out[i, : s.shape[0]] = s
    return torch.from_numpy(out), torch.tensor(lengths, dtype=torch.long)


def length_buckets(lengths: Sequence[int], max_batch: int, max_samples: int) -> list[list[int]]:
    """Group indices into batches of similar length (sorted), each of at most ``max_batch``
    items and ``max_samples`` padded samples, so padding is small and memory bounded."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = max([lengths[j] for j in cur] + [lengths[i]])
        if cur and (len(cur) >= max_batch or longest * (len(cur) + 1) > max_samples):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
