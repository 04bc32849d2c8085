"""DistillMOS: a CNN + Transformer speech quality predictor distilled from an XLS-R model.

Stahl, Gamper. "Distillation and Pruning for Scalable Self-Supervised Representation-Based
Speech Quality Assessment", ICASSP 2025 (``distillmos``, MIT licence).

The model takes 16 kHz audio; ``ConvTransformerSQAModel.forward`` zero-pads a clip to 7.68 s
(122880 samples) or cuts it into 7.68 s crops spread evenly with hops of at most 1 s, peak-
normalises each crop, and averages the crop predictions (range 1..5). It stacks the crops of
the batch along the batch dimension, so clips of different lengths cannot share a call; one
clip is scored per call here.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def distillmos(model: Any, x: np.ndarray) -> float:
    """DistillMOS of one 16 kHz signal ``(samples,)`` with a loaded, eval-mode model."""
    import torch

    device = next(model.parameters()).device
    wav = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None].to(device)
    with torch.inference_mode():
        y = model(wav)
    return float(y.reshape(-1)[0].item())
