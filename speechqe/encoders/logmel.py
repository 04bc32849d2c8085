"""A weight-free log-mel "encoder": the fallback feature source when no pretrained model is
available, and a cheap extra view of the signal for weak learners."""

from __future__ import annotations

from functools import cached_property
from typing import Sequence

import numpy as np

from .base import Encoder, stable_hash


class LogMelEncoder(Encoder):
    """Log-mel spectrogram frames: ``log10(max(mel power, 1e-10))``.

    Args:
        sample_rate: input rate in Hz.
        n_mels, n_fft, hop_length: STFT and filterbank (defaults: 80 bands, 25 ms window,
            10 ms hop at 16 kHz, the Whisper/Kaldi front-end geometry).

    One hidden state (``num_layers == 0``) of shape ``(frames, n_mels)``; each item is
    transformed alone (centred STFT with reflection at its own edges), so batching cannot
    change it.
    """

    num_layers = 0

    def __init__(self, sample_rate: int = 16000, n_mels: int = 80, n_fft: int = 400,
                 hop_length: int = 160):
        self.sample_rate = int(sample_rate)
        self.n_mels = int(n_mels)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.dim = self.n_mels
        self.frame_rate = self.sample_rate / self.hop_length

    @property
    def encoder_id(self) -> str:
        p = {"sr": self.sample_rate, "n_mels": self.n_mels, "n_fft": self.n_fft, "hop": self.hop_length}
        return f"logmel:{stable_hash(p, 8)}"

    @cached_property
    def _transform(self):
        import torchaudio

        return torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
            n_mels=self.n_mels, power=2.0,
        )

    def encode(self, signals: Sequence[np.ndarray], layers: Sequence[int] | None = None) -> list[np.ndarray]:
        import torch

        self.resolve_layers(layers)
        out = []
        with torch.inference_mode():
            for s in signals:
                x = torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32))
                if x.numel() < self.n_fft // 2 + 1:  # reflection padding needs this much
                    x = torch.nn.functional.pad(x, (0, self.n_fft // 2 + 1 - x.numel()))
                mel = self._transform(x).clamp(min=1e-10).log10().T  # (frames, n_mels)
                out.append(mel.numpy().astype(np.float32)[None])
        return out
