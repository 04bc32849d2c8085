"""The unit HiFi-GAN generator and its duration predictor (built from a config; no file I/O).

Architecture: HiFi-GAN (Kong et al., NeurIPS 2020) driven by embeddings of discrete units
instead of a mel spectrogram, as in speech-resynthesis (Polyak et al., Interspeech 2021) and the
unit vocoders of textlesslib/fairseq (Lee et al., ACL 2022, with a duration predictor). Module
and parameter names follow those public models (``dict``, ``spkr``, ``style``,
``f0_quant_embed``, ``dur_predictor``, ``conv_pre``, ``ups``, ``resblocks``, ``conv_post``), so
their ``generator`` state dicts load after renaming the weight-norm tensors (see
:mod:`.checkpoint`).

Batching: every convolution sees its input multiplied by the item's time mask, so the frames
past an item's end are exactly the zeros that single-item inference pads with, and a batch gives
the same samples as the items one by one (up to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from .config import DurationPredictorConfig, GeneratorConfig

LRELU_SLOPE = 0.1


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """'same' padding of an odd kernel."""
    return (kernel_size * dilation - dilation) // 2


def _init(module: nn.Module) -> nn.Module:
    # HiFi-GAN initialises its convolutions from N(0, 0.01) before weight normalisation.
    nn.init.normal_(module.weight, 0.0, 0.01)
    return module


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def _remove_wn(module: nn.Module) -> None:
    if parametrize.is_parametrized(module, "weight"):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs with residual connections (HiFi-GAN V1/V2)."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(_init(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                        padding=get_padding(kernel_size, d))))
            for d in dilation
        )
        self.convs2 = nn.ModuleList(
            weight_norm(_init(nn.Conv1d(channels, channels, kernel_size, 1,
                                        padding=get_padding(kernel_size, 1))))
            for _ in dilation
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c1(_masked(F.leaky_relu(x, LRELU_SLOPE), mask))
            xt = c2(_masked(F.leaky_relu(xt, LRELU_SLOPE), mask))
            x = xt + x
        return x

    def remove_weight_norm(self) -> None:
        for c in [*self.convs1, *self.convs2]:
            _remove_wn(c)


class ResBlock2(nn.Module):
    """Two dilated convs with residual connections (HiFi-GAN V3)."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList(
            weight_norm(_init(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                        padding=get_padding(kernel_size, d))))
            for d in dilation
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for c in self.convs:
            x = c(_masked(F.leaky_relu(x, LRELU_SLOPE), mask)) + x
        return x

    def remove_weight_norm(self) -> None:
        for c in self.convs:
            _remove_wn(c)


