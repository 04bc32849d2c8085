"""fairseq wav2vec 2.0 / HuBERT checkpoints -> torchaudio ``Wav2Vec2Model``, without fairseq.

``torchaudio.models.wav2vec2.utils.import_fairseq_model`` converts a *fairseq model object*: it
reads the architecture from the module tree (``_parse_config``) and renames the keys of
``original.state_dict()``. It does not take a state dict, and fairseq (with its pinned
omegaconf/hydra) is a heavy dependency we do not want. So we build a parameter-only *shell*
whose module tree has exactly fairseq's names, classes-by-name and hyper-parameter attributes
(``Wav2Vec2Model`` / ``HubertModel``, ``feature_extractor.conv_layers[i][0]`` convolutions,
``encoder.pos_conv[0]`` with ``weight_g``/``weight_v``, ``self_attn.dropout_module`` ...), load the
checkpoint's tensors into it strictly, and hand it to ``import_fairseq_model``. The conversion
itself is torchaudio's.

torchaudio loads pre-training models with ``strict=False``, so a tensor it fails to map would
silently stay at its random initialisation. :func:`import_fairseq_state_dict` therefore checks
that the converted model's tensors are, as a multiset of values, exactly the checkpoint's.

Checkpoints are read with ``torch.load(weights_only=True)``; the only non-tensor class allowed is
``argparse.Namespace`` (the ``args`` of 2020-era checkpoints, plain attributes). A checkpoint
that needs other classes (an omegaconf ``DictConfig``) is refused unless the caller passes
``trust_pickle=True`` for a file they trust.
"""

from __future__ import annotations

import ast
import hashlib
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from speechqe.errors import ConfigError

#: Prefixes of the tensors that make up the encoder in a fairseq pre-training checkpoint.
_ENCODER_PREFIXES = ("feature_extractor.", "layer_norm.", "post_extract_proj.", "encoder.")
#: Prefix of the pre-trained model inside a fine-tuned (CTC) checkpoint.
_FINETUNED_PREFIX = "w2v_encoder.w2v_model."
#: Strides of the standard wav2vec 2.0 / HuBERT convolutional front end.
STANDARD_CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)


