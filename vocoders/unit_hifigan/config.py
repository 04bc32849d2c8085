"""Configuration of the unit HiFi-GAN: architecture, discriminators, mel loss, training.

Models of the project's one typed configuration system (:mod:`speechqe.config`: pydantic v2
:class:`~speechqe.config.StrictModel`, frozen, unknown keys are errors), whose field defaults
are the only defaults. Every invalid value, whether a constructor argument, a key of a file
(:meth:`VocoderConfig.load`) or a mapping (:meth:`VocoderConfig.from_dict`), raises
:class:`~speechqe.errors.ConfigError` in the one message style ``source: key.path: message``.

:class:`GeneratorConfig` maps one to one onto the JSON config of the public unit HiFi-GAN
checkpoints (speech-resynthesis, Polyak et al. Interspeech 2021; textlesslib / fairseq
``CodeHiFiGANVocoder``): the same field names (``upsample_rates``, ``upsample_kernel_sizes``,
``upsample_initial_channel``, ``resblock``, ``resblock_kernel_sizes``,
``resblock_dilation_sizes``, ``num_embeddings``, ``embedding_dim``, ``model_in_dim``, ``f0``,
``f0_quant_num_bin``, ``multispkr``, ``num_speakers``, ``embedder_params``, ``multistyle``,
``num_styles``, ``dur_predictor_params``, ``sampling_rate``), so
:meth:`GeneratorConfig.from_public` / :meth:`~GeneratorConfig.to_public` round-trip the public
files and our own checkpoints load in textlesslib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import Field, ValidationError, model_validator

from speechqe.config import StrictModel, describe_errors, read_mapping, validate
from speechqe.errors import ConfigError


class _ConfigMeta(type(StrictModel)):  # type: ignore[misc]
    """Direct construction (``GeneratorConfig(resblock="3")``) raises :class:`ConfigError`
    like a bad file does, not pydantic's ``ValidationError``. Done on the metaclass, not in
    ``__init__``: pydantic calls an overridden ``__init__`` for nested models too, which
    would report a nested error without its key path."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc, cls, cls.__name__)) from None


