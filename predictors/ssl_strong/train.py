"""Training and inference of the strong learner.

Training follows UTMOS22's recipe (``strong/configs/train/default.yaml``): Adam at 2e-5 with a
linear warm-up (4000 steps) and linear decay over 15000 steps, batch 12 with 2 accumulation
steps, gradient clipping at 1.0, random 10-second crops, speed/pitch augmentation, the clipped
MSE + 0.5 contrastive loss, and examples that are either (utterance, mean listener, MOS) or
(utterance, listener, that listener's rating).

On a GPU it runs in mixed precision (bf16 autocast, or fp16 with loss scaling) for the SSL
encoder; the BLSTM head always runs in float32. A checkpoint (model, optimiser, scheduler,
step and the random generator's state; tensors only, loaded with ``weights_only=True``) is
written every ``checkpoint_every`` steps and a run started again with the same configuration
resumes from it. Batches, crops and augmentation draw from one seeded ``torch.Generator``;
dropout from the seeded global generators; all of their states are checkpointed, so a resumed
run takes the same steps as an uninterrupted one (tested on CPU).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from speechqe.encoders.base import length_buckets
from speechqe.errors import ConfigError

from ..config import StrongTrainConfig, plain
from ..data import domain_of
from .augment import augment
from .loss import utmos_loss
from .model import StrongLearner, StrongModelConfig, text_to_ids

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000





@dataclass
class Example:
    item_index: int
    target: float  # normalised
    listener: int
    domain: int


def tables(items: Sequence, use_listeners: bool) -> tuple[list[str], list[str]]:
    """Domain names and listener names seen in ``items`` (sorted, deterministic)."""
    domains = sorted({domain_of(it) for it in items})
    listeners = sorted({lid for it in items for lid, _ in it.listener_scores}) if use_listeners else []
    return domains, listeners


def build_examples(items, cfg: StrongModelConfig, domains: list[str], listeners: list[str],
                   use_listeners: bool) -> list[Example]:
    dom = {d: i for i, d in enumerate(domains)}
    lis = {name: i + 1 for i, name in enumerate(listeners)}
    out = []
    for k, it in enumerate(items):
        if it.mos is None:
            raise ConfigError(f"item {it.id} has no MOS label")
        d = dom[domain_of(it)]
        out.append(Example(k, float(cfg.normalise(it.mos)), 0, d))
        if use_listeners:
            for lid, score in it.listener_scores:
                out.append(Example(k, float(cfg.normalise(score)), lis[lid], d))
    return out


def _autocast(device: torch.device, amp: str):
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None, False
    if amp in ("auto", "bf16"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16, True
        return torch.bfloat16, False
    return torch.float16, device.type == "cuda"


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:  # transformers.get_linear_schedule_with_warmup
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def config_fingerprint(*objs) -> str:
    blob = json.dumps([plain(o) for o in objs], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _collate(model: StrongLearner, batch: list[Example], signals, items, gen, cfg: StrongTrainConfig,
             train: bool, device):
    waves = []
    max_len = int(cfg.max_seconds * SAMPLE_RATE)
    for ex in batch:
        x = torch.from_numpy(np.asarray(signals(ex.item_index), dtype=np.float32))
        if train and cfg.augment:
            x = augment(x, SAMPLE_RATE, gen, speed_range=cfg.speed_range, pitch_cents=cfg.pitch_cents)
        if train and x.numel() > max_len:
            start = int(torch.randint(0, x.numel() - max_len + 1, (), generator=gen))
            x = x[start : start + max_len]
        waves.append(x)
    lengths = torch.tensor([w.numel() for w in waves], dtype=torch.long)
    wave = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        wave[i, : w.numel()] = w
    out = {
        "wave": wave.to(device), "lengths": lengths.to(device),
        "domains": torch.tensor([ex.domain for ex in batch], device=device),
        "listeners": torch.tensor([ex.listener for ex in batch], device=device),
        "target": torch.tensor([ex.target for ex in batch], dtype=torch.float32, device=device),
    }
    if model.text is not None:
        toks = [text_to_ids(items[ex.item_index].text) for ex in batch]
        tl = torch.tensor([len(t) for t in toks])
        tt = torch.zeros(len(toks), int(tl.max()), dtype=torch.long)
        for i, t in enumerate(toks):
            tt[i, : len(t)] = torch.tensor(t)
        out["tokens"], out["token_lengths"] = tt.to(device), tl.to(device)
    return out


def train_strong(
    model: StrongLearner,
    items: Sequence,
    signals: Callable[[int], np.ndarray],
    cfg: StrongTrainConfig,
    *,
    domains: list[str],
    listeners: list[str],
    device: str = "cpu",
    out_dir: str | Path | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> StrongLearner:
    """Train ``model`` in place on ``items`` (``signals(i)``: item ``i``'s 16 kHz signal).

    ``out_dir``: where the resumable checkpoint lives (``None``: no checkpoints).
    """
    dev = torch.device(device)
    model.to(dev)
    examples = build_examples(items, model.cfg, domains, listeners, cfg.use_listeners)
    if cfg.ssl_layer_drop >= 0:
        model.ssl_model.encoder.transformer.layer_drop = cfg.ssl_layer_drop
    ssl_params = list(model.ssl_model.parameters())
    if cfg.freeze_feature_extractor:
        for p in model.ssl_model.feature_extractor.parameters():
            p.requires_grad_(False)
    if cfg.freeze_ssl:
        for p in ssl_params:
            p.requires_grad_(False)
    ssl_ids = {id(p) for p in ssl_params}
    head = [p for p in model.parameters() if id(p) not in ssl_ids and p.requires_grad]
    groups = [{"params": head, "lr": cfg.head_lr or cfg.lr}]
    trainable_ssl = [p for p in ssl_params if p.requires_grad]
    if trainable_ssl:
        groups.append({"params": trainable_ssl, "lr": cfg.lr})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, cfg.steps))
    dtype, use_scaler = _autocast(dev, cfg.amp)
    scaler = torch.amp.GradScaler(dev.type, enabled=use_scaler)
    gen = torch.Generator().manual_seed(cfg.seed)
    # Dropout and LayerDrop draw from the global generators: seed them too, and checkpoint them.
    torch.manual_seed(cfg.seed + 1)
    start = 0
    ckpt = Path(out_dir) / "checkpoint.pt" if out_dir else None
    fingerprint = config_fingerprint(model.cfg, cfg, [it.sha256 for it in items], domains, listeners)
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        if state.get("fingerprint") != fingerprint:
            raise ConfigError(
                f"{ckpt} belongs to a different configuration or data set; remove it to start over"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start = int(state["step"])
        log.info("resuming strong learner training at step %d", start)

    def save(step: int) -> None:
        if ckpt is None:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        torch.save({
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "step": torch.tensor(step), "fingerprint": fingerprint,
        }, tmp)
        os.replace(tmp, ckpt)

    model.train()
    for step in range(start, cfg.steps):
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.accumulate):
            idx = torch.randint(len(examples), (cfg.batch_size,), generator=gen).tolist()
            b = _collate(model, [examples[i] for i in idx], signals, items, gen, cfg, True, dev)
            with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                utt, frames, mask = model(b["wave"], b["lengths"], b["domains"], b["listeners"],
                                          b.get("tokens"), b.get("token_lengths"))
            loss = utmos_loss(utt.float(), frames.float(), mask, b["target"], tau=cfg.tau,
                              margin=cfg.margin, contrastive_weight=cfg.contrastive_weight)
            scaler.scale(loss / cfg.accumulate).backward()
            total += float(loss.detach()) / cfg.accumulate
        if not np.isfinite(total):
            raise FloatingPointError(f"strong learner loss is {total} at step {step}")
        scaler.unscale_(opt)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        sched.step()
        if cfg.checkpoint_every > 0 and (step + 1) % cfg.checkpoint_every == 0:
            save(step + 1)
        if progress is not None:
            progress(step + 1, total)
    save(cfg.steps)
    model.eval()
    return model


@torch.no_grad()
def predict_strong(
    model: StrongLearner,
    signals: Sequence[np.ndarray],
    *,
    domain: int = 0,
    texts: Sequence[str | None] | None = None,
    device: str | None = None,
    max_batch: int = 8,
    max_samples: int = SAMPLE_RATE * 160,
) -> np.ndarray:
    """MOS predictions (label scale) of the mean listener for 16 kHz signals, length-bucketed
    into padded batches (which, by construction, equal batch size 1)."""
    dev = torch.device(device) if device else next(model.parameters()).device
    model.eval()
    out = np.full(len(signals), np.nan)
    for batch in length_buckets([len(s) for s in signals], max_batch, max_samples):
        lengths = torch.tensor([len(signals[i]) for i in batch])
        wave = torch.zeros(len(batch), int(lengths.max()))
        for j, i in enumerate(batch):
            wave[j, : len(signals[i])] = torch.from_numpy(np.asarray(signals[i], np.float32))
        kw = {}
        if model.text is not None:
            toks = [text_to_ids(texts[i] if texts else None) for i in batch]
            tl = torch.tensor([len(t) for t in toks])
            tt = torch.zeros(len(batch), int(tl.max()), dtype=torch.long)
            for j, t in enumerate(toks):
                tt[j, : len(t)] = torch.tensor(t)
            kw = {"tokens": tt.to(dev), "token_lengths": tl.to(dev)}
        doms = torch.full((len(batch),), domain, dtype=torch.long, device=dev)
        utt, _, _ = model(wave.to(dev), lengths.to(dev), doms, None, **kw)
        out[batch] = model.cfg.denormalise(utt.float().cpu().numpy())
    return out
