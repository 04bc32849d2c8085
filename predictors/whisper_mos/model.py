"""Whisper-based MOS predictor, MOSA-Net+ style (Zezario et al., "A Study on Incorporating
Whisper for Robust Speech Assessment", ICME 2024): Whisper encoder features into a trainable
head of a BLSTM and attention pooling.

The encoder is frozen by default: its features (one or several hidden states, combined by a
learned softmax weighting) are computed once per item and cached. With openai-whisper,
``finetune_blocks = k`` also trains the top ``k`` encoder blocks and ``ln_post``: the cached
input is then the hidden state below them, at Whisper's full 1500-frame window per 30 s chunk,
so the trained blocks see exactly the context they were pre-trained with; the head pools the
valid frames only.

Head: LayerNorm -> Linear(dim, proj) -> ReLU -> Dropout -> BLSTM(proj, hidden) (packed, so
padding never enters) -> additive attention (tanh, masked softmax over valid frames) ->
Linear -> score on the normalised scale ``[-1, 1]``.
"""

from __future__ import annotations

import copy
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from speechqe.errors import ConfigError

from ..config import WhisperHeadConfig





class WhisperMOSHead(nn.Module):
    """Input ``(batch, n_layers, frames, dim)`` + valid frame counts -> normalised scores."""

    def __init__(self, dim: int, n_layers: int, cfg: WhisperHeadConfig):
        super().__init__()
        self.cfg = cfg
        self.layer_weights = nn.Parameter(torch.zeros(n_layers))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Sequential(nn.Linear(dim, cfg.proj_dim), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.blstm = nn.LSTM(cfg.proj_dim, cfg.blstm_hidden, batch_first=True, bidirectional=True)
        self.attn = nn.Sequential(nn.Linear(2 * cfg.blstm_hidden, cfg.attn_hidden), nn.Tanh(),
                                  nn.Linear(cfg.attn_hidden, 1))
        self.out = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(2 * cfg.blstm_hidden, 1))

    def forward(self, feats, lengths):
        B, L, T, D = feats.shape
        w = torch.softmax(self.layer_weights, dim=0)
        x = (feats * w[None, :, None, None]).sum(1)
        x = self.proj(self.norm(x))
        packed = pack_padded_sequence(x, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False)
        h, _ = self.blstm(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=T)
        mask = torch.arange(T, device=x.device)[None, :] < lengths[:, None]
        a = self.attn(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        a = torch.softmax(a, dim=1)
        pooled = (a.unsqueeze(-1) * h).sum(1)
        return self.out(pooled).squeeze(-1)


class WhisperTopBlocks(nn.Module):
    """Trainable copies of an openai-whisper encoder's top ``k`` blocks and ``ln_post``.

    Input: the hidden state below them, ``(batch, 1500, dim)`` per 30 s chunk (no padding
    mask is needed: every chunk has Whisper's full window, as in pre-training).
    """

    def __init__(self, encoder, k: int):
        super().__init__()
        if not 0 < k <= len(encoder.blocks):
            raise ConfigError(f"finetune_blocks must be in 1..{len(encoder.blocks)}")
        self.blocks = nn.ModuleList(copy.deepcopy(b) for b in list(encoder.blocks)[-k:])
        self.ln_post = copy.deepcopy(encoder.ln_post)
        self.k = k

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.ln_post(x)
