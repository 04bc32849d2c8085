"""Audio I/O: one loader, one resampler, one validator.

Every signal in speechqe enters through :func:`load` (soundfile; float32, mono) and changes rate
only through :func:`resample` (``torchaudio.functional.resample``'s windowed-sinc kernel, built
once per rate pair and cached). :class:`LoadedAudio` memoises the resampled views of one decoded
signal, so a signal scored by five metrics at 16 kHz is decoded once and resampled once.

We read with soundfile rather than ``torchaudio.load`` because torchaudio 2.9 delegates decoding
to torchcodec (an FFmpeg binding we do not want as a hard dependency); soundfile reads WAV,
FLAC, OGG/Vorbis/Opus and MP3 through libsndfile, which its wheel bundles.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import (
    AudioReadError,
    EmptyAudioError,
    NonFiniteAudioError,
    SilentAudioError,
    TooShortError,
)

#: Peak amplitude (full scale = 1.0) below which a signal counts as silent: -80 dBFS, i.e.
#: below the noise floor of any real recording, but above 16-bit dither of digital silence.
SILENCE_PEAK = 1e-4
#: Sample magnitude at or above which a sample counts as clipped (one 16-bit step below 1.0).
CLIP_LEVEL = 1.0 - 1.0 / 32768.0
#: Fraction of clipped samples above which an item carries a ``clipped`` warning.
CLIP_WARN_FRACTION = 1e-3


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file, read without decoding the samples."""

    sample_rate: int
    frames: int
    channels: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe(path: str | Path) -> AudioInfo:
    """Read the header of ``path``.

    Raises:
        AudioReadError: the file does not exist or is not audio that libsndfile can parse.
        EmptyAudioError: the header declares zero frames (an empty or truncated file).
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioReadError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise EmptyAudioError("file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises LibsndfileError/RuntimeError/TypeError
        raise AudioReadError(f"cannot read audio header: {_short(exc)}") from exc
    if info.frames <= 0:
        raise EmptyAudioError("audio holds no samples (0 frames)")
    return AudioInfo(
        sample_rate=int(info.samplerate),
        frames=int(info.frames),
        channels=int(info.channels),
        format=str(info.format),
        subtype=str(info.subtype),
    )


def read(
    path: str | Path,
    *,
    start: int = 0,
    frames: int | None = None,
    channel: int | None = None,
) -> tuple[np.ndarray, int]:
    """Decode ``path`` (or the part of it an item points into) to float32 mono at its native
    rate.

    Args:
        start: first frame to read (0: the beginning). libsndfile seeks to it, so a segment of
            a long recording is read without decoding what lies before or after it (WAV, FLAC,
            OGG/Opus and MP3 are all seekable in libsndfile >= 1.1).
        frames: number of frames to read (``None``: to the end of the file).
        channel: the channel to keep (0-based); ``None`` averages all channels to mono.

    Returns:
        ``(samples, sample_rate)`` with ``samples`` of shape ``(frames,)``, float32, full scale 1.0.

    Raises:
        AudioReadError: the file cannot be decoded, the channel does not exist, or the file
            ends before the requested segment does.
        EmptyAudioError: nothing to read.
    """
    import soundfile as sf

    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise EmptyAudioError("file is empty (0 bytes)")
    want = -1 if frames is None else int(frames)
    try:
        with sf.SoundFile(str(path)) as f:
            if start:
                if not f.seekable():
                    raise AudioReadError(
                        f"cannot seek in this {f.format} file to read a segment"
                    )
                f.seek(int(start))
            data = f.read(frames=want, dtype="float32", always_2d=True)
            sr = int(f.samplerate)
    except AudioReadError:
        raise
    except Exception as exc:
        raise AudioReadError(f"cannot decode audio: {_short(exc)}") from exc
    if frames is not None and data.shape[0] < want:
        raise AudioReadError(
            f"the file ends {(want - data.shape[0]) / sr:.3f} s before the segment "
            f"[{start / sr:.3f}, {(start + want) / sr:.3f}] s does (read {data.shape[0]} of "
            f"{want} frames)"
        )
    if data.shape[0] == 0:
        raise EmptyAudioError("audio holds no samples (0 frames)")
    if channel is not None:
        if not 0 <= channel < data.shape[1]:
            raise AudioReadError(
                f"channel {channel} requested, the file has {data.shape[1]} channel(s)"
            )
        mono = data[:, channel]
    else:
        mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), sr


@lru_cache(maxsize=64)
def _resampler(orig_sr: int, new_sr: int):
    """A ``torchaudio.transforms.Resample`` whose sinc kernel is computed once per rate pair."""
    import torch
    import torchaudio

    # float32 kernel: identical to torchaudio.functional.resample on float32 input
    return torchaudio.transforms.Resample(orig_freq=orig_sr, new_freq=new_sr, dtype=torch.float32)


_resample_lock = threading.Lock()


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample a mono float32 signal with torchaudio's windowed-sinc resampler.

    The kernel (``torchaudio.functional.resample`` defaults: Hann window, width 6, rolloff 0.99)
    is cached per ``(orig_sr, new_sr)``; the output has ``ceil(len(x) * new_sr / orig_sr)``
    samples.

    Args:
        x: ``(frames,)`` float32.
        orig_sr, new_sr: rates in Hz.
    """
    if orig_sr == new_sr:
        return x
    import torch

    with _resample_lock:  # lru_cache construction is not atomic
        module = _resampler(int(orig_sr), int(new_sr))
    with torch.no_grad():
        y = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return y.numpy().astype(np.float32, copy=False)


