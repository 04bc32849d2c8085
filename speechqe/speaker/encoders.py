"""Speaker encoders: a 16 kHz mono signal -> a unit-norm speaker embedding.

Two real backends:

* ``resemblyzer`` (offline default): Resemblyzer's GE2E encoder (3-layer LSTM over 40-band mel
  frames, 256-d d-vectors; Wan et al., ICASSP 2018), weights from the ``resemblyzer-ge2e``
  asset (the wheel's ``pretrained.pt``, verified by sha256). The signal first goes through
  Resemblyzer's own preprocessing (volume normalisation to -30 dBFS and removal of long silences
  with webrtcvad) unless ``vad_trim`` is off; the utterance embedding is the normalised mean of
  1.6 s partial embeddings (``VoiceEncoder.embed_utterance``).
* ``speechbrain-ecapa``: SpeechBrain's ECAPA-TDNN ``EncoderClassifier`` (Desplanques et al.,
  Interspeech 2020), 192-d, from the ``speechbrain-spkrec-ecapa-voxceleb`` asset (downloaded on
  first use and verified) or from any local folder that ``from_hparams`` can load
  (``hyperparams.yaml`` + checkpoints). The folder is loaded in place: its
  ``pretrained_path`` is pointed at the folder itself so that nothing is fetched.

Embeddings are computed one utterance at a time: ECAPA's reflect padding and Resemblyzer's
partial windows make a zero-padded batch differ from the utterance alone, and a batch must never
change a score.
"""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from speechqe.config import StrictModel
from speechqe.errors import ConfigError, MissingDependencyError

SAMPLE_RATE = 16000
EncoderName = Literal["resemblyzer", "speechbrain-ecapa"]
ENCODERS = get_args(EncoderName)
DEFAULT_MODELS = {
    "resemblyzer": "resemblyzer-ge2e",
    "speechbrain-ecapa": "speechbrain-spkrec-ecapa-voxceleb",
}


class SpeakerEncoderOptions(StrictModel):
    """What determines the embeddings, apart from the device: the settings that the
    ``speaker_sim`` parameters (:class:`speechqe.metrics.speaker.SpeakerSimParams`) and an
    :class:`EncoderConfig` share. Their defaults live here only.

    Attributes:
        backend: ``resemblyzer`` or ``speechbrain-ecapa``.
        model: asset name or local path (``''``: :data:`DEFAULT_MODELS`). resemblyzer: a
            ``.pt`` file or a folder holding ``pretrained.pt``; speechbrain-ecapa: a
            ``from_hparams`` folder.
        vad_trim: resemblyzer only: apply Resemblyzer's preprocessing (volume normalisation and
            long-silence removal) before embedding.
    """

    backend: EncoderName = "resemblyzer"
    model: str = ""
    vad_trim: bool = True

    def encoder_options(self) -> dict[str, object]:
        """The :class:`SpeakerEncoderOptions` fields of this config (of a subclass too)."""
        return {name: getattr(self, name) for name in SpeakerEncoderOptions.model_fields}


class EncoderConfig(SpeakerEncoderOptions):
    """What determines a speaker encoder instance: :class:`SpeakerEncoderOptions` and the
    device (``cpu`` or ``cuda``)."""

    device: Literal["cpu", "cuda"] = "cpu"


