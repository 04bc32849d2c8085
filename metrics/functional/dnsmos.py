"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808 (overall MOS), non-intrusive, 16 kHz.

Reddy, Gopal, Cutler. "DNSMOS P.835: A non-intrusive perceptual objective speech quality metric
to evaluate noise suppressors", ICASSP 2022; Reddy, Gopal, Cutler. "DNSMOS: A non-intrusive
perceptual objective speech quality metric to evaluate noise suppressors", ICASSP 2021.

This reproduces Microsoft's ``dnsmos_local.py`` (as packaged by ``speechmos.dnsmos``) step by
step, so the numbers are the same:

1. A clip shorter than 9.01 s is repeated (doubled until long enough).
2. 9.01 s segments start every whole second: ``int(floor(len / 16000) - 9.01) + 1`` of them
   (a segment that rounds one sample short is skipped, as in the original).
3. P.835 model: raw waveform segment ``(144160,)`` -> raw SIG, BAK, OVRL, each mapped by the
   published cubic/quadratic polynomial (non-personalised).
4. P.808 model: log-mel of the segment minus its last 160 samples (120 mels, n_fft 321, hop
   160, ``power_to_db(ref=max)``, then ``(db + 40) / 40``), ``(900, 120)``.
5. Each output is the mean over segments.

The difference is batching: the segments of several clips go through ONNX Runtime in one call
(both models have a free batch dimension); the tests check the scores equal one-at-a-time runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

SAMPLE_RATE = 16000
INPUT_LENGTH = 9.01
SEGMENT_SAMPLES = int(INPUT_LENGTH * SAMPLE_RATE)  # 144160

# Polynomials mapping raw P.835 outputs to MOS (non-personalised model), highest power first.
_P_SIG = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
_P_BAK = np.poly1d([-0.13166888, 1.60915514, -0.39604546])
_P_OVR = np.poly1d([-0.06766283, 1.11546468, 0.04602535])


@dataclass(frozen=True)
class DnsmosScores:
    sig: float
    bak: float
    ovrl: float
    p808: float
    segments: int


def segments(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The 9.01 s segments DNSMOS scores, ``(n_segments, 144160)`` float32."""
    audio = np.asarray(x, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError("DNSMOS needs a non-empty 1-D signal")
    len_samples = int(INPUT_LENGTH * sample_rate)
    while len(audio) < len_samples:
        audio = np.append(audio, audio)
    num_hops = int(np.floor(len(audio) / sample_rate) - INPUT_LENGTH) + 1
    out = []
    for idx in range(num_hops):
        seg = audio[int(idx * sample_rate): int((idx + INPUT_LENGTH) * sample_rate)]
        if len(seg) < len_samples:  # float rounding of the end index, as in the original
            continue
        out.append(seg)
    return np.stack(out).astype(np.float32, copy=False)


def p808_features(segs: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """P.808 model input for each segment, ``(n_segments, 900, 120)`` float32."""
    import librosa

    out = []
    for seg in segs:
        mel = librosa.feature.melspectrogram(
            y=seg[:-160], sr=sample_rate, n_fft=321, hop_length=160, n_mels=120
        )
        out.append(((librosa.power_to_db(mel, ref=np.max) + 40) / 40).T)
    return np.stack(out).astype(np.float32, copy=False)


def _run(session: Any, batch: np.ndarray, max_batch: int) -> np.ndarray:
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: batch[k: k + max_batch]})[0]
             for k in range(0, batch.shape[0], max_batch)]
    return np.concatenate(parts, axis=0)


def dnsmos(
    signals: Sequence[np.ndarray], primary: Any, p808: Any, max_batch: int = 16
) -> list[DnsmosScores]:
    """DNSMOS of each 16 kHz signal.

    Args:
        signals: ``(samples,)`` float signals at 16 kHz.
        primary: ONNX Runtime session of ``sig_bak_ovr.onnx`` (input ``(N, 144160)``).
        p808: ONNX Runtime session of ``model_v8.onnx`` (input ``(N, 900, 120)``).
        max_batch: most segments per ONNX call (1 reproduces the original's calls exactly).

    Returns:
        One :class:`DnsmosScores` per signal, in order.
    """
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    segs = [segments(x) for x in signals]
    counts = [s.shape[0] for s in segs]
    if not segs:
        return []
    allsegs = np.concatenate(segs, axis=0)
    raw = _run(primary, allsegs, max_batch)  # (n, 3) raw SIG, BAK, OVRL
    p808_out = _run(p808, p808_features(allsegs), max_batch)[:, 0]
    sig, bak, ovr = _P_SIG(raw[:, 0]), _P_BAK(raw[:, 1]), _P_OVR(raw[:, 2])
    out, k = [], 0
    for n in counts:
        sl = slice(k, k + n)
        out.append(DnsmosScores(sig=float(np.mean(sig[sl])), bak=float(np.mean(bak[sl])),
                                ovrl=float(np.mean(ovr[sl])), p808=float(np.mean(p808_out[sl])),
                                segments=n))
        k += n
    return out