@dataclass(frozen=True)
class AudioCheck:
    """Signal statistics computed during validation."""

    peak: float
    rms: float
    clipped_fraction: float

    @property
    def warnings(self) -> tuple[str, ...]:
        out = []
        if self.clipped_fraction > CLIP_WARN_FRACTION:
            out.append(f"clipped: {self.clipped_fraction:.2%} of samples at full scale")
        return tuple(out)


def validate(x: np.ndarray) -> AudioCheck:
    """Check a decoded mono signal.

    Raises:
        EmptyAudioError: no samples.
        NonFiniteAudioError: NaN or infinite samples.
        SilentAudioError: peak below :data:`SILENCE_PEAK` (-80 dBFS).

    Clipping is not an error: it is reported in :attr:`AudioCheck.warnings`.
    """
    if x.size == 0:
        raise EmptyAudioError("audio holds no samples (0 frames)")
    finite = np.isfinite(x)
    if not finite.all():
        n_bad = int(x.size - finite.sum())
        raise NonFiniteAudioError(f"{n_bad} of {x.size} samples are NaN or infinite")
    ax = np.abs(x)
    peak = float(ax.max())
    if peak < SILENCE_PEAK:
        raise SilentAudioError(f"audio is silent (peak {_dbfs(peak)} dBFS)")
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    clipped = float(np.count_nonzero(ax >= CLIP_LEVEL)) / x.size
    return AudioCheck(peak=peak, rms=rms, clipped_fraction=clipped)


def check_duration(n_samples: int, sample_rate: int, min_seconds: float, what: str) -> None:
    """Raise :class:`TooShortError` if a signal is shorter than ``min_seconds`` for ``what``."""
    seconds = n_samples / sample_rate
    if seconds < min_seconds:
        raise TooShortError(f"{seconds:.3f} s is shorter than the {min_seconds:g} s {what} needs")


@dataclass
class LoadedAudio:
    """One decoded, validated mono signal and its resampled views.

    Use :meth:`at` to get the signal at a rate; each rate is computed once from the native
    signal (never resampled twice or in a chain).
    """

    samples: np.ndarray
    sample_rate: int
    check: AudioCheck
    _views: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        start: int = 0,
        frames: int | None = None,
        channel: int | None = None,
    ) -> "LoadedAudio":
        """Decode and validate ``path``, or the segment ``[start, start + frames)`` of one of
        its channels (see :func:`read`)."""
        x, sr = read(path, start=start, frames=frames, channel=channel)
        return cls.from_array(x, sr)

    @classmethod
    def from_array(cls, x: np.ndarray, sample_rate: int) -> "LoadedAudio":
        x = np.ascontiguousarray(x, dtype=np.float32)
        return cls(samples=x, sample_rate=int(sample_rate), check=validate(x))

    def at(self, sample_rate: int | None) -> np.ndarray:
        """The signal at ``sample_rate`` Hz (``None``: native rate)."""
        if sample_rate is None or sample_rate == self.sample_rate:
            return self.samples
        view = self._views.get(sample_rate)
        if view is None:
            view = resample(self.samples, self.sample_rate, sample_rate)
            self._views[sample_rate] = view
        return view

    @property
    def duration(self) -> float:
        return self.samples.size / self.sample_rate


def _dbfs(amplitude: float) -> str:
    if amplitude <= 0:
        return "-inf"
    return f"{20 * np.log10(amplitude):.1f}"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