@dataclass(frozen=True)
class FairseqConfig:
    """The architecture of a fairseq wav2vec 2.0 / HuBERT model (fairseq's field names)."""

    kind: str = "wav2vec2"  # or "hubert"
    extractor_mode: str = "default"  # "default" (group norm in layer 0) or "layer_norm"
    conv_feature_layers: tuple[tuple[int, int, int], ...] = (
        ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    )
    conv_bias: bool = False
    encoder_embed_dim: int = 768
    encoder_layers: int = 12
    encoder_attention_heads: int = 12
    encoder_ffn_embed_dim: int = 3072
    conv_pos: int = 128
    conv_pos_groups: int = 16
    layer_norm_first: bool = False
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.0
    encoder_layerdrop: float = 0.0

    @classmethod
    def from_fairseq(cls, model_cfg: Mapping[str, Any], kind: str) -> "FairseqConfig":
        """From a checkpoint's ``cfg['model']`` dict or ``vars(args)`` (unknown keys ignored:
        fairseq configs carry many training-only fields)."""
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: model_cfg[k] for k in names if k in model_cfg}
        if "conv_feature_layers" in values and isinstance(values["conv_feature_layers"], str):
            values["conv_feature_layers"] = parse_conv_layers(values["conv_feature_layers"])
        values["kind"] = kind
        try:
            return cls(**values)
        except TypeError as exc:  # pragma: no cover - defensive
            raise ConfigError(f"cannot read the fairseq model configuration: {exc}") from exc

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, Any],
        *,
        num_heads: int | None = None,
        conv_strides: tuple[int, ...] = STANDARD_CONV_STRIDES,
        layer_norm_first: bool = False,
        kind: str = "wav2vec2",
    ) -> "FairseqConfig":
        """Infer the architecture from tensor shapes (for checkpoints saved without a config,
        e.g. UTMOS22). Strides, head count and norm placement are not visible in shapes and
        come from the arguments (defaults: the standard base front end, ``dim // 64`` heads,
        post-norm)."""
        convs = []
        i = 0
        while f"feature_extractor.conv_layers.{i}.0.weight" in state_dict:
            out_c, _, k = state_dict[f"feature_extractor.conv_layers.{i}.0.weight"].shape
            if i >= len(conv_strides):
                raise ConfigError(f"no stride given for convolution layer {i}")
            convs.append((int(out_c), int(k), int(conv_strides[i])))
            i += 1
        if not convs:
            raise ConfigError("state dict has no fairseq feature_extractor.conv_layers")
        if "feature_extractor.conv_layers.0.2.weight" in state_dict:
            mode = "default"
        elif "feature_extractor.conv_layers.0.2.1.weight" in state_dict:
            mode = "layer_norm"
        else:
            raise ConfigError("cannot tell the feature extractor's normalisation from the keys")
        dim = int(state_dict["post_extract_proj.weight"].shape[0])
        n_layers = 0
        while f"encoder.layers.{n_layers}.fc1.weight" in state_dict:
            n_layers += 1
        v = state_dict["encoder.pos_conv.0.weight_v"]
        return cls(
            kind=kind,
            extractor_mode=mode,
            conv_feature_layers=tuple(convs),
            conv_bias="feature_extractor.conv_layers.0.0.bias" in state_dict,
            encoder_embed_dim=dim,
            encoder_layers=n_layers,
            encoder_attention_heads=num_heads or max(1, dim // 64),
            encoder_ffn_embed_dim=int(state_dict["encoder.layers.0.fc1.weight"].shape[0]),
            conv_pos=int(v.shape[2]),
            conv_pos_groups=dim // int(v.shape[1]),
            layer_norm_first=layer_norm_first,
        )


def parse_conv_layers(text: str) -> tuple[tuple[int, int, int], ...]:
    """Evaluate fairseq's ``conv_feature_layers`` string (``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``)
    with a literal-only evaluator: lists, tuples, integers, ``+`` and ``*``."""

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = ev(node.left), ev(node.right)
            return a + b if isinstance(node.op, ast.Add) else a * b
        raise ConfigError(f"unsupported expression in conv_feature_layers: {text!r}")

    try:
        value = ev(ast.parse(text, mode="eval"))
    except SyntaxError as exc:
        raise ConfigError(f"cannot parse conv_feature_layers {text!r}") from exc
    out = tuple(tuple(int(v) for v in layer) for layer in value)
    if not out or any(len(layer) != 3 for layer in out):
        raise ConfigError(f"conv_feature_layers must list (dim, kernel, stride): {text!r}")
    return out  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------
# Reading checkpoints
# ------------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path, *, trust_pickle: bool = False) -> dict[str, Any]:
    """``torch.load`` a fairseq checkpoint without executing pickled code.

    Raises:
        ConfigError: the file is missing or needs classes beyond ``argparse.Namespace``.
    """
    import argparse
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"fairseq checkpoint not found: {path}")
    if trust_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"{path} stores Python objects that speechqe does not unpickle ({_first_line(exc)}). "
            "If you trust the file, set trust_pickle: true in its encoder spec (e.g. "
            "ssl: {kind: ssl, source: PATH, trust_pickle: true} in a MOS training config), or "
            "re-save it as a plain dict of tensors plus a 'cfg' dict."
        ) from exc
    except (RuntimeError, EOFError, ValueError) as exc:  # truncated, not a torch file
        raise ConfigError(f"{path}: not a readable fairseq checkpoint ({_first_line(exc)})") from exc


