"""Long inputs, read window by window instead of decoded whole.

A two-hour 16 kHz file is 460 MB as float32 and several times that once resampled, transformed
or analysed; decoding it whole can take a machine's memory down. The runner therefore decodes
an item whole only when every metric that will score it accepts its length (each metric
declares ``MetricSpec.max_duration``; longer items get a ``too_long`` record before any
decoding). Items above :data:`STREAM_ABOVE_S` that only windowed metrics (``max_duration=None``)
score are handed to them as a :class:`StreamedAudio`: validated in one pass over blocks, then read
window by window (:meth:`StreamedAudio.read`), so memory depends on the window, not the file.

Windows at another rate than the file's are resampled with :func:`speechqe.audio.resample` on
the window plus a margin of context that is a whole number of the resampler's input periods, so
each output sample is computed from the same input samples with the same kernel phase as when
the whole signal is resampled at once (equal to float32 rounding; tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import CLIP_LEVEL, SILENCE_PEAK, AudioCheck, resample
from .errors import (
    AudioReadError,
    EmptyAudioError,
    NonFiniteAudioError,
    SilentAudioError,
    TooLongError,
)

#: Items longer than this (seconds) are streamed when every metric scoring them is windowed;
#: shorter ones are decoded whole (faster, and what every metric accepts).
STREAM_ABOVE_S = 600.0
#: Block length (seconds) of the validation pass over a streamed file.
BLOCK_SECONDS = 30.0

# torchaudio.functional.resample's defaults, used by speechqe.audio.resample
_LOWPASS_WIDTH = 6
_ROLLOFF = 0.99


def _context(orig_sr: int, new_sr: int) -> tuple[int, int, int]:
    """``(o, n, margin)``: the reduced rates (``o`` input samples give ``n`` output samples)
    and a margin of input context, a multiple of ``o`` wider than the resampling kernel."""
    g = math.gcd(int(orig_sr), int(new_sr))
    o, n = int(orig_sr) // g, int(new_sr) // g
    width = math.ceil(_LOWPASS_WIDTH * o / (min(o, n) * _ROLLOFF))
    return o, n, o * (math.ceil((width + 1) / o) + 1)


@dataclass(frozen=True)
class StreamedAudio:
    """A long mono signal read from its file on demand.

    It stands in for :class:`speechqe.audio.LoadedAudio` in a :class:`ScoringInput` for the
    metrics that declare a windowed length rule: :attr:`sample_rate`, :attr:`duration`,
    :attr:`check` and :meth:`read`; asking for the whole signal (:meth:`at`, :attr:`samples`)
    raises :class:`~speechqe.errors.TooLongError`.

    Attributes:
        path: the audio file.
        sample_rate: native rate (Hz).
        frames: samples per channel.
        channels: channels in the file (averaged to mono on reading, as ``audio.read`` does).
        check: the statistics of the whole signal (one pass over blocks).
    """

    path: str
    sample_rate: int
    frames: int
    channels: int
    check: AudioCheck

    @classmethod
    def open(cls, path: str | Path) -> "StreamedAudio":
        """Read the header and validate the signal block by block.

        Raises:
            AudioReadError, EmptyAudioError, NonFiniteAudioError, SilentAudioError: as
            :func:`speechqe.audio.read` and :func:`speechqe.audio.validate` would.
        """
        import soundfile as sf

        path = str(path)
        try:
            info = sf.info(path)
        except Exception as exc:  # libsndfile raises several types
            raise AudioReadError(f"cannot read audio header: {_short(exc)}") from exc
        if info.frames <= 0:
            raise EmptyAudioError("audio holds no samples (0 frames)")
        sr = int(info.samplerate)
        peak, sumsq, clipped, n, bad = 0.0, 0.0, 0, 0, 0
        block = max(1, int(BLOCK_SECONDS * sr))
        try:
            for data in sf.blocks(path, blocksize=block, dtype="float32", always_2d=True):
                x = _mono(data)
                finite = np.isfinite(x)
                if not finite.all():
                    bad += int(x.size - finite.sum())
                    x = np.where(finite, x, 0.0).astype(np.float32)
                ax = np.abs(x)
                peak = max(peak, float(ax.max()) if ax.size else 0.0)
                sumsq += float(np.sum(np.square(x, dtype=np.float64)))
                clipped += int(np.count_nonzero(ax >= CLIP_LEVEL))
                n += x.size
        except Exception as exc:
            raise AudioReadError(f"cannot decode audio: {_short(exc)}") from exc
        if n == 0:
            raise EmptyAudioError("audio holds no samples (0 frames)")
        if bad:
            raise NonFiniteAudioError(f"{bad} of {n} samples are NaN or infinite")
        if peak < SILENCE_PEAK:
            db = "-inf" if peak <= 0 else f"{20 * np.log10(peak):.1f}"
            raise SilentAudioError(f"audio is silent (peak {db} dBFS)")
        check = AudioCheck(peak=peak, rms=math.sqrt(sumsq / n), clipped_fraction=clipped / n)
        return cls(path=path, sample_rate=sr, frames=n, channels=int(info.channels), check=check)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def length_at(self, sample_rate: int | None) -> int:
        """Samples of the signal at ``sample_rate`` (as :func:`speechqe.audio.resample` gives)."""
        if sample_rate is None or sample_rate == self.sample_rate:
            return self.frames
        o, n, _ = _context(self.sample_rate, sample_rate)
        return math.ceil(n * self.frames / o)

    def read(self, start: int, stop: int, sample_rate: int | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` of the signal at ``sample_rate`` (indices at that rate;
        ``None``: native), ``(stop - start,)`` float32 mono, cut at the end of the signal."""
        if sample_rate is None or sample_rate == self.sample_rate:
            return self._native(max(0, start), min(stop, self.frames))
        total = self.length_at(sample_rate)
        start, stop = max(0, start), min(stop, total)
        if stop <= start:
            return np.zeros(0, np.float32)
        o, n, margin = _context(self.sample_rate, sample_rate)
        b0, b1 = start // n, -(-stop // n)  # output blocks of n samples covering the range
        s0, s1 = b0 * o - margin, b1 * o + margin
        x = self._native(max(0, s0), min(s1, self.frames))
        if s0 < 0:  # before the signal: the zeros the whole-signal resampler pads with
            x = np.concatenate([np.zeros(-s0, np.float32), x])
        y = resample(x, self.sample_rate, sample_rate)
        off = (margin // o) * n + (start - b0 * n)
        return np.ascontiguousarray(y[off: off + (stop - start)])

    def _native(self, start: int, stop: int) -> np.ndarray:
        import soundfile as sf

        if stop <= start:
            return np.zeros(0, np.float32)
        try:
            data, _ = sf.read(self.path, start=start, stop=stop, dtype="float32", always_2d=True)
        except Exception as exc:
            raise AudioReadError(f"cannot decode audio: {_short(exc)}") from exc
        return _mono(data)

    # --- what a whole-signal metric would ask for -----------------------------------------
    def _refuse(self) -> TooLongError:
        return TooLongError(
            f"{self.duration:.0f} s is streamed window by window (longer than the "
            f"{STREAM_ABOVE_S:g} s decoded whole); this metric needs the whole signal"
        )

    def at(self, sample_rate: int | None) -> np.ndarray:
        raise self._refuse()

    @property
    def samples(self) -> np.ndarray:
        raise self._refuse()


def _mono(data: np.ndarray) -> np.ndarray:
    x = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
