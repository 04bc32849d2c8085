"""Waveform augmentation of the strong learner: speed and pitch perturbation.

UTMOS22 used WavAugment (sox) with a random pitch shift of -300..300 cents and a tempo change
of 0.9..1.1. sox is not a dependency here; we use torchaudio:

* speed: resampling by a factor in ``[1 - r, 1 + r]`` (duration and pitch change together, the
  usual speed perturbation), via ``torchaudio.functional.speed``;
* pitch: a phase-vocoder time stretch followed by resampling, shifting pitch by a random
  number of cents at constant duration. The resampling ratio is rounded to ``p/q`` with
  ``q <= 64`` so that the polyphase kernel stays small (a 300-cent shift expressed over a
  16 kHz base has no small common divisor and would cost seconds per clip); the shift actually
  applied is within about 2 cents of the one drawn.

Randomness comes from a ``torch.Generator`` only, so training checkpoints capture it.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torchaudio.functional as AF

N_FFT = 512
HOP = 128


def speed(x: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """``x``: ``(samples,)``. Faster (``factor > 1``) is shorter and higher."""
    if abs(factor - 1.0) < 1e-6:
        return x
    frac = Fraction(factor).limit_denominator(64)
    y = AF.resample(x, orig_freq=frac.numerator, new_freq=frac.denominator)
    return y


def pitch_shift(x: torch.Tensor, cents: float) -> torch.Tensor:
    """Shift ``x`` (``(samples,)``) by ``cents`` at (nearly) constant duration."""
    if abs(cents) < 1e-3 or x.numel() < N_FFT:
        return x
    ratio = Fraction(2.0 ** (cents / 1200.0)).limit_denominator(64)
    window = torch.hann_window(N_FFT, device=x.device)
    spec = torch.stft(x, N_FFT, HOP, window=window, return_complex=True)
    phase_advance = torch.linspace(0, math.pi * HOP, spec.shape[-2], device=x.device)[..., None]
    # stretch by 1/ratio (longer when shifting up), then resample back to the original length
    stretched = AF.phase_vocoder(spec, float(ratio), phase_advance)
    n_stretch = int(round(x.numel() / float(ratio)))
    y = torch.istft(stretched, N_FFT, HOP, window=window, length=n_stretch)
    y = AF.resample(y, orig_freq=ratio.numerator, new_freq=ratio.denominator)
    if y.numel() >= x.numel():
        return y[: x.numel()]
    return torch.nn.functional.pad(y, (0, x.numel() - y.numel()))


def augment(x: torch.Tensor, sample_rate: int, gen: torch.Generator, *, speed_range: float,
            pitch_cents: float) -> torch.Tensor:
    """Apply a random speed factor in ``1 +- speed_range`` and pitch shift in ``+-pitch_cents``."""
    if speed_range > 0:
        f = 1.0 + (float(torch.rand((), generator=gen)) * 2 - 1) * speed_range
        x = speed(x, sample_rate, f)
    if pitch_cents > 0:
        c = (float(torch.rand((), generator=gen)) * 2 - 1) * pitch_cents
        x = pitch_shift(x, c)
    return x
