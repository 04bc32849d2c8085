"""Automatic speech recognition for intelligibility metrics (WER, CER).

* :mod:`.backends`: one small interface, ``transcribe(list of float32 16 kHz arrays) -> list[str]``,
  over two real implementations: openai-whisper (:mod:`.whisper_openai`; any size, batched
  decoding, fp16 on GPU) and faster-whisper / CTranslate2 (:mod:`.whisper_faster`; int8 on CPU;
  the packaged Whisper tiny.en is the offline default).
* :mod:`.normalize`: Whisper's English normaliser for English, a documented basic normaliser
  otherwise, and the character view used for CER and for languages written without spaces.
* :mod:`.edits`: edit counts (hits, substitutions, deletions, insertions) with jiwer.
* :mod:`.convert`: a reader of CTranslate2 ``model.bin`` files and a converter of CTranslate2
  Whisper models to openai-whisper checkpoints.

Importing this package is cheap: torch, whisper, faster-whisper and jiwer are imported lazily.
"""

from __future__ import annotations

from .backends import ASRBackend, BackendConfig, load_backend
from .edits import EditCounts, count_edits
from .normalize import get_normalizer

__all__ = [
    "ASRBackend",
    "BackendConfig",
    "EditCounts",
    "count_edits",
    "get_normalizer",
    "load_backend",
]
