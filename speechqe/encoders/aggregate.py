"""Layer interfaces: how the hidden states of a frozen multi-layer encoder (SSL, Whisper) become
one feature sequence for a downstream model (a MOS head, a tokenizer).

Shih & Harwath, "Interface Design for Self-Supervised Speech Models" (Interspeech 2024), call
this module the *interface* between upstream and downstream, and show that the usual one, a
softmax-weighted sum of the layers (SUPERB; s3prl's ``Featurizer``), is often beaten by a
*hierarchical convolution* over the layer axis whose depth grows with the logarithm of the
number of layers. Both are here, behind one contract:

    ``forward(hidden (batch, layers, frames, dim)) -> (batch, frames, out_dim)``

* :class:`WeightedSum`: ``sum_l softmax(w)_l * LN(h_l)``; ``out_dim == dim``.
* :class:`HierarchicalConv`: the layer axis is the sequence axis of a stack of 1-D
  convolutions (channels = feature dimension, kernel ``kernel_size``, stride ``stride``,
  padding ``(kernel_size - 1) // 2``), each followed by GELU, each shortening the layer axis
  from ``L`` to ``floor((L - 1) / stride) + 1``, until one layer is left: ``ceil(log_s L)``
  convolutions (13 hidden states: 13 -> 7 -> 4 -> 2 -> 1). A linear layer maps the last
  convolution's channels to ``out_dim``.

Both take the hidden states stacked, or as the list :class:`~speechqe.encoders.ssl.LayerMix`
takes (``needed_layers`` as there), so a model built on ``LayerMix`` (the MOS strong learner)
can take either. Both treat every frame on its own (nothing mixes frames), so a padded batch gives each item
the output it gets alone, and padding needs no mask. Each layer is layer-normalised (no affine)
first when ``layer_norm`` (s3prl's default), since hidden-state scales differ by orders of
magnitude between layers.

:class:`AggregatedEncoder` wraps an :class:`~speechqe.encoders.base.Encoder` and a fitted
aggregator into an encoder with one output, so anything that takes an encoder (the tokenizer,
the feature cache) takes the aggregate; :func:`save_aggregator` / :func:`load_aggregator` keep
the weights in one ``safetensors`` file with its config and the base encoder's spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from speechqe.config import StrictModel, validate
from speechqe.errors import ConfigError

from .base import Encoder

AGGREGATOR_FORMAT = "speechqe-layer-aggregator/1"


class AggregatorConfig(StrictModel):
    """A layer interface.

    Attributes:
        kind: ``weighted_sum`` or ``hconv`` (hierarchical convolution).
        layer_norm: normalise each hidden state over its features (no affine) first.
        kernel_size, stride: ``hconv``'s convolutions over the layer axis.
        channels: ``hconv``'s convolution channels (default: the encoder's dim).
        out_dim: ``hconv``'s output size (default: the encoder's dim).
        dropout: ``hconv``: dropout after each convolution (training only).
    """

    kind: Literal["weighted_sum", "hconv"] = "hconv"
    layer_norm: bool = True
    kernel_size: int = Field(3, ge=1)
    stride: int = Field(2, ge=2)
    channels: int | None = Field(None, ge=1)
    out_dim: int | None = Field(None, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


def hconv_depth(num_layers: int, stride: int = 2) -> int:
    """Convolutions that reduce ``num_layers`` hidden states to one: ``ceil(log_stride L)``."""
    n, depth = int(num_layers), 0
    while n > 1:
        n = (n - 1) // stride + 1
        depth += 1
    return depth


def build_aggregator(cfg: AggregatorConfig, num_layers: int, dim: int) -> nn.Module:
    """The module for ``cfg`` over ``num_layers`` hidden states of size ``dim``."""
    if num_layers < 1 or dim < 1:
        raise ConfigError(f"an aggregator needs layers and features (got {num_layers} x {dim})")
    if cfg.kind == "weighted_sum":
        return WeightedSum(num_layers, dim, layer_norm=cfg.layer_norm)
    return HierarchicalConv(num_layers, dim, out_dim=cfg.out_dim or dim,
                            channels=cfg.channels or dim, kernel_size=cfg.kernel_size,
                            stride=cfg.stride, layer_norm=cfg.layer_norm, dropout=cfg.dropout)


def _check(hidden: Any, num_layers: int, dim: int) -> torch.Tensor:
    """``(batch, layers, frames, dim)``; a list of ``(batch, frames, dim)`` per layer (as
    :class:`~speechqe.encoders.ssl.LayerMix` takes them) is stacked."""
    if isinstance(hidden, (list, tuple)):
        hidden = torch.stack(list(hidden), 1)
    if hidden.ndim != 4 or hidden.shape[1] != num_layers or hidden.shape[3] != dim:
        raise ConfigError(f"expected hidden states (batch, {num_layers}, frames, {dim}), got "
                          f"{tuple(hidden.shape)}")
    return hidden


def _layer_norm(h: torch.Tensor, on: bool) -> torch.Tensor:
    return F.layer_norm(h, h.shape[-1:]) if on else h


class WeightedSum(nn.Module):
    """``sum_l softmax(w)_l * LN(h_l)`` (SUPERB's featurizer); ``out_dim == dim``; the weights
    start equal."""

    def __init__(self, num_layers: int, dim: int, layer_norm: bool = True):
        super().__init__()
        self.num_layers, self.dim, self.out_dim = num_layers, dim, dim
        self.layer_norm = layer_norm
        self.weights = nn.Parameter(torch.zeros(num_layers))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(batch, layers, frames, dim)`` -> ``(batch, frames, dim)``."""
        hidden = _check(hidden, self.num_layers, self.dim)
        w = torch.softmax(self.weights, 0)
        return torch.einsum("l,bltd->btd", w, _layer_norm(hidden, self.layer_norm))

    @property
    def needed_layers(self) -> int:
        """Transformer blocks that must run (all; as :class:`~.ssl.LayerMix`)."""
        return self.num_layers - 1

    def layer_weights(self) -> np.ndarray:
        """The softmax weights ``(layers,)``."""
        return torch.softmax(self.weights.detach(), 0).cpu().numpy()


class HierarchicalConv(nn.Module):
    """Strided 1-D convolutions over the layer axis down to one layer, then a linear map (see
    the module docstring)."""

    def __init__(self, num_layers: int, dim: int, *, out_dim: int, channels: int,
                 kernel_size: int = 3, stride: int = 2, layer_norm: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        self.num_layers, self.dim, self.out_dim = num_layers, dim, out_dim
        self.layer_norm = layer_norm
        self.depth = hconv_depth(num_layers, stride)
        convs, cin = [], dim
        for _ in range(self.depth):
            convs.append(nn.Conv1d(cin, channels, kernel_size, stride=stride,
                                   padding=(kernel_size - 1) // 2))
            cin = channels
        self.convs = nn.ModuleList(convs)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(cin, out_dim)

    @property
    def needed_layers(self) -> int:
        """Transformer blocks that must run (all; as :class:`~.ssl.LayerMix`)."""
        return self.num_layers - 1

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(batch, layers, frames, dim)`` -> ``(batch, frames, out_dim)``."""
        hidden = _check(hidden, self.num_layers, self.dim)
        b, n, t, d = hidden.shape
        x = _layer_norm(hidden, self.layer_norm)
        x = x.permute(0, 2, 3, 1).reshape(b * t, d, n)  # every frame on its own
        for conv in self.convs:
            x = self.drop(F.gelu(conv(x)))
        return self.proj(x[..., 0]).reshape(b, t, self.out_dim)


# ------------------------------------------------------------------------------------------
# A fitted aggregator as an encoder, and its file
# ------------------------------------------------------------------------------------------
class AggregatedEncoder(Encoder):
    """``base`` encoder -> all its hidden states -> a fitted aggregator: an encoder with one
    output (``num_layers == 0``) of size ``aggregator.out_dim``.

    Args:
        base: the upstream encoder.
        aggregator: a :class:`WeightedSum` or :class:`HierarchicalConv` over all of ``base``'s
            ``num_layers + 1`` hidden states.
        cfg: its config.
        base_spec: the spec ``base`` was built from (kept in the file).
        name: readable name for :attr:`encoder_id`.
    """

    num_layers = 0

    def __init__(self, base: Encoder, aggregator: nn.Module, cfg: AggregatorConfig,
                 base_spec: Any = None, name: str = "aggregate"):
        if aggregator.num_layers != base.num_layers + 1 or aggregator.dim != base.dim:
            raise ConfigError(f"the aggregator takes {aggregator.num_layers} x {aggregator.dim} "
                              f"hidden states, the encoder gives {base.num_layers + 1} x "
                              f"{base.dim}")
        self.base = base
        self.aggregator = aggregator.eval()
        self.cfg = cfg
        self.base_spec = base_spec
        self.name = name
        self.sample_rate = base.sample_rate
        self.frame_rate = base.frame_rate
        self.dim = int(aggregator.out_dim)

    @property
    def encoder_id(self) -> str:
        from .base import state_dict_fingerprint

        return (f"aggregate:{self.cfg.kind}:{state_dict_fingerprint(self.aggregator.state_dict())}"
                f":{self.base.encoder_id}")

    def encode(self, signals: Sequence[np.ndarray], layers: Sequence[int] | None = None
               ) -> list[np.ndarray]:
        self.resolve_layers(layers)
        hidden = self.base.encode(signals, None)
        dev = next(self.aggregator.parameters()).device
        out = []
        with torch.inference_mode():
            for h in hidden:  # (layers, frames, dim), one item at a time: frames are independent
                y = self.aggregator(torch.as_tensor(h, device=dev)[None])[0]
                out.append(y.float().cpu().numpy()[None])
        return out


def save_aggregator(path: str | Path, aggregator: nn.Module, cfg: AggregatorConfig,
                    base_spec: Any, meta: dict[str, Any] | None = None) -> Path:
    """Write the aggregator's weights, config, layer count, dim and base encoder spec to one
    ``.safetensors`` file."""
    from speechqe import tensorfile

    header = {"format": AGGREGATOR_FORMAT, "config": cfg.model_dump(),
              "num_layers": aggregator.num_layers, "dim": aggregator.dim,
              "base_spec": base_spec, "meta": meta or {}}
    return tensorfile.write(
        path, {k: v.detach().cpu().contiguous() for k, v in aggregator.state_dict().items()},
        header, framework="pt")


def load_aggregator(path: str | Path) -> tuple[nn.Module, AggregatorConfig, dict[str, Any]]:
    """Read a :func:`save_aggregator` file -> ``(module in eval mode, config, header)``.

    Raises:
        ConfigError: missing or foreign file, weights that do not fit the config.
    """
    from speechqe import tensorfile

    sd, header = tensorfile.read(path, "layer aggregator", AGGREGATOR_FORMAT, framework="pt")
    cfg = validate(AggregatorConfig, header["config"], f"{path}: config")
    module = build_aggregator(cfg, int(header["num_layers"]), int(header["dim"]))
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: weights do not fit the config: {exc}") from None
    return module.eval(), cfg, header


def load_aggregated_encoder(path: str | Path, *, device: str = "cpu") -> AggregatedEncoder:
    """The :class:`AggregatedEncoder` of a saved aggregator, its base encoder rebuilt from the
    spec in the file (encoder spec ``'aggregate:<path>'``)."""
    from . import load_encoder

    module, cfg, header = load_aggregator(path)
    base = load_encoder(header["base_spec"], device=device)
    return AggregatedEncoder(base, module.to(device), cfg, header["base_spec"],
                             name=Path(path).stem)

