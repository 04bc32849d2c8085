"""The UTMOS strong learner (Saeki et al., "UTMOS: UTokyo-SaruLab System for VoiceMOS
Challenge 2022", Interspeech 2022, arXiv:2204.02152; code: sarulab-speech/UTMOS22).

Per frame, the SSL features are concatenated with an optional phoneme-sequence feature, a
domain (listening test) embedding and a listener embedding; a BLSTM and a two-layer projection
give frame scores, averaged into the utterance score. Scores live on the normalised scale
``[-1, 1]`` (``(mos - 3) / 2`` for a 1-5 scale) during training, as in UTMOS22.

Listener table: row 0 is the *mean listener* (trained on the utterance MOS, used at
inference); rows ``1..n`` are the training listeners. Domain table: one row per training
domain; inference uses the configured default domain.

Differences from the public code, on purpose:

* padding is masked everywhere (the SSL front end, the BLSTM via packed sequences, the frame
  mean), so a padded batch gives the scores of batch size 1; SpeechMOS's port averages padded
  frames into the mean and recommends batch size 1;
* the SSL layer can be the last one (UTMOS) or a learned weighted sum of all layers.

Hyper-parameter defaults follow UTMOS22's ``strong/configs``: 128-d domain and listener
embeddings, a 512-unit BLSTM, a 2048-unit ReLU projection with dropout 0.3.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from speechqe.encoders.ssl import LayerMix, SSLEncoder
from ..config import StrongModelConfig  # noqa: F401 - the head's config lives with the others

#: Symbols of the text-sequence encoder: 0 = padding, 1 = unknown, then these characters.
SYMBOLS = "abcdefghijklmnopqrstuvwxyz' "


def text_to_ids(text: str | None) -> list[int]:
    """Lower-cased characters -> ids (``SYMBOLS``; others -> 1). ``None``/empty -> ``[1]``."""
    if not text:
        return [1]
    table = {c: i + 2 for i, c in enumerate(SYMBOLS)}
    ids = [table.get(c, 1) for c in " ".join(text.lower().split())]
    return ids or [1]





class TextEncoder(nn.Module):
    """Embedding + BLSTM over a symbol sequence -> one vector per utterance."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.embedding = nn.Embedding(len(SYMBOLS) + 2, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, dim, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=0.1 if layers > 1 else 0.0)
        self.linear = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU())

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.embedding(tokens), lengths.cpu().clamp(min=1),
                                      batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.linear(torch.cat([h[-2], h[-1]], dim=-1))


class StrongLearner(nn.Module):
    """SSL encoder + domain/listener embeddings + BLSTM + projection.

    Args:
        ssl: the (trainable) SSL encoder.
        cfg: head configuration.
        n_domains: rows of the domain table (>= 1).
        n_listeners: training listeners (the table has ``n_listeners + 1`` rows, row 0 = mean).
    """

    def __init__(self, ssl: SSLEncoder, cfg: StrongModelConfig, n_domains: int = 1, n_listeners: int = 0):
        super().__init__()
        self.cfg = cfg
        self.ssl = ssl
        self.ssl_model = ssl.module  # registered, so .parameters()/.state_dict() include it
        self.mix = LayerMix(ssl.num_layers + 1, cfg.layer)
        self.domain_emb = nn.Embedding(max(1, n_domains), cfg.domain_dim)
        self.listener_emb = nn.Embedding(n_listeners + 1, cfg.listener_dim)
        feat = ssl.dim + cfg.domain_dim + cfg.listener_dim
        self.text = None
        if cfg.phoneme:
            self.text = TextEncoder(cfg.phoneme_dim, cfg.phoneme_layers)
            feat += cfg.phoneme_dim
        self.blstm = nn.LSTM(feat, cfg.blstm_hidden, batch_first=True, bidirectional=True)
        self.projection = nn.Sequential(
            nn.Linear(2 * cfg.blstm_hidden, cfg.proj_hidden), nn.ReLU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.proj_hidden, 1),
        )

    @property
    def n_listeners(self) -> int:
        return self.listener_emb.num_embeddings - 1

    def forward(self, wave, lengths, domains=None, listeners=None, tokens=None, token_lengths=None):
        """Scores on the normalised scale.

        Args:
            wave: ``(batch, samples)`` at 16 kHz; lengths: ``(batch,)`` valid samples.
            domains: ``(batch,)`` domain rows (default 0); listeners: ``(batch,)`` listener rows
                (default 0, the mean listener).
            tokens, token_lengths: ``(batch, symbols)`` and ``(batch,)`` when ``phoneme``.

        Returns:
            ``(utterance (batch,), frames (batch, T), mask (batch, T))``; padded frames are
            excluded from the utterance mean and marked ``False`` in ``mask``.
        """
        B = wave.shape[0]
        dev = wave.device
        hidden, n = self.ssl.forward(wave, lengths, num_layers=self.mix.needed_layers)
        x = self.mix(hidden)
        T = x.shape[1]
        if domains is None:
            domains = torch.zeros(B, dtype=torch.long, device=dev)
        if listeners is None:
            listeners = torch.zeros(B, dtype=torch.long, device=dev)
        parts = [x]
        if self.text is not None:
            if tokens is None:
                raise ValueError("this model encodes the transcript: pass tokens and token_lengths")
            parts.append(self.text(tokens, token_lengths).unsqueeze(1).expand(B, T, -1))
        parts.append(self.domain_emb(domains).unsqueeze(1).expand(B, T, -1))
        parts.append(self.listener_emb(listeners).unsqueeze(1).expand(B, T, -1))
        # The head runs in float32 even under mixed precision (cuDNN RNNs and the frame mean
        # are where low precision hurts; the SSL encoder is where the time goes).
        with torch.autocast(dev.type, enabled=False):
            feats = torch.cat([p.float() for p in parts], dim=-1)
            packed = pack_padded_sequence(feats, n.cpu().clamp(min=1), batch_first=True,
                                          enforce_sorted=False)
            out, _ = self.blstm(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
            frames = self.projection(out).squeeze(-1)
            mask = torch.arange(T, device=dev)[None, :] < n[:, None]
            frames = frames.masked_fill(~mask, 0.0)
            utt = frames.sum(1) / n.clamp(min=1).to(frames.dtype)
        return utt, frames, mask
