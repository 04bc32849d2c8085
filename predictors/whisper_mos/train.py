"""Features, training and inference of the Whisper-based predictor."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from speechqe.encoders import FeatureCache, encode_cached, feature_key
from speechqe.encoders.whisper import chunks, valid_frames
from speechqe.errors import ConfigError

from ..config import WhisperTrainConfig
from ..ssl_strong.loss import contrastive
from .model import WhisperHeadConfig, WhisperMOSHead, WhisperTopBlocks





def _pre_top(encoder, signal: np.ndarray, k: int) -> np.ndarray:
    """Hidden state below the top ``k`` blocks, ``(chunks, 1500, dim)`` (full windows)."""
    out = []
    for c in chunks(signal):
        mel = encoder.mel(c)[None].to(next(encoder.encoder.parameters()).device)
        with torch.inference_mode():
            h = encoder.hidden_states(mel, num_layers=encoder.num_layers - k)[-1]
        out.append(h[0].float().cpu().numpy())
    return np.stack(out)


def item_features(encoder, cfg: WhisperHeadConfig, signals: Sequence[np.ndarray], hashes: Sequence[str],
                  cache: FeatureCache | None) -> list[np.ndarray]:
    """Per item: ``(n_layers, frames, dim)`` (frozen) or ``(chunks, 1500, dim)`` (fine-tuning)."""
    if cfg.finetune_blocks == 0:
        return encode_cached(encoder, signals, hashes, list(cfg.layers), cache)
    if not hasattr(encoder, "hidden_states") or not getattr(encoder, "pad_to_30s", False):
        raise ConfigError("fine-tuning top blocks needs the openai-whisper encoder with pad_to_30s")
    out = []
    for s, h in zip(signals, hashes):
        key = feature_key(h, encoder.encoder_id, f"pre-top-{cfg.finetune_blocks}")
        out.append(cache.get_or_compute(key, lambda s=s: _pre_top(encoder, s, cfg.finetune_blocks))
                   if cache is not None else _pre_top(encoder, s, cfg.finetune_blocks))
    return out


class WhisperMOS(torch.nn.Module):
    """Head (+ trainable top blocks) over cached Whisper features."""

    def __init__(self, dim: int, cfg: WhisperHeadConfig, encoder=None):
        super().__init__()
        self.cfg = cfg
        self.head = WhisperMOSHead(dim, 1 if cfg.finetune_blocks else len(cfg.layers), cfg)
        self.top = WhisperTopBlocks(encoder.encoder, cfg.finetune_blocks) if cfg.finetune_blocks else None

    def score(self, feats: list[np.ndarray], sample_counts: list[int] | None, *, train: bool = False,
              gen: torch.Generator | None = None, max_frames: int = 0, device="cpu"):
        """Normalised scores of a batch of items' features."""
        seqs = []
        for i, f in enumerate(feats):
            if self.top is None:
                x = torch.from_numpy(np.asarray(f, np.float32))
                if train and max_frames and x.shape[1] > max_frames:
                    st = int(torch.randint(0, x.shape[1] - max_frames + 1, (), generator=gen))
                    x = x[:, st : st + max_frames]
                seqs.append(x.to(device))
            else:
                n = sample_counts[i]
                valid = [valid_frames(min(n - c * 480000, 480000)) for c in range(f.shape[0])]
                idx = range(f.shape[0])
                if train:  # one random 30 s chunk per item per step
                    c = int(torch.randint(0, f.shape[0], (), generator=gen))
                    idx = [c]
                h = self.top(torch.from_numpy(np.asarray(f[list(idx)], np.float32)).to(device))
                seqs.append(torch.cat([h[j, : valid[c]] for j, c in enumerate(idx)], 0)[None])
        lengths = torch.tensor([s.shape[1] for s in seqs], device=device)
        L, D = seqs[0].shape[0], seqs[0].shape[2]
        batch = torch.zeros(len(seqs), L, int(lengths.max()), D, device=device)
        for i, s in enumerate(seqs):
            batch[i, :, : s.shape[1]] = s
        return self.head(batch, lengths)


def train_whisper_mos(model: WhisperMOS, feats: list[np.ndarray], sample_counts: list[int],
                      targets: np.ndarray, cfg: WhisperTrainConfig, *, device: str = "cpu") -> WhisperMOS:
    """Train on precomputed features; ``targets`` on the label scale."""
    dev = torch.device(device)
    model.to(dev).train()
    y = torch.tensor(model.cfg.normalise(np.asarray(targets, np.float64)), dtype=torch.float32)
    groups = [{"params": list(model.head.parameters()), "lr": cfg.lr}]
    if model.top is not None:
        groups.append({"params": list(model.top.parameters()), "lr": cfg.finetune_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(feats)
    bs = min(cfg.batch_size, n)
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen).tolist()
        for b in range(0, n - bs + 1, bs):
            idx = order[b : b + bs]
            pred = model.score([feats[i] for i in idx], [sample_counts[i] for i in idx], train=True,
                               gen=gen, max_frames=cfg.max_frames, device=dev)
            t = y[idx].to(dev)
            d = pred - t
            mse = (d.pow(2) * (d.abs() > cfg.tau)).mean()
            loss = mse + cfg.contrastive_weight * contrastive(pred, t, cfg.margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
    model.eval()
    return model


@torch.no_grad()
def predict_whisper_mos(model: WhisperMOS, feats: list[np.ndarray], sample_counts: list[int], *,
                        batch_size: int = 16, device: str | None = None) -> np.ndarray:
    """MOS (label scale). Items are scored in length-sorted batches; padding is masked, so the
    batch composition never changes a score."""
    dev = device or next(model.parameters()).device
    model.eval()
    out = np.full(len(feats), np.nan)
    order = sorted(range(len(feats)), key=lambda i: feats[i].shape[1])
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        s = model.score([feats[i] for i in idx], [sample_counts[i] for i in idx], device=dev)
        out[idx] = model.cfg.denormalise(s.float().cpu().numpy())
    return out