def split_checkpoint(ckpt: Mapping[str, Any]) -> tuple[dict[str, Any], FairseqConfig]:
    """The encoder's tensors (fairseq names, pre-training layout) and its architecture.

    Accepts pre-training checkpoints (``model`` + ``cfg['model']`` or ``args``) and fine-tuned
    CTC checkpoints (``w2v_encoder.w2v_model.*`` + ``w2v_args``); the CTC head is dropped.
    """
    if "model" not in ckpt:
        raise ConfigError("not a fairseq checkpoint: no 'model' entry")
    state = dict(ckpt["model"])
    cfg = _model_cfg(ckpt)
    finetuned = any(k.startswith(_FINETUNED_PREFIX) for k in state)
    if finetuned:
        state = {k[len(_FINETUNED_PREFIX):]: v for k, v in state.items() if k.startswith(_FINETUNED_PREFIX)}
        w2v = cfg.get("w2v_args")
        if w2v is None:
            raise ConfigError("fine-tuned fairseq checkpoint without 'w2v_args'")
        cfg = _as_dict(w2v.get("model", w2v) if isinstance(w2v, Mapping) else vars(w2v))
    name = str(cfg.get("_name") or cfg.get("arch") or "wav2vec2")
    kind = "hubert" if "hubert" in name else "wav2vec2"
    if "wavlm" in name.lower():
        raise ConfigError(
            "WavLM checkpoints (microsoft/unilm layout) are not fairseq wav2vec 2.0 checkpoints; "
            "use the torchaudio bundle (asset ssl-wavlm-*) or a Hugging Face folder"
        )
    encoder = {k: v for k, v in state.items() if k.startswith(_ENCODER_PREFIXES)}
    return encoder, FairseqConfig.from_fairseq(cfg, kind)


