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
A long signal can be scored without holding all its segments (:func:`dnsmos_windows`): the
segments are read, scored and dropped a group at a time, and the per-segment outputs (four
numbers each) averaged at the end, so memory does not grow with the length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

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


def segment_bounds(n_samples: int, sample_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """``(start, stop)`` sample indices of the 9.01 s segments of a signal of ``n_samples``
    samples that is at least 9.01 s long (step 2 above, with the original's float rounding)."""
    len_samples = int(INPUT_LENGTH * sample_rate)
    num_hops = int(np.floor(n_samples / sample_rate) - INPUT_LENGTH) + 1
    out = []
    for idx in range(num_hops):
        start, stop = int(idx * sample_rate), int((idx + INPUT_LENGTH) * sample_rate)
        if min(stop, n_samples) - start < len_samples:  # float rounding, as in the original
            continue
        out.append((start, stop))
    return out


def segments(x: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The 9.01 s segments DNSMOS scores, ``(n_segments, 144160)`` float32."""
    audio = np.asarray(x, dtype=np.float32)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError("DNSMOS needs a non-empty 1-D signal")
    len_samples = int(INPUT_LENGTH * sample_rate)
    while len(audio) < len_samples:
        audio = np.append(audio, audio)
    out = [audio[a:b] for a, b in segment_bounds(len(audio), sample_rate)]
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
    out, k = [], 0
    for n in counts:
        out.append(_summary(raw[k: k + n], p808_out[k: k + n]))
        k += n
    return out


def dnsmos_windows(
    read: Callable[[int, int], np.ndarray], n_samples: int, primary: Any, p808: Any,
    max_batch: int = 16, group: int = 16,
) -> DnsmosScores:
    """DNSMOS of one long 16 kHz signal read segment by segment: the same segments, model
    calls and mean as :func:`dnsmos`, with at most ``group`` (rounded up to a multiple of
    ``max_batch``) segments in memory at a time.

    Args:
        read: ``read(start, stop)`` -> the signal's samples ``[start, stop)`` at 16 kHz.
        n_samples: the signal's length at 16 kHz (at least 9.01 s: shorter signals go
            through :func:`dnsmos`, which repeats them).
    """
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    bounds = segment_bounds(n_samples)
    if not bounds:
        raise ValueError("dnsmos_windows needs a signal of at least 9.01 s")
    step = max_batch * -(-max(group, 1) // max_batch)
    raws, p808s = [], []
    for k in range(0, len(bounds), step):
        segs = np.stack([read(a, b) for a, b in bounds[k: k + step]]).astype(np.float32, copy=False)
        raws.append(_run(primary, segs, max_batch))
        p808s.append(_run(p808, p808_features(segs), max_batch)[:, 0])
    return _summary(np.concatenate(raws, axis=0), np.concatenate(p808s, axis=0))


def _summary(raw: np.ndarray, p808_out: np.ndarray) -> DnsmosScores:
    """Map the raw P.835 outputs ``(n, 3)`` and average them and the P.808 outputs ``(n,)``
    over the ``n`` segments of one signal."""
    sig, bak, ovr = _P_SIG(raw[:, 0]), _P_BAK(raw[:, 1]), _P_OVR(raw[:, 2])
    return DnsmosScores(sig=float(np.mean(sig)), bak=float(np.mean(bak)), ovrl=float(np.mean(ovr)),
                        p808=float(np.mean(p808_out)), segments=int(raw.shape[0]))
