"""Import the public UTMOS22 strong learner checkpoint in the layout SpeechMOS publishes.

SpeechMOS (tarepan/SpeechMOS, ``utmos22_strong_step7459_v1.pt``, MIT) repackaged the UTMOS22
main-track strong learner without its phoneme encoder. Its state dict holds:

* ``wav2vec2.*``: a fairseq-layout wav2vec 2.0 Base (7 convolutions with group norm in the
  first, 768-d, 12 post-norm blocks of 12 heads, 128-tap positional convolution in 16 groups)
  plus the unused ``wav2vec2.mask_emb``;
* ``domain_emb`` and ``judge_emb``: the selected rows ``(1, 128)`` of the domain and listener
  tables (the main-track domain and the mean listener);
* ``blstm.*``: a one-layer BLSTM, 1024 -> 2 x 512;
* ``projection.0`` (1024 -> 2048), ReLU, ``projection.2`` (2048 -> 1).

The utterance score is the frame mean * 2 + 3. The import is strict: every tensor must be
consumed and every parameter of our model set, or it fails naming the keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from speechqe.encoders.base import state_dict_fingerprint
from speechqe.encoders.fairseq import FairseqConfig, import_fairseq_state_dict
from speechqe.encoders.ssl import SSLEncoder
from speechqe.errors import ConfigError

from .model import StrongLearner, StrongModelConfig

_HEAD_KEYS = {
    "domain_emb", "judge_emb",
    "projection.0.weight", "projection.0.bias", "projection.2.weight", "projection.2.bias",
} | {f"blstm.{w}_{k}_l0{r}" for w in ("weight", "bias") for k in ("ih", "hh") for r in ("", "_reverse")}
_SSL_EXTRA = {"mask_emb"}
_SSL_PREFIXES = ("feature_extractor.", "layer_norm.", "post_extract_proj.", "encoder.")


def import_utmos22_strong(
    state_dict: Mapping[str, torch.Tensor], *, num_heads: int = 12, fingerprint: str | None = None
) -> StrongLearner:
    """Build a :class:`StrongLearner` from a SpeechMOS UTMOS22-strong state dict.

    Args:
        num_heads: attention heads of the SSL blocks (not visible in tensor shapes; 12 for the
            published Base model).
        fingerprint: checksum of the source file (default: hash of the tensors).

    Raises:
        ConfigError: a missing or unexpected key, or a shape that does not fit.
    """
    ssl_sd = {k[len("wav2vec2."):]: v for k, v in state_dict.items() if k.startswith("wav2vec2.")}
    head = {k: v for k, v in state_dict.items() if not k.startswith("wav2vec2.")}
    stray = {k for k in ssl_sd if not k.startswith(_SSL_PREFIXES) and k not in _SSL_EXTRA}
    if set(head) != _HEAD_KEYS or stray:
        raise ConfigError(
            "not a UTMOS22 strong (SpeechMOS) state dict: "
            f"missing {sorted(_HEAD_KEYS - set(head))}, "
            f"unexpected {sorted((set(head) - _HEAD_KEYS) | {'wav2vec2.' + k for k in stray})}"
        )
    cfg = FairseqConfig.from_state_dict(ssl_sd, num_heads=num_heads)
    ta_model = import_fairseq_state_dict(ssl_sd, cfg)
    fp = fingerprint or state_dict_fingerprint(dict(state_dict))
    ssl = SSLEncoder(ta_model, name="utmos22-strong", normalize_waveform=False, fingerprint=fp)
    hidden = int(head["blstm.weight_hh_l0"].shape[1])
    head_cfg = StrongModelConfig(
        layer=-1,
        domain_dim=int(head["domain_emb"].shape[1]),
        listener_dim=int(head["judge_emb"].shape[1]),
        blstm_hidden=hidden,
        proj_hidden=int(head["projection.0.weight"].shape[0]),
        score_range=(1.0, 5.0),
    )
    model = StrongLearner(ssl, head_cfg, n_domains=1, n_listeners=0)
    want_in = ssl.dim + head_cfg.domain_dim + head_cfg.listener_dim
    if head["blstm.weight_ih_l0"].shape[1] != want_in:
        raise ConfigError(
            f"BLSTM input is {head['blstm.weight_ih_l0'].shape[1]}-d, expected {want_in} "
            "(SSL + domain + listener features)"
        )
    try:
        model.domain_emb.load_state_dict({"weight": head["domain_emb"]}, strict=True)
        model.listener_emb.load_state_dict({"weight": head["judge_emb"]}, strict=True)
        model.blstm.load_state_dict({k[len("blstm."):]: v for k, v in head.items() if k.startswith("blstm.")}, strict=True)
        model.projection.load_state_dict({
            "0.weight": head["projection.0.weight"], "0.bias": head["projection.0.bias"],
            "3.weight": head["projection.2.weight"], "3.bias": head["projection.2.bias"],
        }, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"UTMOS22 head does not fit: {str(exc).splitlines()[0]}") from exc
    model.eval()
    model.domain_names = ["utmos22-main"]
    model.listener_names = []
    return model


def load_utmos22_strong(path: str | Path | None = None) -> StrongLearner:
    """Load the checkpoint file (default: the ``utmos22-strong`` asset), tensors only."""
    from speechqe import assets

    if path is None:
        path = assets.get("utmos22-strong").file()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"UTMOS22 checkpoint not found: {path}")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return import_utmos22_strong(sd, fingerprint=assets.cached_sha256(path)[:12])
