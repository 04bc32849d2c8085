"""Shared helpers of the vocoder tests: tiny configs and an independent re-implementation of
the public unit HiFi-GAN (``torch.nn.utils.weight_norm`` modules named as in
speech-resynthesis / textlesslib, and their forward pass) used to build checkpoints in the
public layout and to check parity."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from speechqe.vocoders.unit_hifigan.config import (
    DiscriminatorConfig,
    GeneratorConfig,
    MelConfig,
    TrainConfig,
    VocoderConfig,
)

TINY_RATES = (5, 4, 4, 2, 2)  # hop 320: 50 Hz units at 16 kHz, like the public models


def tiny_generator(**kw) -> GeneratorConfig:
    base = dict(num_embeddings=12, embedding_dim=16, upsample_rates=TINY_RATES,
                upsample_kernel_sizes=(11, 8, 8, 4, 4), upsample_initial_channel=32,
                resblock="1", resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 3, 5),) * 2)
    base.update(kw)
    return GeneratorConfig(**base)


TINY_DISC = DiscriminatorConfig(
    periods=(2, 3), mpd_channels=(4, 8, 8, 8, 8), msd_scales=2,
    msd_channels=(8, 8, 16, 16, 16, 16, 16), msd_groups=(1, 4, 4, 4, 4, 4, 1),
)


def tiny_vocoder(steps_adv: int = 0, **train_kw) -> VocoderConfig:
    tr = dict(batch_size=2, segment_size=320 * 8, learning_rate=1e-3, adv_start_step=steps_adv,
              log_every=1, checkpoint_every=1000, keep_checkpoints=10, seed=7)
    tr.update(train_kw)
    return VocoderConfig(generator=tiny_generator(), discriminator=TINY_DISC,
                         mel=MelConfig(n_fft=512, hop_size=128, win_size=512, num_mels=40),
                         train=TrainConfig(**tr))


# ------------------------------------------------------------------------------------------
# Independent reference of the public CodeGenerator (old-style weight_norm: weight_g/weight_v)
# ------------------------------------------------------------------------------------------
def _wn(m):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.nn.utils.weight_norm(m)


def _pad(k, d=1):
    return (k * d - d) // 2


class RefResBlock(nn.Module):
    def __init__(self, ch, k, dil):
        super().__init__()
        self.convs1 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=_pad(k, d)))
                                    for d in dil)
        self.convs2 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, 1, padding=_pad(k))) for _ in dil)

    def forward(self, x):
        for a, b in zip(self.convs1, self.convs2):
            x = b(F.leaky_relu(a(F.leaky_relu(x, 0.1)), 0.1)) + x
        return x


class RefDur(nn.Module):
    def __init__(self, p: dict):
        super().__init__()
        e, h, k = p["encoder_embed_dim"], p["var_pred_hidden_dim"], p["var_pred_kernel_size"]
        self.conv1 = nn.Sequential(nn.Conv1d(e, h, k, padding=(k - 1) // 2), nn.ReLU())
        self.ln1 = nn.LayerNorm(h)
        self.conv2 = nn.Sequential(nn.Conv1d(h, h, k, padding=1), nn.ReLU())
        self.ln2 = nn.LayerNorm(h)
        self.proj = nn.Linear(h, 1)

    def forward(self, x):
        x = self.ln1(self.conv1(x.transpose(1, 2)).transpose(1, 2))
        x = self.ln2(self.conv2(x.transpose(1, 2)).transpose(1, 2))
        return self.proj(x).squeeze(2)


class RefCodeGenerator(nn.Module):
    """The public model's structure and forward, from its documented JSON fields."""

    def __init__(self, h: dict):
        super().__init__()
        self.h = h
        ch = h["upsample_initial_channel"]
        self.dict = nn.Embedding(h["num_embeddings"], h["embedding_dim"])
        if h.get("multispkr"):
            if h.get("embedder_params"):
                self.spkr = nn.Linear(h.get("embedder_dim", 256), h["embedding_dim"])
            else:
                self.spkr = nn.Embedding(h.get("num_speakers", 200), h["embedding_dim"])
        if h.get("dur_predictor_params"):
            self.dur_predictor = RefDur(h["dur_predictor_params"])
        if h.get("f0_quant_num_bin", 0) > 0:
            self.f0_quant_embed = nn.Embedding(h["f0_quant_num_bin"], h["embedding_dim"])
        self.conv_pre = _wn(nn.Conv1d(h["model_in_dim"], ch, 7, 1, padding=3))
        self.ups = nn.ModuleList(
            _wn(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(h["upsample_rates"], h["upsample_kernel_sizes"]))
        )
        self.resblocks = nn.ModuleList(
            RefResBlock(ch // 2 ** (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"])
        )
        self.conv_post = _wn(nn.Conv1d(ch // 2 ** len(self.ups), 1, 7, 1, padding=3))
        # Random, not tiny: parity must be checked on a waveform that varies.
        for name, p in self.named_parameters():
            if name.endswith("weight_g"):
                nn.init.uniform_(p, 0.8, 1.6)
            else:
                nn.init.normal_(p, 0.0, 0.3)

    def forward(self, code, f0=None, spkr=None, dur_prediction=False):
        x = self.dict(code).transpose(1, 2)
        if dur_prediction:
            d = torch.clamp(torch.round(torch.exp(self.dur_predictor(x.transpose(1, 2))) - 1)
                            .long(), min=1)
            x = torch.repeat_interleave(x, d.view(-1), dim=2)
        if self.h.get("f0"):
            f = (self.f0_quant_embed(f0.long()).transpose(1, 2) if self.h.get("f0_quant_num_bin")
                 else f0.unsqueeze(1))
            x = torch.cat([x, f], 1)
        if self.h.get("multispkr"):
            s = self.spkr(spkr).transpose(1, 2)
            x = torch.cat([x, s.repeat(1, 1, x.size(2))], 1)
        x = self.conv_pre(x)
        nk = len(self.h["resblock_kernel_sizes"])
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(self.resblocks[i * nk + j](x) for j in range(nk)) / nk
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


def public_config(**kw) -> dict:
    """A JSON config as the public repos write it (with their training-only fields)."""
    h = {
        "input_training_file": "datasets/LJSpeech/hubert100/train.txt",
        "resblock": "1", "num_gpus": 0, "batch_size": 16, "learning_rate": 0.0002,
        "adam_b1": 0.8, "adam_b2": 0.99, "lr_decay": 0.999, "seed": 1234,
        "upsample_rates": list(TINY_RATES), "upsample_kernel_sizes": [11, 8, 8, 4, 4],
        "upsample_initial_channel": 32, "resblock_kernel_sizes": [3, 7],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
        "num_embeddings": 12, "embedding_dim": 16, "model_in_dim": 16,
        "segment_size": 8960, "code_hop_size": 320, "f0": False, "num_mels": 80,
        "num_freq": 1025, "n_fft": 1024, "hop_size": 256, "win_size": 1024,
        "sampling_rate": 16000, "fmin": 0, "fmax": 8000, "fmax_for_loss": None,
        "num_workers": 4, "dist_config": {"dist_backend": "nccl", "dist_url": "env://"},
    }
    h.update(kw)
    return h
