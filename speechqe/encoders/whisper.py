"""Whisper encoders as feature extractors: openai-whisper (per layer, trainable top blocks) and
the CTranslate2 encoder used by faster-whisper (final layer; the packaged tiny.en model is the
one pretrained speech encoder that runs offline here).

Whisper's encoder always sees 30-second windows: a signal is cut into 30 s chunks, each chunk
is zero-padded to 30 s and turned into its own log-mel spectrogram (the ``log_mel_spectrogram(
pad_or_trim(audio))`` path of openai-whisper, whose ``max - 8`` dynamic-range floor is per
spectrogram), encoded, and cut back to its valid frames (one per 320 samples, 50 per second).
Chunks of different items never share a spectrogram, so a batch equals batch size 1.

``pad_to_30s=False`` encodes each chunk at its own length instead (much faster for short
clips: the encoder's cost is the full 1500 frames otherwise). The representations then differ
from those Whisper was trained on; the option is part of :attr:`encoder_id`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from speechqe.errors import ConfigError, MissingDependencyError

from .base import Encoder, stable_hash

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 30 * SAMPLE_RATE
SAMPLES_PER_FRAME = 320  # hop 160, then the stride-2 convolution


def valid_frames(n_samples: int) -> int:
    """Encoder frames that carry signal for a chunk of ``n_samples`` (<= 1500)."""
    return min(CHUNK_SAMPLES // SAMPLES_PER_FRAME, max(1, math.ceil(n_samples / SAMPLES_PER_FRAME)))


def chunks(x: np.ndarray) -> list[np.ndarray]:
    """Cut a signal into consecutive 30 s chunks (the last one shorter)."""
    if x.size == 0:
        raise ValueError("cannot encode an empty signal")
    return [x[i : i + CHUNK_SAMPLES] for i in range(0, x.size, CHUNK_SAMPLES)]


def _pad30(x: np.ndarray) -> np.ndarray:
    return np.pad(x, (0, CHUNK_SAMPLES - x.size)) if x.size < CHUNK_SAMPLES else x


# ------------------------------------------------------------------------------------------
# openai-whisper
# ------------------------------------------------------------------------------------------
class OpenAIWhisperEncoder(Encoder):
    """The encoder of an openai-whisper model, per layer.

    Args:
        model: a ``whisper.model.Whisper`` (only its ``encoder`` is kept).
        name: readable model name for :attr:`encoder_id`.
        fingerprint: checksum of the checkpoint.
        pad_to_30s: see the module docstring.

    Hidden states: 0 is the input to the first block (convolutions + positional embedding),
    ``k`` block ``k``'s output; the last one is after ``ln_post`` (the encoder's output).
    """

    sample_rate = SAMPLE_RATE
    frame_rate = SAMPLE_RATE / SAMPLES_PER_FRAME

    def __init__(self, model: Any, *, name: str, fingerprint: str, pad_to_30s: bool = True):
        self.encoder = model.encoder
        self.n_mels = int(model.dims.n_mels)
        self.num_layers = int(model.dims.n_audio_layer)
        self.dim = int(model.dims.n_audio_state)
        self.name = name
        self.fingerprint = fingerprint
        self.pad_to_30s = bool(pad_to_30s)

    @property
    def encoder_id(self) -> str:
        return f"whisper:{self.name}:{self.fingerprint}" + ("" if self.pad_to_30s else ":nopad")

    def mel(self, chunk: np.ndarray):
        """Log-mel spectrogram ``(n_mels, frames)`` of one chunk (padded to 30 s if set)."""
        import torch
        from whisper.audio import log_mel_spectrogram

        x = _pad30(chunk) if self.pad_to_30s else chunk
        return log_mel_spectrogram(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), n_mels=self.n_mels)

    def hidden_states(self, mel, num_layers: int | None = None, start: int = 0, x=None):
        """Run the encoder on ``mel`` ``(batch, n_mels, frames)`` (or continue from hidden state
        ``x`` at block ``start``); returns the list of hidden states from ``start`` on."""
        import torch.nn.functional as F

        enc = self.encoder
        if x is None:
            x = F.gelu(enc.conv1(mel))
            x = F.gelu(enc.conv2(x))
            x = x.permute(0, 2, 1)
            x = (x + enc.positional_embedding[: x.shape[1]]).to(x.dtype)
        hidden = [x]
        limit = self.num_layers if num_layers is None else int(num_layers)
        for i in range(start, limit):
            x = enc.blocks[i](x)
            hidden.append(x)
        if limit == self.num_layers:
            hidden[-1] = enc.ln_post(hidden[-1])
        return hidden

    def encode(self, signals: Sequence[np.ndarray], layers: Sequence[int] | None = None,
               *, max_batch: int = 4) -> list[np.ndarray]:
        import torch

        sel = self.resolve_layers(layers)
        pieces = [(i, c) for i, s in enumerate(signals) for c in chunks(np.asarray(s, np.float32))]
        outs: list[list[np.ndarray]] = [[] for _ in signals]
        dev = next(self.encoder.parameters()).device
        # Padded chunks all have 3000 mel frames and batch freely; unpadded chunks differ in
        # length and are encoded one at a time (no padding enters attention).
        step = max_batch if self.pad_to_30s else 1
        with torch.inference_mode():
            for b in range(0, len(pieces), step):
                group = pieces[b : b + step]
                mel = torch.stack([self.mel(c) for _, c in group]).to(dev)
                mel = mel.to(next(self.encoder.parameters()).dtype)
                hidden = self.hidden_states(mel, num_layers=max(sel))
                stacked = torch.stack([hidden[k] for k in sel], dim=1).float().cpu().numpy()
                for j, (i, c) in enumerate(group):
                    outs[i].append(stacked[j, :, : valid_frames(c.size)])
        return [np.ascontiguousarray(np.concatenate(o, axis=1)) for o in outs]


#: openai-whisper model names that are built offline, with no manual step, by converting a
#: packaged CTranslate2 asset (:func:`converted_checkpoint`): every encoder block is then
#: available (``whisper:whisper-tiny.en``, ``--layer N``), where the CTranslate2 encoder gives
#: only the final one.
PACKAGED_CONVERSIONS = {"whisper-tiny.en": "whisper-tiny.en-ct2"}


def converted_checkpoint(ct2_asset: str) -> Path:
    """The openai-whisper checkpoint converted from the CTranslate2 Whisper asset
    ``ct2_asset`` (:func:`speechqe.asr.convert.convert_ct2_whisper`), converted once into
    ``<speechqe cache>/converted/`` and named by the CTranslate2 weights' fingerprint, so new
    weights convert again; a file lock makes concurrent first uses convert once."""
    from filelock import FileLock

    from speechqe import assets
    from speechqe.asr.convert import convert_ct2_whisper

    asset = assets.get(ct2_asset)
    folder = asset.path()
    out = assets.cache_dir() / "converted" / f"{ct2_asset}-{asset.fingerprint()}.pt"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not out.is_file():
            convert_ct2_whisper(folder, out)
    return out


def load_openai_whisper(
    source: str | Path, *, device: str = "cpu", pad_to_30s: bool = True
) -> OpenAIWhisperEncoder:
    """``source``: a local ``.pt`` checkpoint, an asset name (``openai-whisper-base``, registered
    in ``data/assets/asr.yaml``; a CTranslate2 Whisper asset such as ``whisper-tiny.en-ct2`` is
    converted), a name of :data:`PACKAGED_CONVERSIONS` (``whisper-tiny.en``: the packaged
    weights, offline) or an openai-whisper model name (``base``, downloaded by openai-whisper);
    loaded by ``whisper.load_model`` (which reads with ``weights_only=True``)."""
    try:
        import whisper
    except ImportError as exc:
        raise MissingDependencyError("openai-whisper", "models", "the Whisper encoder") from exc
    from speechqe import assets

    src = str(source)
    path = Path(src).expanduser()
    converted_from = None
    if not path.is_file() and src in PACKAGED_CONVERSIONS:
        converted_from = PACKAGED_CONVERSIONS[src]
    elif not path.is_file() and src in assets.catalogue():
        if (assets.get(src).path() / "model.bin").is_file():
            converted_from = src
        else:
            path = assets.get(src).file()
    if converted_from is not None:
        # identified by the CTranslate2 weights the conversion is a function of
        path = converted_checkpoint(converted_from)
        name, fp = src, "ct2-" + assets.get(converted_from).fingerprint()
        model = whisper.load_model(str(path), device=device)
    elif path.is_file():
        fp = assets.cached_sha256(path)[:12]
        name = path.stem
        with assets.refusing_pickled_code(path, "Whisper checkpoint"):
            model = whisper.load_model(str(path), device=device)
    elif src in whisper.available_models():
        model = whisper.load_model(src, device=device)
        name, fp = src, "openai-" + src
    else:
        raise ConfigError(
            f"Whisper source '{src}' is not a checkpoint file, a registered asset or one of "
            f"{', '.join(whisper.available_models())}"
        )
    model.eval()
    return OpenAIWhisperEncoder(model, name=name, fingerprint=fp, pad_to_30s=pad_to_30s)


# ------------------------------------------------------------------------------------------
# CTranslate2 (faster-whisper)
# ------------------------------------------------------------------------------------------
class CT2WhisperEncoder(Encoder):
    """The CTranslate2 Whisper encoder (final layer only), as faster-whisper runs it.

    Args:
        model_dir: a CTranslate2 Whisper folder (``model.bin``, ``config.json``...).
        fingerprint: checksum of the weights.
        compute_type: CTranslate2 compute type (``float32`` keeps full precision on CPU;
            ``int8`` is ~25% faster with quantised weights; part of :attr:`encoder_id`).
        pad_to_30s: see the module docstring.
    """

    sample_rate = SAMPLE_RATE
    frame_rate = SAMPLE_RATE / SAMPLES_PER_FRAME
    num_layers = 0

    def __init__(
        self,
        model_dir: str | Path,
        *,
        name: str,
        fingerprint: str,
        device: str = "cpu",
        compute_type: str = "float32",
        pad_to_30s: bool = True,
        cpu_threads: int = 0,
    ):
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise MissingDependencyError("faster-whisper", "models", "the CTranslate2 Whisper encoder") from exc
        import torch

        threads = cpu_threads or max(1, torch.get_num_threads())
        self._wm = WhisperModel(
            str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads
        )
        self.name = name
        self.fingerprint = fingerprint
        self.compute_type = compute_type
        self.pad_to_30s = bool(pad_to_30s)
        self._dim: int | None = None

    @property
    def dim(self) -> int:  # type: ignore[override]
        if self._dim is None:
            self._dim = int(self._encode_chunks([np.zeros(SAMPLES_PER_FRAME * 4, np.float32)])[0].shape[-1])
        return self._dim

    @property
    def encoder_id(self) -> str:
        tag = stable_hash({"compute_type": self.compute_type, "pad": self.pad_to_30s}, 8)
        return f"whisper-ct2:{self.name}:{self.fingerprint}:{tag}"

    def _mel(self, chunk: np.ndarray) -> np.ndarray:
        x = _pad30(chunk) if self.pad_to_30s else chunk
        # padding=0: the chunk is already padded; the extractor drops the last STFT frame,
        # giving 3000 frames for 30 s as openai-whisper does.
        return self._wm.feature_extractor(np.ascontiguousarray(x, np.float32), padding=0)

    def _encode_chunks(self, group: Sequence[np.ndarray]) -> list[np.ndarray]:
        import ctranslate2

        mel = np.stack([self._mel(c) for c in group]).astype(np.float32)
        out = self._wm.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True)
        arr = np.array(out, dtype=np.float32)
        return [arr[j, : valid_frames(c.size)] for j, c in enumerate(group)]

    def encode(self, signals: Sequence[np.ndarray], layers: Sequence[int] | None = None,
               *, max_batch: int = 4) -> list[np.ndarray]:
        self.resolve_layers(layers)
        pieces = [(i, c) for i, s in enumerate(signals) for c in chunks(np.asarray(s, np.float32))]
        outs: list[list[np.ndarray]] = [[] for _ in signals]
        step = max_batch if self.pad_to_30s else 1
        for b in range(0, len(pieces), step):
            group = pieces[b : b + step]
            for (i, _), feats in zip(group, self._encode_chunks([c for _, c in group])):
                outs[i].append(feats)
        if self._dim is None and outs and outs[0]:
            self._dim = int(outs[0][0].shape[-1])
        return [np.ascontiguousarray(np.concatenate(o, axis=0))[None] for o in outs]


def load_ct2_whisper(
    source: str | Path = "whisper-tiny.en-ct2",
    *,
    device: str = "cpu",
    compute_type: str = "float32",
    pad_to_30s: bool = True,
) -> CT2WhisperEncoder:
    """``source``: an asset name (default: the packaged ``whisper-tiny.en-ct2``) or a
    CTranslate2 Whisper folder."""
    from speechqe import assets

    src = str(source)
    path = Path(src).expanduser()
    if path.is_dir():
        model_bin = path / "model.bin"
        if not model_bin.is_file():
            raise ConfigError(f"not a CTranslate2 model folder (no model.bin): {path}")
        fp, name = assets.cached_sha256(model_bin)[:12], path.name
    elif src in assets.catalogue():
        asset = assets.get(src)
        path = asset.path()
        fp, name = asset.fingerprint(), src
    else:
        raise ConfigError(f"CTranslate2 Whisper source '{src}' is neither a folder nor an asset")
    return CT2WhisperEncoder(
        path, name=name, fingerprint=fp, device=device, compute_type=compute_type,
        pad_to_30s=pad_to_30s,
    )