class VariancePredictor(nn.Module):
    """Predicts ``log(1 + duration)`` per deduplicated unit (FastSpeech 2's variance predictor).

    Input ``(batch, units, encoder_embed_dim)``; output ``(batch, units)``.
    """

    def __init__(self, cfg: DurationPredictorConfig):
        super().__init__()
        k = cfg.var_pred_kernel_size
        self.conv1 = nn.Sequential(
            nn.Conv1d(cfg.encoder_embed_dim, cfg.var_pred_hidden_dim, k, padding=(k - 1) // 2),
            nn.ReLU(),
        )
        self.ln1 = nn.LayerNorm(cfg.var_pred_hidden_dim)
        self.conv2 = nn.Sequential(
            nn.Conv1d(cfg.var_pred_hidden_dim, cfg.var_pred_hidden_dim, k, padding=(k - 1) // 2),
            nn.ReLU(),
        )
        self.ln2 = nn.LayerNorm(cfg.var_pred_hidden_dim)
        self.proj = nn.Linear(cfg.var_pred_hidden_dim, 1)
        self.dropout = cfg.var_pred_dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        m = None if mask is None else mask.unsqueeze(2).to(x.dtype)  # (B, T, 1)
        x = self.conv1(_masked(x, m).transpose(1, 2)).transpose(1, 2)
        x = F.dropout(self.ln1(x), p=self.dropout, training=self.training)
        x = self.conv2(_masked(x, m).transpose(1, 2)).transpose(1, 2)
        x = F.dropout(self.ln2(x), p=self.dropout, training=self.training)
        return self.proj(x).squeeze(2)


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(batch,)`` lengths -> ``(batch, max_len)`` bool mask, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def run_lengths(units: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run-length encode one ``(frames,)`` sequence -> (unique units, durations), both long."""
    values, counts = torch.unique_consecutive(units, return_counts=True)
    return values, counts


def expand_by_durations(
    x: torch.Tensor, durations: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat each frame of ``x`` ``durations`` times, per item, and right-pad.

    Args:
        x: ``(batch, channels, units)``.
        durations: ``(batch, units)`` long, >= 1 on valid units.
        lengths: ``(batch,)`` valid units per item.

    Returns:
        ``(batch, channels, frames)`` and the ``(batch,)`` frame counts.
    """
    outs = [
        torch.repeat_interleave(x[b, :, : int(lengths[b])], durations[b, : int(lengths[b])], dim=1)
        for b in range(x.size(0))
    ]
    new_lengths = torch.tensor([o.size(1) for o in outs], device=x.device, dtype=torch.long)
    out = x.new_zeros(x.size(0), x.size(1), int(new_lengths.max()))
    for b, o in enumerate(outs):
        out[b, :, : o.size(1)] = o
    return out, new_lengths


class UnitHiFiGAN(nn.Module):
    """Unit embeddings (+ F0, speaker, style) -> waveform.

    Shapes: ``units`` ``(batch, frames)`` long; output ``(batch, 1, frames * hop_size)`` in
    [-1, 1] at ``cfg.sampling_rate``.
    """

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.dict = nn.Embedding(cfg.num_embeddings, cfg.embedding_dim)
        if cfg.multispkr:
            self.spkr = (
                nn.Linear(cfg.speaker_embedding_dim, cfg.embedding_dim)
                if cfg.speaker_embedding_dim
                else nn.Embedding(cfg.num_speakers, cfg.embedding_dim)
            )
        if cfg.multistyle:
            self.style = nn.Embedding(cfg.num_styles, cfg.embedding_dim)
        self.f0_quant_embed = (
            nn.Embedding(cfg.f0_quant_num_bin, cfg.embedding_dim)
            if cfg.f0 and cfg.f0_quant_num_bin > 0 else None
        )
        self.dur_predictor = VariancePredictor(cfg.dur_predictor) if cfg.dur_predictor else None

        ch0 = cfg.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(cfg.model_in_dim, ch0, 7, 1, padding=3))
        self.ups = nn.ModuleList(
            weight_norm(_init(nn.ConvTranspose1d(ch0 // 2**i, ch0 // 2 ** (i + 1), k, u,
                                                 padding=(k - u) // 2)))
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.resblocks = nn.ModuleList(
            block(ch0 // 2 ** (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        self.conv_post = weight_norm(_init(nn.Conv1d(ch0 // 2 ** len(self.ups), 1, 7, 1,
                                                     padding=3)))

    # --- conditioning ---------------------------------------------------------------------------
    def _condition(
        self, units: torch.Tensor, f0: torch.Tensor | None, speaker: torch.Tensor | None,
        style: torch.Tensor | None,
    ) -> torch.Tensor:
        cfg = self.cfg
        x = self.dict(units).transpose(1, 2)  # (B, E, T)
        if cfg.f0:
            if f0 is None:
                raise ValueError("this vocoder is conditioned on F0: pass f0")
            if f0.shape != units.shape:
                raise ValueError(f"f0 {tuple(f0.shape)} must match units {tuple(units.shape)}")
            if self.f0_quant_embed is not None:
                f = self.f0_quant_embed(f0.long()).transpose(1, 2)
            else:
                f = f0.to(x.dtype).unsqueeze(1)
            x = torch.cat([x, f], dim=1)
        if cfg.multispkr:
            if speaker is None:
                raise ValueError("this vocoder is conditioned on a speaker: pass speaker")
            s = self.spkr(speaker.reshape(units.size(0), -1) if cfg.speaker_embedding_dim
                          else speaker.reshape(units.size(0)).long())
            x = torch.cat([x, s.to(x.dtype).unsqueeze(2).expand(-1, -1, x.size(2))], dim=1)
        if cfg.multistyle:
            if style is None:
                raise ValueError("this vocoder is conditioned on a style: pass style")
            s = self.style(style.reshape(units.size(0)).long())
            x = torch.cat([x, s.unsqueeze(2).expand(-1, -1, x.size(2))], dim=1)
        return x

    def decode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The HiFi-GAN body: ``(batch, model_in_dim, frames)`` -> ``(batch, 1, samples)``.

        ``mask`` is ``(batch, 1, frames)`` (1 on valid frames) or ``None`` for a full batch.
        """
        x = self.conv_pre(_masked(x, mask))
        for i, (up, rate) in enumerate(zip(self.ups, self.cfg.upsample_rates)):
            x = up(_masked(F.leaky_relu(x, LRELU_SLOPE), mask))
            if mask is not None:
                mask = mask.repeat_interleave(rate, dim=2)
            xs = self.resblocks[i * self.num_kernels](x, mask)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x, mask)
            x = xs / self.num_kernels
        # The public models use leaky_relu's default slope (0.01) here, not 0.1.
        x = self.conv_post(_masked(F.leaky_relu(x), mask))
        return torch.tanh(x)

    def forward(
        self,
        units: torch.Tensor,
        lengths: torch.Tensor | None = None,
        f0: torch.Tensor | None = None,
        speaker: torch.Tensor | None = None,
        style: torch.Tensor | None = None,
        durations: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Synthesise.

        Args:
            units: ``(batch, frames)`` long unit ids (padding: any valid id past ``lengths``).
            lengths: ``(batch,)`` valid frames per item (``None``: all full).
            f0: ``(batch, frames)``: bin indices (quantised) or F0 values (continuous), when
                ``cfg.f0``; frame-aligned with ``units`` (after duration expansion).
            speaker: ``(batch,)`` ids or ``(batch, speaker_embedding_dim)`` vectors.
            style: ``(batch,)`` ids.
            durations: ``(batch, frames)`` frames per (deduplicated) unit; each unit is
                repeated that many times before synthesis.

        Returns:
            ``(batch, 1, max_frames * hop_size)``; item ``b`` is valid up to
            ``lengths'[b] * hop_size`` samples (see :meth:`output_lengths`).
        """
        B, T = units.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=units.device)
        if durations is not None:
            # Expand the unit ids themselves: conditioning then sees frame-level ids.
            ids, lengths = expand_by_durations(units.unsqueeze(1), durations, lengths)
            units = ids.squeeze(1)
            T = units.size(1)
        x = self._condition(units, f0, speaker, style)
        mask = None
        if bool((lengths < T).any()):
            mask = lengths_to_mask(lengths, T).unsqueeze(1).to(x.dtype)
        return self.decode(x, mask)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Samples produced for ``lengths`` frames."""
        return lengths * self.cfg.hop_size

    # --- durations ------------------------------------------------------------------------------
    def predict_durations(self, units: torch.Tensor, lengths: torch.Tensor | None = None
                          ) -> torch.Tensor:
        """Frames per deduplicated unit: ``round(exp(pred) - 1)``, at least 1; ``(batch, units)``
        long (0 past ``lengths``)."""
        if self.dur_predictor is None:
            raise ValueError("this vocoder has no duration predictor")
        B, T = units.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=units.device)
        mask = lengths_to_mask(lengths, T)
        log_d = self.dur_predictor(self.dict(units), mask)
        dur = torch.clamp(torch.round(torch.exp(log_d) - 1).long(), min=1)
        return dur * mask

    def duration_loss(self, units: torch.Tensor, lengths: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """MSE between predicted and true ``log(1 + duration)`` of the runs in frame-level
        ``units`` ``(batch, frames)``.

        The first and last run of each item are left out when it has more than two, since a
        segment cut from a longer utterance truncates them (as the public training does).
        """
        if self.dur_predictor is None:
            raise ValueError("this vocoder has no duration predictor")
        B, T = units.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=units.device)
        runs, durs = [], []
        for b in range(B):
            v, c = run_lengths(units[b, : int(lengths[b])])
            if v.numel() > 2:
                v, c = v[1:-1], c[1:-1]
            runs.append(v)
            durs.append(c)
        n = torch.tensor([r.numel() for r in runs], device=units.device)
        U = int(n.max())
        ids = units.new_zeros(B, U)
        target = torch.zeros(B, U, device=units.device)
        for b in range(B):
            ids[b, : n[b]] = runs[b]
            target[b, : n[b]] = durs[b].float()
        mask = lengths_to_mask(n, U)
        pred = self.dur_predictor(self.dict(ids), mask)
        return F.mse_loss(pred.float()[mask], torch.log1p(target)[mask])

    # --- inference speed-up -----------------------------------------------------------------------
    def remove_weight_norm(self) -> None:
        """Fold weight normalisation into plain weights (same outputs, faster inference)."""
        for m in [self.conv_pre, *self.ups, self.conv_post]:
            _remove_wn(m)
        for rb in self.resblocks:
            rb.remove_weight_norm()

    @property
    def has_weight_norm(self) -> bool:
        return parametrize.is_parametrized(self.conv_pre, "weight")
