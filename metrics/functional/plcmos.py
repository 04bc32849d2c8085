"""PLCMOS v2: non-intrusive quality of packet-loss concealment, 16 kHz.

Diener, Purin, Sootla, Saabas, Aichner, Cutler. "PLCMOS - a data-driven non-intrusive metric
for the evaluation of packet loss concealment algorithms", Interspeech 2023 (ONNX model from
``speechmos``, MIT licence).

Reproduces ``speechmos.plcmos``: log-power STFT (512-point Hamming, hop 256, frames laid out as
the original's ``stana(synth=True)``, zero bins floored 120 dB below the smallest nonzero one,
divided by 20), then the mean of the model's score over ``rounds`` random 64-d rater
embeddings. The original draws them from numpy's global RNG, so its scores change from call to
call; we draw them from ``numpy.random.RandomState(seed)``, which gives exactly the original's
numbers after ``numpy.random.seed(seed)`` and the same numbers on every run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
DFT_SIZE = 512
HOP = 256
ROUNDS = 15


def features(x: np.ndarray) -> np.ndarray:
    """Model input ``(1, 1, frames, 257)`` float32 for a 16 kHz signal."""
    sig = np.asarray(x)
    window = np.hamming(DFT_SIZE + 1)[:-1]
    fsize, hsize = DFT_SIZE, HOP
    sstart = hsize - fsize
    nframe = math.ceil((sig.size - sstart) / hsize)
    zpleft = -sstart
    zpright = (nframe - 1) * hsize + fsize - zpleft - sig.size
    padded = np.zeros(sig.size + zpleft + zpright, dtype=sig.dtype)
    padded[zpleft: padded.size - zpright] = sig
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(nframe, fsize), strides=(sig.itemsize * hsize, sig.itemsize)
    ) * window
    amp = np.abs(np.fft.rfft(frames, n=DFT_SIZE))
    pspec = amp.real**2 + amp.imag**2
    zeros = pspec == 0
    logp = np.empty_like(pspec)
    if np.any(~zeros):
        logp[~zeros] = np.log(pspec[~zeros])
        logp[zeros] = np.log(pspec[~zeros].min()) - 120.0 / 10.0 / np.log10(np.e)
    else:
        logp.fill(-80.0 / 10.0 / np.log10(np.e))
    return np.float32(logp / 20.0)[np.newaxis, np.newaxis, ...]


def plcmos(x: np.ndarray, session: Any, rounds: int = ROUNDS, seed: int = 0) -> float:
    """PLCMOS v2 of one 16 kHz signal ``(samples,)`` with an ONNX Runtime session."""
    feats = features(x)
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(rounds):
        embed = np.array(rng.normal(size=(1, 64)), dtype=np.float32).reshape(1, -1)
        total += float(session.run(None, {"degraded_audio": feats, "rater_embed": embed})[0])
    return total / rounds
