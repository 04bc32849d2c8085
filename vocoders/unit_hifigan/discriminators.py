"""HiFi-GAN's discriminators: multi-period (MPD, Kong et al. 2020) and multi-scale (MSD, from
MelGAN, Kumar et al. 2019). Widths come from :class:`~.config.DiscriminatorConfig` (HiFi-GAN's
by default). Each discriminator returns its flattened logits and the list of feature maps used
by the feature-matching loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from .config import DiscriminatorConfig
from .model import LRELU_SLOPE, get_padding

Logits = list[torch.Tensor]
FeatureMaps = list[list[torch.Tensor]]


class DiscriminatorP(nn.Module):
    """Looks at a waveform folded into ``(frames / period, period)``."""

    def __init__(self, period: int, channels: tuple[int, ...], kernel_size: int = 5,
                 stride: int = 3):
        super().__init__()
        self.period = period
        c = (1, *channels)
        pad = (get_padding(5, 1), 0)
        self.convs = nn.ModuleList(
            [weight_norm(nn.Conv2d(c[i], c[i + 1], (kernel_size, 1), (stride, 1), padding=pad))
             for i in range(4)]
            + [weight_norm(nn.Conv2d(c[4], c[5], (kernel_size, 1), 1, padding=(2, 0)))]
        )
        self.conv_post = weight_norm(nn.Conv2d(c[5], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap = []
        b, ch, t = x.shape
        if t % self.period:
            n_pad = self.period - t % self.period
            x = F.pad(x, (0, n_pad), "reflect")
            t += n_pad
        x = x.view(b, ch, t // self.period, self.period)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class DiscriminatorS(nn.Module):
    """Grouped strided 1-D convolutions over the waveform at one scale."""

    def __init__(self, channels: tuple[int, ...], groups: tuple[int, ...],
                 use_spectral_norm: bool = False):
        super().__init__()
        norm = spectral_norm if use_spectral_norm else weight_norm
        kernels = (15, 41, 41, 41, 41, 41, 5)
        strides = (1, 2, 2, 4, 4, 1, 1)
        c = (1, *channels)
        self.convs = nn.ModuleList(
            norm(nn.Conv1d(c[i], c[i + 1], kernels[i], strides[i], groups=groups[i],
                           padding=kernels[i] // 2))
            for i in range(7)
        )
        self.conv_post = norm(nn.Conv1d(c[7], 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.discriminators = nn.ModuleList(
            DiscriminatorP(p, cfg.mpd_channels) for p in cfg.periods
        )

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor
                ) -> tuple[Logits, Logits, FeatureMaps, FeatureMaps]:
        """``y``, ``y_hat``: ``(batch, 1, samples)`` real and generated audio."""
        out: tuple[Logits, Logits, FeatureMaps, FeatureMaps] = ([], [], [], [])
        for d in self.discriminators:
            r, fr = d(y)
            g, fg = d(y_hat)
            out[0].append(r)
            out[1].append(g)
            out[2].append(fr)
            out[3].append(fg)
        return out


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.discriminators = nn.ModuleList(
            DiscriminatorS(cfg.msd_channels, cfg.msd_groups, use_spectral_norm=(i == 0))
            for i in range(cfg.msd_scales)
        )
        self.meanpools = nn.ModuleList(
            nn.AvgPool1d(4, 2, padding=2) for _ in range(cfg.msd_scales - 1)
        )

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor
                ) -> tuple[Logits, Logits, FeatureMaps, FeatureMaps]:
        out: tuple[Logits, Logits, FeatureMaps, FeatureMaps] = ([], [], [], [])
        for i, d in enumerate(self.discriminators):
            if i:
                y = self.meanpools[i - 1](y)
                y_hat = self.meanpools[i - 1](y_hat)
            r, fr = d(y)
            g, fg = d(y_hat)
            out[0].append(r)
            out[1].append(g)
            out[2].append(fr)
            out[3].append(fg)
        return out
