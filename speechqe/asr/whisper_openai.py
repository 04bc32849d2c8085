"""openai-whisper backend: any checkpoint in the official format, batched decoding.

Model resolution (:func:`resolve_checkpoint`): a registered asset (``openai-whisper-<size>``:
found in openai-whisper's own cache ``~/.cache/whisper`` or ours, else downloaded and verified
against the sha256 that openai-whisper publishes), a size name (``tiny.en``, ``large-v3``,
``turbo``), or a local ``.pt`` file holding ``{'dims': ..., 'model_state_dict': ...}`` (e.g. a
fine-tuned model, or one converted from CTranslate2 with :mod:`speechqe.asr.convert`).

Decoding: utterances up to 30 s are decoded together with ``whisper.decode`` on a batch of
log-Mel spectrograms (each padded to 30 s, as Whisper expects), sorted by duration so that a
batch holds utterances of similar length (length bucketing: the decoder loop runs until the
longest transcript of a batch ends). Every utterance sees exactly the input it would see alone,
so batched and one-at-a-time decoding give the same transcripts (tested on CPU). Temperature 0,
no timestamps, no temperature fallback: the transcript is a deterministic function of the audio.
Longer utterances go through ``whisper.transcribe`` one at a time (sequential 30 s windows).
fp16 on GPU, fp32 on CPU.

Beam search over a batch of several utterances fails in openai-whisper 20231117-20250625 (the
encoder output is not repeated per beam since openai/whisper#1483; reported in #2197, fixes
proposed in #2389 and #2843). :class:`_GroupedDecodingTask` repeats it, only when the installed
``DecodingTask.run`` does not already do so.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from speechqe.errors import ConfigError, MissingDependencyError

from .base import ASRBackend, BackendConfig, DEFAULT_MODELS, file_fingerprint

#: Sizes openai-whisper knows, and the alias each is registered under.
SIZE_ALIASES = {"large": "large-v3", "turbo": "large-v3-turbo"}


def resolve_checkpoint(model: str) -> tuple[Path, str]:
    """Return ``(checkpoint path, fingerprint)`` for a model reference (see module docstring).

    Raises:
        ConfigError: neither an asset, a size, nor an existing file.
        AssetError: a registered checkpoint is missing (with how to provide it) or corrupt.
    """
    from speechqe import assets

    model = model or DEFAULT_MODELS["openai-whisper"]
    path = Path(model).expanduser()
    if path.suffix == ".pt" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"openai-whisper checkpoint not found: {path}")
        return path.resolve(), "sha256-" + file_fingerprint(path)
    name = model if model in assets.catalogue() else f"openai-whisper-{SIZE_ALIASES.get(model, model)}"
    if name not in assets.catalogue():
        sizes = sorted(a.param("size") for a in assets.catalogue().values()
                       if a.format == "openai-whisper")
        raise ConfigError(
            f"unknown openai-whisper model {model!r}: give a size ({', '.join(sizes)}), an asset "
            "name (speechqe models) or a path to a .pt checkpoint"
        )
    asset = assets.get(name)
    if asset.format != "openai-whisper":
        raise ConfigError(f"asset {name!r} is a {asset.format} model, not an openai-whisper checkpoint")
    return asset.file(), f"{name}@{asset.fingerprint()}"


@lru_cache(maxsize=1)
def _decoding_task_class():
    """``whisper.decoding.DecodingTask``, fixed for beam search over batches when needed."""
    from whisper.decoding import DecodingTask

    try:
        upstream_repeats = "audio_features.repeat_interleave" in inspect.getsource(DecodingTask.run)
    except (OSError, TypeError):  # no source available: assume the released behaviour
        upstream_repeats = False
    if upstream_repeats:
        return DecodingTask

    class _GroupedDecodingTask(DecodingTask):
        """Repeat each utterance's encoder output once per beam (row ``i * n_group + g``),
        matching how ``run`` repeats the token rows, and what ``run`` later undoes with
        ``audio_features[:: n_group]``."""

        def _get_audio_features(self, mel):
            features = super()._get_audio_features(mel)
            return features.repeat_interleave(self.n_group, dim=0) if self.n_group > 1 else features

        def _detect_language(self, audio_features, tokens):
            # called before the token rows are repeated: one feature row per utterance
            return super()._detect_language(audio_features[:: self.n_group], tokens)

    return _GroupedDecodingTask


class OpenAIWhisperBackend(ASRBackend):
    """openai-whisper (``whisper.decode``) with batched, length-bucketed decoding."""

    def __init__(self, config: BackendConfig):
        super().__init__(config)
        try:
            import torch
            import whisper
        except ImportError as exc:
            raise MissingDependencyError("openai-whisper", "models", "the openai-whisper ASR backend") from exc
        path, fingerprint = resolve_checkpoint(config.model)
        if config.compute_type not in ("auto", "float16", "float32"):
            raise ConfigError(
                f"openai-whisper compute_type must be auto, float16 or float32 (got {config.compute_type!r})"
            )
        self.fp16 = config.device == "cuda" and config.compute_type in ("auto", "float16")
        if config.compute_type == "float16" and config.device != "cuda":
            raise ConfigError("openai-whisper runs float16 only on a GPU; use compute_type=auto on CPU")
        from speechqe.assets import refusing_pickled_code

        with refusing_pickled_code(path, "Whisper checkpoint"):
            self.model = whisper.load_model(str(path), device=config.device)
        self.model.eval()
        if not self.model.is_multilingual and config.language != "en":
            raise ConfigError(
                f"{config.model or path.name} is an English-only model; language={config.language!r} "
                "needs a multilingual one (e.g. model=large-v3)"
            )
        self._torch = torch
        self._whisper = whisper
        self.model_id = (
            f"openai-whisper:{fingerprint}:{config.language}:beam{config.beam_size}:"
            f"{'fp16' if self.fp16 else 'fp32'}"
        )

    def _options(self):
        return self._whisper.DecodingOptions(
            task="transcribe",
            language=self.config.language,
            temperature=0.0,
            beam_size=self.config.beam_size if self.config.beam_size > 1 else None,
            without_timestamps=True,
            fp16=self.fp16,
        )

    def transcribe(self, audios: Sequence[np.ndarray]) -> list[str]:
        """See :meth:`ASRBackend.transcribe`. Utterances <= 30 s are decoded in batches of
        ``batch_size``, bucketed by length; longer ones one by one."""
        whisper, torch = self._whisper, self._torch
        n_samples = whisper.audio.N_SAMPLES
        out: list[str | None] = [None] * len(audios)
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
        short = [i for i in order if len(audios[i]) <= n_samples]
        long = [i for i in order if len(audios[i]) > n_samples]
        bs = self.config.batch_size
        options = self._options()
        with torch.no_grad():
            for k in range(0, len(short), bs):
                idx = short[k : k + bs]
                mel = torch.stack([self._mel(audios[i]) for i in idx])
                if self.fp16:
                    mel = mel.half()
                results = _decoding_task_class()(self.model, options).run(mel)
                for i, r in zip(idx, results):
                    out[i] = r.text.strip()
            for i in long:
                res = whisper.transcribe(
                    self.model, np.ascontiguousarray(audios[i], dtype=np.float32),
                    language=self.config.language, task="transcribe", temperature=0.0,
                    beam_size=self.config.beam_size if self.config.beam_size > 1 else None,
                    condition_on_previous_text=False, fp16=self.fp16, verbose=None,
                )
                out[i] = str(res["text"]).strip()
        return [t if t is not None else "" for t in out]

    def _mel(self, audio: np.ndarray):
        whisper = self._whisper
        x = whisper.pad_or_trim(self._torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)))
        return whisper.log_mel_spectrogram(
            x, n_mels=self.model.dims.n_mels, device=self.model.device
        )
