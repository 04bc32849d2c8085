"""Configuration of the unit HiFi-GAN: architecture, discriminators, mel loss, training.

Frozen dataclasses whose defaults are the only defaults. :class:`GeneratorConfig` maps one to
one onto the JSON config of the public unit HiFi-GAN checkpoints (speech-resynthesis, Polyak et
al. Interspeech 2021; textlesslib / fairseq ``CodeHiFiGANVocoder``): the same field names
(``upsample_rates``, ``upsample_kernel_sizes``, ``upsample_initial_channel``, ``resblock``,
``resblock_kernel_sizes``, ``resblock_dilation_sizes``, ``num_embeddings``, ``embedding_dim``,
``model_in_dim``, ``f0``, ``f0_quant_num_bin``, ``multispkr``, ``num_speakers``,
``embedder_params``, ``multistyle``, ``num_styles``, ``dur_predictor_params``,
``sampling_rate``), so :meth:`GeneratorConfig.from_public` / :meth:`to_public` round-trip the
public files and our own checkpoints load in textlesslib.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from speechqe.errors import ConfigError


def _tuple(x: Any) -> tuple:
    return tuple(_tuple(v) if isinstance(v, (list, tuple)) else v for v in x)


def check_keys(cls: type, d: Mapping[str, Any], where: str) -> None:
    """Raise :class:`ConfigError` for keys of ``d`` that are not fields of ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(names)}")


@dataclass(frozen=True)
class DurationPredictorConfig:
    """The FastSpeech-style variance predictor that predicts ``log(1 + duration)`` of each
    deduplicated unit (Lee et al. 2022, "Direct speech-to-speech translation with discrete
    units"). Field names are those of the public ``dur_predictor_params``."""

    encoder_embed_dim: int = 128
    var_pred_hidden_dim: int = 128
    var_pred_kernel_size: int = 3
    var_pred_dropout: float = 0.5


@dataclass(frozen=True)
class GeneratorConfig:
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

    num_embeddings: int = 100
    embedding_dim: int = 128
    upsample_rates: tuple[int, ...] = (5, 4, 4, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (11, 8, 8, 4, 4)
    upsample_initial_channel: int = 512
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    f0: bool = False
    f0_quant_num_bin: int = 0
    multispkr: bool = False
    num_speakers: int = 200
    speaker_embedding_dim: int = 0
    multistyle: bool = False
    num_styles: int = 100
    dur_predictor: DurationPredictorConfig | None = None
    sampling_rate: int = 16000

    def __post_init__(self) -> None:
        for name in ("upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes",
                     "resblock_dilation_sizes"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
        if isinstance(self.dur_predictor, Mapping):
            check_keys(DurationPredictorConfig, self.dur_predictor, "dur_predictor")
            object.__setattr__(self, "dur_predictor", DurationPredictorConfig(**self.dur_predictor))
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ConfigError("upsample_rates and upsample_kernel_sizes differ in length")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if k < u or (k - u) % 2:
                raise ConfigError(
                    f"upsample kernel {k} with rate {u}: need k >= u and k - u even, so that "
                    "each stage multiplies the length exactly by its rate"
                )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ConfigError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        if self.resblock not in ("1", "2"):
            raise ConfigError(f"resblock must be '1' or '2' (got {self.resblock!r})")
        want = 3 if self.resblock == "1" else 2
        if any(len(d) != want for d in self.resblock_dilation_sizes):
            raise ConfigError(f"resblock {self.resblock} needs {want} dilations per block")
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise ConfigError("upsample_initial_channel must be divisible by 2**len(upsample_rates)")
        if self.f0_quant_num_bin < 0 or self.num_embeddings < 1 or self.embedding_dim < 1:
            raise ConfigError("num_embeddings, embedding_dim >= 1 and f0_quant_num_bin >= 0")
        if self.dur_predictor and self.dur_predictor.encoder_embed_dim != self.embedding_dim:
            raise ConfigError("dur_predictor.encoder_embed_dim must equal embedding_dim")

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
            d["dur_predictor_params"] = dataclasses.asdict(self.dur_predictor)
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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GeneratorConfig":
        check_keys(cls, d, "generator config")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Multi-period (HiFi-GAN) and multi-scale (MelGAN) discriminators.

    The defaults are HiFi-GAN's; narrower channel lists make the small models used in tests
    and CPU runs (each list keeps its length: it is the depth of the network).
    """

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    mpd_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
    msd_scales: int = 3
    msd_channels: tuple[int, ...] = (128, 128, 256, 512, 1024, 1024, 1024)
    msd_groups: tuple[int, ...] = (1, 4, 16, 16, 16, 16, 1)

    def __post_init__(self) -> None:
        for name in ("periods", "mpd_channels", "msd_channels", "msd_groups"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
        if len(self.mpd_channels) != 5:
            raise ConfigError("mpd_channels needs 5 widths (4 strided + 1 plain conv)")
        if len(self.msd_channels) != 7 or len(self.msd_groups) != 7:
            raise ConfigError("msd_channels and msd_groups need 7 entries")
        for i, (c, g) in enumerate(zip(self.msd_channels, self.msd_groups)):
            cin = 1 if i == 0 else self.msd_channels[i - 1]
            if c % g or cin % g:
                raise ConfigError(f"msd layer {i}: channels {cin}->{c} not divisible by groups {g}")


@dataclass(frozen=True)
class MelConfig:
    """The log-mel spectrogram of the reconstruction loss (HiFi-GAN's: magnitude STFT,
    Slaney mel filters, natural log clamped at 1e-5, reflect padding, no centring)."""

    n_fft: int = 1024
    hop_size: int = 256
    win_size: int = 1024
    num_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0


@dataclass(frozen=True)
class TrainConfig:
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

    batch_size: int = 16
    segment_size: int = 8960
    learning_rate: float = 2e-4
    adam_b1: float = 0.8
    adam_b2: float = 0.99
    lr_decay: float = 0.999
    lr_decay_steps: int = 0
    lambda_mel: float = 45.0
    lambda_fm: float = 2.0
    lambda_adv: float = 1.0
    lambda_dur: float = 1.0
    adv_start_step: int = 0
    amp: str = "none"
    workers: int = 0
    seed: int = 1234
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp must be none, bf16 or fp16 (got {self.amp!r})")
        if self.batch_size < 1 or self.segment_size < 1 or self.workers < 0:
            raise ConfigError("batch_size, segment_size >= 1 and workers >= 0")


@dataclass(frozen=True)
class VocoderConfig:
    """Everything that defines one unit HiFi-GAN training setup."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VocoderConfig":
        check_keys(cls, d, "vocoder config")
        parts = {}
        for f, sub in (("generator", GeneratorConfig), ("discriminator", DiscriminatorConfig),
                       ("mel", MelConfig), ("train", TrainConfig)):
            if f in d:
                check_keys(sub, d[f], f"vocoder config [{f}]")
                parts[f] = sub(**d[f])
        return cls(**parts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