def _model_cfg(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    cfg = ckpt.get("cfg")
    if cfg is not None:
        cfg = _as_dict(cfg)
        return _as_dict(cfg.get("model") or {})
    args = ckpt.get("args")
    if args is not None:
        return _as_dict(args if isinstance(args, Mapping) else vars(args))
    raise ConfigError("fairseq checkpoint has neither 'cfg' nor 'args'")


def _as_dict(x: Any) -> dict[str, Any]:
    if isinstance(x, Mapping):
        return dict(x)
    if hasattr(x, "__dict__"):
        return dict(vars(x))
    raise ConfigError(f"cannot read a fairseq configuration of type {type(x).__name__}")


def _first_line(exc: BaseException) -> str:
    s = str(exc).strip().splitlines()
    return s[0][:200] if s else type(exc).__name__


# ------------------------------------------------------------------------------------------
# The shell: fairseq's module tree, parameters only
# ------------------------------------------------------------------------------------------
def _build_shell(cfg: FairseqConfig):
    import torch
    from torch import nn

    class _TransposeLast(nn.Module):
        pass

    class _WeightNormConv(nn.Module):
        """fairseq's ``weight_norm(Conv1d, dim=2)``: parameters ``weight_g``/``weight_v``."""

        def __init__(self, dim: int, kernel: int, groups: int):
            super().__init__()
            self.kernel_size = (kernel,)
            self.groups = groups
            self.weight_g = nn.Parameter(torch.zeros(1, 1, kernel))
            self.weight_v = nn.Parameter(torch.zeros(dim, dim // groups, kernel))
            self.bias = nn.Parameter(torch.zeros(dim))

    class _SelfAttention(nn.Module):
        def __init__(self, dim: int, heads: int, dropout: float):
            super().__init__()
            self.num_heads = heads
            self.dropout_module = nn.Dropout(dropout)
            for name in ("k_proj", "v_proj", "q_proj", "out_proj"):
                setattr(self, name, nn.Linear(dim, dim))

    class _EncoderLayer(nn.Module):
        def __init__(self, c: FairseqConfig):
            super().__init__()
            d = c.encoder_embed_dim
            self.self_attn = _SelfAttention(d, c.encoder_attention_heads, c.attention_dropout)
            self.dropout1 = nn.Dropout(c.dropout)
            self.dropout2 = nn.Dropout(c.activation_dropout)
            self.dropout3 = nn.Dropout(c.dropout)
            self.self_attn_layer_norm = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, c.encoder_ffn_embed_dim)
            self.fc2 = nn.Linear(c.encoder_ffn_embed_dim, d)
            self.final_layer_norm = nn.LayerNorm(d)

    class _Encoder(nn.Module):
        def __init__(self, c: FairseqConfig):
            super().__init__()
            d = c.encoder_embed_dim
            self.pos_conv = nn.Sequential(_WeightNormConv(d, c.conv_pos, c.conv_pos_groups))
            self.layer_norm = nn.LayerNorm(d)
            self.layers = nn.ModuleList(_EncoderLayer(c) for _ in range(c.encoder_layers))
            self.layer_norm_first = c.layer_norm_first
            self.layerdrop = c.encoder_layerdrop

    class _FeatureExtractor(nn.Module):
        def __init__(self, c: FairseqConfig):
            super().__init__()
            self.conv_layers = nn.ModuleList()
            in_c = 1
            for i, (out_c, k, s) in enumerate(c.conv_feature_layers):
                conv = nn.Conv1d(in_c, out_c, k, stride=s, bias=c.conv_bias)
                if c.extractor_mode == "layer_norm":
                    norm: nn.Module = nn.Sequential(
                        _TransposeLast(), nn.LayerNorm(out_c), _TransposeLast()
                    )
                    block = nn.Sequential(conv, nn.Dropout(0.0), norm, nn.GELU())
                elif i == 0:
                    block = nn.Sequential(
                        conv, nn.Dropout(0.0), nn.GroupNorm(out_c, out_c, affine=True), nn.GELU()
                    )
                else:
                    block = nn.Sequential(conv, nn.Dropout(0.0), nn.GELU())
                self.conv_layers.append(block)
                in_c = out_c

    top_name = "HubertModel" if cfg.kind == "hubert" else "Wav2Vec2Model"

    def _init(self, c: FairseqConfig) -> None:
        nn.Module.__init__(self)
        self.feature_extractor = _FeatureExtractor(c)
        last = c.conv_feature_layers[-1][0]
        self.layer_norm = nn.LayerNorm(last)
        self.post_extract_proj = nn.Linear(last, c.encoder_embed_dim)
        self.dropout_input = nn.Dropout(c.dropout_input)
        self.encoder = _Encoder(c)

    # import_fairseq_model dispatches on the class *name*.
    shell_cls = type(top_name, (nn.Module,), {"__init__": _init})
    return shell_cls(cfg)


def import_fairseq_state_dict(state_dict: Mapping[str, Any], cfg: FairseqConfig):
    """Build a torchaudio ``Wav2Vec2Model`` from fairseq-named encoder tensors.

    Args:
        state_dict: tensors with fairseq names (``feature_extractor.conv_layers.0.0.weight``,
            ``encoder.layers.3.self_attn.q_proj.weight``, ...); pre-training-only tensors
            (``mask_emb``, ``quantizer.*``, ``final_proj.*``, ``label_embs_concat``) are ignored.
        cfg: the architecture.

    Raises:
        ConfigError: missing or unexpected tensors, or a conversion that lost a tensor.
    """
    import torch
    from torchaudio.models.wav2vec2.utils import import_fairseq_model

    encoder = {k: v for k, v in state_dict.items() if k.startswith(_ENCODER_PREFIXES)}
    shell = _build_shell(cfg)
    encoder = {k: (v.float() if torch.is_floating_point(v) else v) for k, v in encoder.items()}
    missing, unexpected = shell.load_state_dict(encoder, strict=False)
    if missing or unexpected:
        raise ConfigError(
            "fairseq checkpoint does not match its declared architecture: "
            f"missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}"
        )
    model = import_fairseq_model(shell)
    _verify_transfer(encoder, model.state_dict())
    return model


def _tensor_digest(t) -> str:
    t = t.detach().float().cpu().contiguous()
    return hashlib.sha1(repr(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()


def _verify_transfer(src: Mapping[str, Any], dst: Mapping[str, Any]) -> None:
    want = Counter(_tensor_digest(t) for t in src.values())
    got = Counter(_tensor_digest(t) for t in dst.values())
    if want != got:
        lost = sum((want - got).values())
        extra = sum((got - want).values())
        raise ConfigError(
            f"fairseq import lost {lost} checkpoint tensor(s) and left {extra} model tensor(s) "
            "unset; the torchaudio version may map keys differently"
        )


def load_fairseq_model(path: str | Path, *, trust_pickle: bool = False):
    """Read a fairseq wav2vec 2.0 / HuBERT checkpoint file into a torchaudio model.

    Returns:
        ``(model, cfg)``: a ``torchaudio.models.Wav2Vec2Model`` and its :class:`FairseqConfig`.
    """
    state, cfg = split_checkpoint(read_checkpoint(path, trust_pickle=trust_pickle))
    return import_fairseq_state_dict(state, cfg), cfg
