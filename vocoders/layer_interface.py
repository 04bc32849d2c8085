"""Fitting a layer interface (:mod:`speechqe.encoders.aggregate`) for the tokenizer.

The units of a training-free vocoder are intelligible when they carry phonetic content, so the
interface is fitted for that: a linear CTC head over the aggregated hidden states learns to
spell the fit set's transcripts (characters; Graves et al. 2006), with the encoder frozen.
Only the aggregator and the head train; the aggregator is then kept and its output tokenized
like any encoder layer (encoder spec ``aggregate:<file>``,
:func:`speechqe.vocoders.features.load_feature_source`).

The same objective fits :class:`~speechqe.encoders.aggregate.WeightedSum` and
:class:`~speechqe.encoders.aggregate.HierarchicalConv`, so the two interfaces are compared on
equal terms (``bench/aggregator_tokens.py``).
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
from pydantic import Field

from speechqe.config import StrictModel
from speechqe.encoders.aggregate import AggregatorConfig, build_aggregator
from speechqe.errors import ConfigError, ItemError

#: CTC output symbols: blank (0), space, apostrophe, a-z.
CHARS = " 'abcdefghijklmnopqrstuvwxyz"


def char_ids(text: str) -> list[int]:
    """Lower-cased text -> CTC targets (1-based into :data:`CHARS`); other characters dropped,
    runs of spaces collapsed."""
    t = re.sub(r"[^a-z' ]+", " ", text.lower())
    t = re.sub(r" +", " ", t).strip()
    return [CHARS.index(c) + 1 for c in t]


class InterfaceFitConfig(StrictModel):
    """How the interface is fitted: AdamW on the CTC loss, ``batch_size`` utterances drawn at
    random (seeded) each step."""

    aggregator: AggregatorConfig = AggregatorConfig()
    steps: int = Field(300, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0


def hidden_states(speech_set: Any, encoder: Any, cache: Any = None
                  ) -> tuple[list[Any], list[np.ndarray], dict[str, str]]:
    """All hidden states ``(layers, frames, dim)`` of every readable item (through the feature
    cache): ``(items, states, errors)``."""
    from speechqe.encoders import encode_cached

    items, states, errors = [], [], {}
    for it in speech_set:
        try:
            if not it.ok:
                raise ItemError(it.error or "unreadable")
            x = it.load().at(encoder.sample_rate)  # a cut: its segment only
        except ItemError as exc:
            errors[it.id] = str(exc)
            continue
        h = encode_cached(encoder, [x], [it.sha256], None, cache)[0]
        items.append(it)
        states.append(np.asarray(h, dtype=np.float32))
    return items, states, errors


def fit_ctc_interface(speech_set: Any, encoder: Any, cfg: InterfaceFitConfig = InterfaceFitConfig(),
                      *, cache: Any = None, log: Any = None) -> tuple[Any, dict[str, Any]]:
    """Fit an aggregator over all of ``encoder``'s hidden states with a CTC character head on
    the transcripts of ``speech_set``.

    Returns:
        ``(aggregator module in eval mode, info)``; ``info`` has the loss at the start and the
        end, steps, seconds, items, and the weighted sum's layer weights.

    Raises:
        ConfigError: no item with a transcript.
    """
    import torch

    torch.manual_seed(cfg.seed)
    items, states, errors = hidden_states(speech_set, encoder, cache)
    pairs = [(h, char_ids(it.text or "")) for it, h in zip(items, states)]
    pairs = [(h, y) for h, y in pairs if y and h.shape[1] >= len(y)]
    if not pairs:
        raise ConfigError(f"{speech_set.name!r} has no transcribed item to fit the interface on")
    n_layers, dim = pairs[0][0].shape[0], pairs[0][0].shape[2]
    agg = build_aggregator(cfg.aggregator, n_layers, dim)
    head = torch.nn.Linear(agg.out_dim, len(CHARS) + 1)
    params = list(agg.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    t_max = max(h.shape[1] for h, _ in pairs)
    x = torch.zeros(len(pairs), n_layers, t_max, dim)
    for i, (h, _) in enumerate(pairs):
        x[i, :, : h.shape[1]] = torch.from_numpy(h)
    in_len = torch.tensor([h.shape[1] for h, _ in pairs])
    targets = torch.tensor([c for _, y in pairs for c in y])
    tgt_len = torch.tensor([len(y) for _, y in pairs])
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    offsets = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), tgt_len]), 0)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    losses = []
    agg.train()
    for step in range(cfg.steps):
        pick = torch.randperm(len(pairs), generator=gen)[: cfg.batch_size].sort().values
        t_b = int(in_len[pick].max())
        logp = head(agg(x[pick, :, :t_b])).log_softmax(-1).transpose(0, 1)  # (T, B, symbols)
        tgt = torch.cat([targets[offsets[i]:offsets[i + 1]] for i in pick.tolist()])
        loss = ctc(logp, tgt, in_len[pick], tgt_len[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if log is not None and (step % 50 == 0 or step == cfg.steps - 1):
            log(f"{cfg.aggregator.kind} step {step}: ctc {losses[-1]:.3f}")
    agg.eval()
    info = {"objective": "ctc-chars", "loss_first": losses[0], "loss_last": losses[-1],
            "steps": cfg.steps, "items": len(pairs), "skipped": errors,
            "seconds": round(time.perf_counter() - t0, 1), "fit_set": speech_set.name,
            "fit_set_hash": speech_set.content_hash()[:16]}
    if hasattr(agg, "layer_weights"):
        info["layer_weights"] = [round(float(w), 4) for w in agg.layer_weights()]
    return agg, info