class _Config(StrictModel, metaclass=_ConfigMeta):
    """Base of the vocoder's configuration models (see the module docstring)."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "") -> Any:
        """Validate a mapping (e.g. the ``"vocoder"`` entry of a checkpoint's metadata)."""
        return validate(cls, dict(d), source or cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (tuples as lists); :meth:`from_dict` reads it back equal."""
        return self.model_dump(mode="json")

    def replace(self, **changes: Any) -> Any:
        """A validated copy with ``changes`` (``model_copy`` would skip validation)."""
        return type(self).from_dict({**self.model_dump(), **changes})


class DurationPredictorConfig(_Config):
    """The FastSpeech-style variance predictor that predicts ``log(1 + duration)`` of each
    deduplicated unit (Lee et al. 2022, "Direct speech-to-speech translation with discrete
    units"). Field names are those of the public ``dur_predictor_params``."""

    encoder_embed_dim: int = Field(128, ge=1)
    var_pred_hidden_dim: int = Field(128, ge=1)
    var_pred_kernel_size: int = Field(3, ge=1)
    var_pred_dropout: float = Field(0.5, ge=0.0, lt=1.0)


class GeneratorConfig(_Config):
    """Architecture of the unit HiFi-GAN generator.

    Attributes:
        num_embeddings: unit vocabulary size K.
        embedding_dim: width of the unit (and speaker/style/quantised-F0) embeddings.
        upsample_rates: the product is the hop in samples between two unit frames
            (``(5, 4, 4, 2, 2)``: 320 samples = 20 ms at 16 kHz, a 50 Hz unit rate).
        upsample_kernel_sizes: transposed-convolution kernels; ``k - u`` must be even so each
            stage multiplies the length exactly by ``u``.
        upsample_initial_channel: channels after ``conv_pre``; halved at each stage.
        resblock: ``'1'`` (three dilated conv pairs, HiFi-GAN V1/V2) or ``'2'`` (V3).
        resblock_kernel_sizes, resblock_dilation_sizes: the multi-receptive-field fusion blocks.
        f0: condition on F0 (one value per frame).
        f0_quant_num_bin: ``> 0``: F0 is given as bin indices and embedded (quantised F0, see
            :mod:`speechqe.vocoders.f0`); ``0``: F0 is one continuous channel.
        multispkr: condition on a speaker.
        num_speakers: size of the speaker-id table (public default 200).
        speaker_embedding_dim: ``> 0``: the speaker is given as a vector of this size (e.g. a
            256-d d-vector), projected by a linear layer (public ``embedder_params``);
            ``0``: as an id into the table.
        multistyle, num_styles: condition on a style id (Expresso vocoders).
        dur_predictor: present when the model predicts durations of deduplicated units.
        sampling_rate: output rate in Hz.
    """

    num_embeddings: int = Field(100, ge=1)
    embedding_dim: int = Field(128, ge=1)
    upsample_rates: tuple[int, ...] = Field((5, 4, 4, 2, 2), min_length=1)
    upsample_kernel_sizes: tuple[int, ...] = (11, 8, 8, 4, 4)
    upsample_initial_channel: int = Field(512, ge=1)
    resblock: Literal["1", "2"] = "1"
    resblock_kernel_sizes: tuple[int, ...] = Field((3, 7, 11), min_length=1)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    f0: bool = False
    f0_quant_num_bin: int = Field(0, ge=0)
    multispkr: bool = False
    num_speakers: int = Field(200, ge=1)
    speaker_embedding_dim: int = Field(0, ge=0)
    multistyle: bool = False
    num_styles: int = Field(100, ge=1)
    dur_predictor: DurationPredictorConfig | None = None
    sampling_rate: int = Field(16000, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "GeneratorConfig":
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes differ in length")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if k < u or (k - u) % 2:
                raise ValueError(
                    f"upsample kernel {k} with rate {u}: need k >= u and k - u even, so that "
                    "each stage multiplies the length exactly by its rate"
                )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        want = 3 if self.resblock == "1" else 2
        if any(len(d) != want for d in self.resblock_dilation_sizes):
            raise ValueError(f"resblock {self.resblock} needs {want} dilations per block")
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise ValueError("upsample_initial_channel must be divisible by "
                             "2**len(upsample_rates)")
        if self.dur_predictor and self.dur_predictor.encoder_embed_dim != self.embedding_dim:
            raise ValueError("dur_predictor.encoder_embed_dim must equal embedding_dim")
        return self

    # --- derived ------------------------------------------------------------------------------
    @property
    def hop_size(self) -> int:
        """Output samples per conditioning frame (the product of the upsampling rates)."""
        out = 1
        for u in self.upsample_rates:
            out *= u
        return out

    @property
    def frame_rate(self) -> float:
        """Conditioning frames per second."""
        return self.sampling_rate / self.hop_size

    @property
    def model_in_dim(self) -> int:
        """Channels entering ``conv_pre``: units + F0 + speaker + style."""
        dim = self.embedding_dim
        if self.f0:
            dim += self.embedding_dim if self.f0_quant_num_bin > 0 else 1
        if self.multispkr:
            dim += self.embedding_dim
        if self.multistyle:
            dim += self.embedding_dim
        return dim

    # --- public JSON layout --------------------------------------------------------------------
    def to_public(self) -> dict[str, Any]:
        """The public JSON config fields (textlesslib ``CodeGenerator`` reads these)."""
        d: dict[str, Any] = {
            "resblock": self.resblock,
            "upsample_rates": list(self.upsample_rates),
            "upsample_kernel_sizes": list(self.upsample_kernel_sizes),
            "upsample_initial_channel": self.upsample_initial_channel,
            "resblock_kernel_sizes": list(self.resblock_kernel_sizes),
            "resblock_dilation_sizes": [list(d) for d in self.resblock_dilation_sizes],
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "model_in_dim": self.model_in_dim,
            "sampling_rate": self.sampling_rate,
            "code_hop_size": self.hop_size,
            "f0": self.f0,
        }
        if self.f0_quant_num_bin:
            d["f0_quant_num_bin"] = self.f0_quant_num_bin
        if self.multispkr:
            d["multispkr"] = True
            d["num_speakers"] = self.num_speakers
            if self.speaker_embedding_dim:
                d["embedder_params"] = {"embedder_dim": self.speaker_embedding_dim}
                d["embedder_dim"] = self.speaker_embedding_dim
        if self.multistyle:
            d["multistyle"] = True
            d["num_styles"] = self.num_styles
        if self.dur_predictor is not None:
            d["dur_predictor_params"] = self.dur_predictor.model_dump()
        return d

    @classmethod
    def from_public(cls, cfg: Mapping[str, Any]) -> "GeneratorConfig":
        """Read a public JSON config (speech-resynthesis / textlesslib / fairseq).

        Training-only fields (learning rate, file lists, mel settings, ...) are ignored; fields
        that change the architecture and that we do not implement are refused.

        Raises:
            ConfigError: a required field is missing, ``model_in_dim`` disagrees with the
                conditioning options, or the config needs the speech-resynthesis F0 VQ-VAE
                (``f0_quantizer_path``, ``lambda_commit``) or the code VQ-VAE
                (``lambda_commit_code``), which are not implemented.
        """
        for key in ("f0_quantizer_path", "lambda_commit", "lambda_commit_code"):
            if cfg.get(key):
                raise ConfigError(
                    f"this checkpoint's config sets {key!r}: it needs speech-resynthesis' "
                    "VQ-VAE F0/code quantiser, which speechqe does not implement (supported: "
                    "unit embeddings, continuous or binned F0, speaker id/vector, style, "
                    "duration predictor)"
                )
        required = ("upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
                    "resblock_kernel_sizes", "resblock_dilation_sizes", "num_embeddings",
                    "embedding_dim")
        missing = [k for k in required if k not in cfg]
        if missing:
            raise ConfigError(f"unit HiFi-GAN config lacks {missing}")
        embedder = cfg.get("embedder_params") or None
        spk_dim = 0
        if embedder:
            spk_dim = int(cfg.get("embedder_dim", embedder.get("embedder_dim", 256)
                                  if isinstance(embedder, Mapping) else 256))
        dur = cfg.get("dur_predictor_params") or None
        out = cls(
            num_embeddings=int(cfg["num_embeddings"]),
            embedding_dim=int(cfg["embedding_dim"]),
            upsample_rates=cfg["upsample_rates"],
            upsample_kernel_sizes=cfg["upsample_kernel_sizes"],
            upsample_initial_channel=int(cfg["upsample_initial_channel"]),
            resblock=str(cfg.get("resblock", "1")),
            resblock_kernel_sizes=cfg["resblock_kernel_sizes"],
            resblock_dilation_sizes=cfg["resblock_dilation_sizes"],
            f0=bool(cfg.get("f0", False)),
            f0_quant_num_bin=int(cfg.get("f0_quant_num_bin", 0) or 0),
            # speech-resynthesis writes "multispkr": "single"/"multi" (any truthy value builds
            # the speaker table); a speaker vector input implies multispkr in textlesslib too.
            multispkr=bool(cfg.get("multispkr")) or bool(embedder),
            num_speakers=int(cfg.get("num_speakers", 200)),
            speaker_embedding_dim=spk_dim,
            multistyle=bool(cfg.get("multistyle")),
            num_styles=int(cfg.get("num_styles", 100)),
            dur_predictor=(
                DurationPredictorConfig(**{
                    k: dur[k] for k in ("encoder_embed_dim", "var_pred_hidden_dim",
                                        "var_pred_kernel_size", "var_pred_dropout")
                }) if dur else None
            ),
            sampling_rate=int(cfg.get("sampling_rate", 16000)),
        )
        declared = cfg.get("model_in_dim")
        if declared is not None and int(declared) != out.model_in_dim:
            raise ConfigError(
                f"model_in_dim={declared} in the config, but the conditioning options give "
                f"{out.model_in_dim} (units {out.embedding_dim}, f0={out.f0}, "
                f"f0_quant_num_bin={out.f0_quant_num_bin}, multispkr={out.multispkr}, "
                f"multistyle={out.multistyle})"
            )
        if "code_hop_size" in cfg and int(cfg["code_hop_size"]) != out.hop_size:
            raise ConfigError(
                f"code_hop_size={cfg['code_hop_size']} but the upsampling rates multiply to "
                f"{out.hop_size}"
            )
        return out



class DiscriminatorConfig(_Config):
    """Multi-period (HiFi-GAN) and multi-scale (MelGAN) discriminators.

    The defaults are HiFi-GAN's; narrower channel lists make the small models used in tests
    and CPU runs (each list keeps its length: it is the depth of the network).
    """

    periods: tuple[int, ...] = Field((2, 3, 5, 7, 11), min_length=1)
    mpd_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
    msd_scales: int = Field(3, ge=1)
    msd_channels: tuple[int, ...] = (128, 128, 256, 512, 1024, 1024, 1024)
    msd_groups: tuple[int, ...] = (1, 4, 16, 16, 16, 16, 1)

    @model_validator(mode="after")
    def _consistent(self) -> "DiscriminatorConfig":
        if len(self.mpd_channels) != 5:
            raise ValueError("mpd_channels needs 5 widths (4 strided + 1 plain conv)")
        if len(self.msd_channels) != 7 or len(self.msd_groups) != 7:
            raise ValueError("msd_channels and msd_groups need 7 entries")
        for i, (c, g) in enumerate(zip(self.msd_channels, self.msd_groups)):
            cin = 1 if i == 0 else self.msd_channels[i - 1]
            if c % g or cin % g:
                raise ValueError(f"msd layer {i}: channels {cin}->{c} not divisible by "
                                 f"groups {g}")
        return self


class MelConfig(_Config):
    """The log-mel spectrogram of the reconstruction loss (HiFi-GAN's: magnitude STFT,
    Slaney mel filters, natural log clamped at 1e-5, reflect padding, no centring)."""

    n_fft: int = Field(1024, ge=1)
    hop_size: int = Field(256, ge=1)
    win_size: int = Field(1024, ge=1)
    num_mels: int = Field(80, ge=1)
    fmin: float = Field(0.0, ge=0.0)
    fmax: float | None = 8000.0


class TrainConfig(_Config):
    """Training hyper-parameters (HiFi-GAN's unless said otherwise).

    Attributes:
        segment_size: samples per training segment; rounded down to a multiple of the hop.
        adv_start_step: steps trained on the mel loss alone before the discriminators start
            (ParallelWaveGAN's ``discriminator_train_start_steps``; 0 = HiFi-GAN).
        amp: ``'none'``, ``'bf16'`` or ``'fp16'`` autocast (CUDA only; ``fp16`` uses a grad
            scaler). On CPU it must be ``'none'``.
        lr_decay, lr_decay_steps: the learning rate is multiplied by ``lr_decay`` every
            ``lr_decay_steps`` steps (0: once per epoch, HiFi-GAN's schedule; on a corpus of a
            few clips an epoch is a couple of steps, so set it explicitly there).
        log_every, checkpoint_every: in steps.
    """

    batch_size: int = Field(16, ge=1)
    segment_size: int = Field(8960, ge=1)
    learning_rate: float = Field(2e-4, gt=0.0)
    adam_b1: float = Field(0.8, ge=0.0, lt=1.0)
    adam_b2: float = Field(0.99, ge=0.0, lt=1.0)
    lr_decay: float = Field(0.999, gt=0.0, le=1.0)
    lr_decay_steps: int = Field(0, ge=0)
    lambda_mel: float = Field(45.0, ge=0.0)
    lambda_fm: float = Field(2.0, ge=0.0)
    lambda_adv: float = Field(1.0, ge=0.0)
    lambda_dur: float = Field(1.0, ge=0.0)
    adv_start_step: int = Field(0, ge=0)
    amp: Literal["none", "bf16", "fp16"] = "none"
    workers: int = Field(0, ge=0)
    seed: int = 1234
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    keep_checkpoints: int = Field(2, ge=1)


class VocoderConfig(_Config):
    """Everything that defines one unit HiFi-GAN training setup (a YAML/JSON file with the
    sections ``generator``, ``discriminator``, ``mel``, ``train``; each may be left out)."""

    generator: GeneratorConfig = GeneratorConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    mel: MelConfig = MelConfig()
    train: TrainConfig = TrainConfig()

    @classmethod
    def load(cls, path: str | Path) -> "VocoderConfig":
        """Read a YAML or JSON vocoder config (:func:`speechqe.config.read_mapping`).

        Raises:
            ConfigError: ``path: key.path: message`` for each bad or unknown key.
        """
        return validate(cls, read_mapping(path, "vocoder config"), str(path))
