"""HiFi-GAN's losses: log-mel L1, feature matching and least-squares adversarial terms.

The mel spectrogram is HiFi-GAN's (magnitude STFT with a periodic Hann window, reflect padding
of ``(n_fft - hop) / 2`` on both sides and no centring, Slaney-normalised Slaney-scale mel
filters as ``librosa.filters.mel`` builds them, natural log clamped at 1e-5), computed with
``torchaudio.transforms.MelSpectrogram``. It always runs in float32, also under autocast.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import MelConfig


class LogMel(nn.Module):
    """``(batch, samples)`` or ``(batch, 1, samples)`` -> ``(batch, num_mels, frames)`` with
    ``frames = samples // hop_size`` when ``n_fft == win_size`` and samples divide the hop."""

    def __init__(self, cfg: MelConfig, sample_rate: int):
        super().__init__()
        import torchaudio

        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_size,
            hop_length=cfg.hop_size, f_min=cfg.fmin, f_max=cfg.fmax, n_mels=cfg.num_mels,
            power=1.0, norm="slaney", mel_scale="slaney", center=False,
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if y.dim() == 3:
            y = y.squeeze(1)
        pad = (self.cfg.n_fft - self.cfg.hop_size) // 2
        with torch.autocast(device_type=y.device.type, enabled=False):
            y = F.pad(y.float().unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
            return torch.log(torch.clamp(self.mel(y), min=1e-5))


def mel_l1(mel_real: torch.Tensor, mel_fake: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of two log-mel spectrograms."""
    return F.l1_loss(mel_fake.float(), mel_real.float())


def feature_loss(fmap_r: list[list[torch.Tensor]], fmap_g: list[list[torch.Tensor]]
                 ) -> torch.Tensor:
    """Feature matching: sum over discriminators and layers of mean |real - fake|, times 2
    (HiFi-GAN's scaling)."""
    loss = 0.0
    for dr, dg in zip(fmap_r, fmap_g):
        for r, g in zip(dr, dg):
            loss = loss + torch.mean(torch.abs(r.float() - g.float()))
    return loss * 2


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN discriminator loss: sum of mean (1 - D(y))^2 + mean D(G(x))^2."""
    loss = 0.0
    for dr, dg in zip(real, fake):
        loss = loss + torch.mean((1 - dr.float()) ** 2) + torch.mean(dg.float() ** 2)
    return loss


def generator_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN generator loss: sum of mean (1 - D(G(x)))^2."""
    loss = 0.0
    for dg in fake:
        loss = loss + torch.mean((1 - dg.float()) ** 2)
    return loss