class SpeakerEncoder(ABC):
    """A loaded speaker encoder.

    Attributes:
        model_id: identifies the weights (checksums) and settings; part of stored keys.
        dim: embedding size.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, config: EncoderConfig):
        self.config = config
        self.model_id = ""
        self.dim = 0

    @abstractmethod
    def embed(self, audio: np.ndarray) -> np.ndarray:
        """Embedding ``(dim,)`` float32, unit L2 norm, of ``audio`` (``(samples,)`` float32 at
        16 kHz)."""

    def embed_many(self, audios) -> np.ndarray:
        """``(n, dim)``: :meth:`embed` of each signal (one at a time; see module docstring)."""
        return np.stack([self.embed(a) for a in audios]) if len(audios) else np.zeros((0, self.dim))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32).ravel()
    n = float(np.linalg.norm(x))
    if not np.isfinite(n) or n == 0:
        raise ValueError("the speaker encoder returned a zero or non-finite embedding")
    return x / n


def _local_fingerprint(paths) -> str:
    import hashlib

    from speechqe.assets import cached_sha256

    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b":" + cached_sha256(p).encode() + b"|")
    return "sha256-" + h.hexdigest()[:12]


class ResemblyzerEncoder(SpeakerEncoder):
    """Resemblyzer GE2E d-vectors (256-d)."""

    def __init__(self, config: EncoderConfig):
        super().__init__(config)
        try:
            from resemblyzer import VoiceEncoder
            from resemblyzer.audio import preprocess_wav
        except ImportError as exc:
            raise MissingDependencyError("resemblyzer", "models", "the resemblyzer speaker encoder") from exc
        from speechqe import assets

        model = config.model or DEFAULT_MODELS["resemblyzer"]
        if model in assets.catalogue():
            asset = assets.get(model)
            weights = asset.file("pretrained.pt")
            ident = f"{model}@{asset.fingerprint()}"
        else:
            p = Path(model).expanduser()
            weights = p / "pretrained.pt" if p.is_dir() else p
            if not weights.is_file():
                raise ConfigError(
                    f"resemblyzer weights not found: {weights} (give an asset name, a .pt file "
                    "or a folder holding pretrained.pt)"
                )
            ident = _local_fingerprint([weights])
        self._preprocess = preprocess_wav
        self.model = VoiceEncoder(device=config.device, verbose=False, weights_fpath=weights)
        self.model.eval()
        self.dim = int(self.model.linear.out_features)
        self.model_id = f"resemblyzer:{ident}:vad{int(config.vad_trim)}"

    def embed(self, audio: np.ndarray) -> np.ndarray:
        wav = np.ascontiguousarray(audio, dtype=np.float32)
        if self.config.vad_trim:
            trimmed = self._preprocess(wav)
            # all-silence by webrtcvad: keep the (volume-normalised) signal instead of nothing
            wav = trimmed if trimmed.size >= SAMPLE_RATE // 4 else wav
        return _unit(self.model.embed_utterance(wav.astype(np.float32)))


class ECAPAEncoder(SpeakerEncoder):
    """SpeechBrain ECAPA-TDNN ``EncoderClassifier`` embeddings."""

    def __init__(self, config: EncoderConfig):
        super().__init__(config)
        try:
            import torch
            from speechbrain.inference.speaker import EncoderClassifier
            from speechbrain.utils.fetching import LocalStrategy
        except ImportError as exc:
            raise MissingDependencyError("speechbrain", "models", "the ECAPA-TDNN speaker encoder") from exc
        folder, ident = resolve_ecapa_folder(config.model)
        # the public hyperparams.yaml points its checkpoints at the Hub repo id; point them at
        # the verified folder so that nothing is fetched (when the file has that key)
        text = (folder / "hyperparams.yaml").read_text(encoding="utf-8")
        overrides = {"pretrained_path": str(folder)} if re.search(
            r"^pretrained_path\s*:", text, re.M) else {}
        try:
            self.model = EncoderClassifier.from_hparams(
                source=str(folder),
                savedir=str(folder),
                overrides=overrides,
                run_opts={"device": config.device},
                local_strategy=LocalStrategy.NO_LINK,
            )
        except (KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
            raise ConfigError(
                f"speechbrain cannot load the ECAPA model in {folder}: {type(exc).__name__}: {exc}"
            ) from exc
        self.model.eval()
        self._torch = torch
        with torch.no_grad():
            probe = self.model.encode_batch(torch.zeros(1, SAMPLE_RATE))
        self.dim = int(probe.shape[-1])
        self.model_id = f"speechbrain-ecapa:{ident}"

    def embed(self, audio: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
        with torch.no_grad():
            e = self.model.encode_batch(x.to(self.config.device))
        return _unit(e.detach().cpu().numpy())


def resolve_ecapa_folder(model: str) -> tuple[Path, str]:
    """``(folder for from_hparams, fingerprint)`` of an ECAPA asset name or local folder.

    Raises:
        AssetError: the registered model is missing (with how to provide it) or corrupt.
        ConfigError: a local folder without ``hyperparams.yaml``.
    """
    from speechqe import assets

    model = model or DEFAULT_MODELS["speechbrain-ecapa"]
    if model in assets.catalogue():
        asset = assets.get(model)
        if asset.format != "speechbrain-hparams":
            raise ConfigError(f"asset {model!r} is a {asset.format} model, not a speechbrain folder")
        return asset.path(), f"{model}@{asset.fingerprint()}"
    folder = Path(model).expanduser()
    if not (folder / "hyperparams.yaml").is_file():
        raise ConfigError(
            f"{model!r} is neither a registered speechbrain asset nor a folder holding "
            "hyperparams.yaml (a from_hparams folder such as a copy of "
            "speechbrain/spkrec-ecapa-voxceleb)"
        )
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".yaml", ".ckpt", ".txt"))
    return folder.resolve(), _local_fingerprint(files)


_instances: dict[EncoderConfig, SpeakerEncoder] = {}
_lock = threading.Lock()


def load_encoder(config: EncoderConfig) -> SpeakerEncoder:
    """The encoder for ``config``, loaded once per process."""
    with _lock:
        inst = _instances.get(config)
        if inst is None:
            cls = ResemblyzerEncoder if config.backend == "resemblyzer" else ECAPAEncoder
            inst = cls(config)
            _instances[config] = inst
        return inst
