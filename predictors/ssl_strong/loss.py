"""UTMOS22's training losses (``strong/loss_function.py``; weights 1.0 and 0.5 in its
``configs/train/default.yaml``), on normalised scores, with padding masked.

* Clipped MSE (frame mode): every valid frame's score is regressed on the utterance label;
  frames already within ``tau`` of it contribute nothing (UTMOS: tau = 0.25).
* Contrastive (pairwise ranking) loss: for every pair in the batch,
  ``max(0, |(p_i - p_j) - (y_i - y_j)| - margin)``, averaged and halved (margin 0.1).
"""

from __future__ import annotations

import torch


def clipped_mse(frames: torch.Tensor, mask: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """``frames``, ``mask``: ``(B, T)``; ``target``: ``(B,)``. Mean over valid frames."""
    diff = frames - target[:, None]
    keep = (diff.abs() > tau) & mask
    return (diff.pow(2) * keep).sum() / mask.sum().clamp(min=1)


def contrastive(pred: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """``pred``, ``target``: ``(B,)`` utterance scores."""
    dp = pred[:, None] - pred[None, :]
    dt = target[:, None] - target[None, :]
    return torch.clamp((dp - dt).abs() - margin, min=0).mean() / 2


def utmos_loss(utt, frames, mask, target, *, tau: float = 0.25, margin: float = 0.1,
               contrastive_weight: float = 0.5) -> torch.Tensor:
    return clipped_mse(frames, mask, target, tau) + contrastive_weight * contrastive(utt, target, margin)
