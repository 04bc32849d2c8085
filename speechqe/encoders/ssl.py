"""Self-supervised speech encoders: wav2vec 2.0, HuBERT, WavLM (torchaudio architectures).

The architecture is always one of torchaudio's factories (``torchaudio.models.wav2vec2_base``,
``hubert_large``, ``wavlm_base``, ...); the weights come from, in :func:`load_ssl`'s order of
detection:

* an asset name from ``data/assets/ssl.yaml`` (``ssl-wavlm-base-plus``): the torchaudio bundle
  state dict, found through an override, the speechqe cache, or the torch hub cache under
  ``$TORCH_HOME`` (where ``torchaudio.pipelines.*.get_model()`` downloads it), else downloaded;
* a Hugging Face folder (``config.json``): ``import_huggingface_model``;
* a fairseq checkpoint (a ``.pt`` with ``model`` and ``cfg``/``args``): see
  :mod:`speechqe.encoders.fairseq`;
* a torchaudio state dict file (``.pth``/``.pt``/``.safetensors``) plus the factory name.

:class:`SSLEncoder.forward` is padding-aware where torchaudio's ``extract_features`` is not:

* the group normalisation of the first convolution of *base* models normalises each channel over
  time, so zero padding changes every frame's value; we normalise over valid frames only;
* large models' input waveform normalisation (``layer_norm`` over the signal) likewise uses
  valid samples only, per item;
* torchaudio's WavLM refuses an attention mask (``extract_features(x, lengths)`` raises), so
  padded WavLM batches could not be encoded at all; we pass its key-padding mask.

A padded batch therefore gives each item the features of that item encoded alone (tested).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from speechqe.errors import ConfigError, MissingDependencyError

from .base import Encoder, length_buckets, pad_batch, state_dict_fingerprint

#: torchaudio factory names accepted as ``factory``.
FACTORIES = (
    "wav2vec2_base", "wav2vec2_large", "wav2vec2_large_lv60k", "wav2vec2_xlsr_300m",
    "hubert_base", "hubert_large", "hubert_xlarge",
    "wavlm_base", "wavlm_large",
)
#: Large models were pre-trained on layer-normalised waveforms (torchaudio bundles'
#: ``_normalize_waveform``); base models on raw waveforms.
NORMALIZE_WAVEFORM = {
    "wav2vec2_base": False, "wav2vec2_large": False, "wav2vec2_large_lv60k": True,
    "wav2vec2_xlsr_300m": True, "hubert_base": False, "hubert_large": True,
    "hubert_xlarge": True, "wavlm_base": False, "wavlm_large": True,
}
SAMPLE_RATE = 16000


class SSLEncoder(Encoder):
    """A torchaudio ``Wav2Vec2Model`` (wav2vec 2.0, HuBERT or WavLM) as a per-layer encoder.

    It is also usable inside a trainable model: :attr:`module` is the ``torch.nn.Module`` and
    :meth:`forward` is differentiable (the strong MOS learner fine-tunes it).

    Args:
        model: a ``torchaudio.models.Wav2Vec2Model``.
        name: a readable name (asset name or source) used in :attr:`encoder_id`.
        normalize_waveform: layer-normalise each input signal (large models).
        fingerprint: checksum of the weights (default: computed from the state dict).
    """

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model: Any,
        *,
        name: str = "ssl",
        normalize_waveform: bool = False,
        fingerprint: str | None = None,
    ):
        from torchaudio.models.wav2vec2.wavlm_attention import WavLMSelfAttention

        self.module = model
        self.name = name
        self.normalize_waveform = bool(normalize_waveform)
        tr = model.encoder.transformer
        self.num_layers = len(tr.layers)
        self.dim = int(model.encoder.feature_projection.projection.out_features)
        self.is_wavlm = isinstance(tr.layers[0].attention, WavLMSelfAttention) if self.num_layers else False
        self._strides = [
            (int(b.kernel_size), int(b.stride)) for b in model.feature_extractor.conv_layers
        ]
        total = 1
        for _, s in self._strides:
            total *= s
        self.frame_rate = self.sample_rate / total
        self._fingerprint = fingerprint

    # --- identity ---------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = state_dict_fingerprint(self.module.state_dict())
        return self._fingerprint

    @property
    def encoder_id(self) -> str:
        norm = "+wnorm" if self.normalize_waveform else ""
        return f"ssl:{self.name}:{self.fingerprint}{norm}"

    # --- lengths ----------------------------------------------------------------------------
    def frames_for(self, n_samples: int) -> int:
        """Number of output frames for a signal of ``n_samples`` samples."""
        n = int(n_samples)
        for k, s in self._strides:
            n = max(0, (n - k) // s + 1)
        return n

    def frame_lengths(self, lengths):
        out = lengths
        for k, s in self._strides:
            out = torch.clamp(torch.div(out - k, s, rounding_mode="floor") + 1, min=0)
        return out

    # --- the padding-aware forward ------------------------------------------------------------
    def forward(self, waveforms, lengths=None, num_layers: int | None = None):
        """Hidden states of a padded batch.

        Args:
            waveforms: ``(batch, samples)`` float tensor at 16 kHz.
            lengths: ``(batch,)`` valid samples per item (``None``: all valid).
            num_layers: stop after this many transformer blocks (default: all).

        Returns:
            ``(hidden, frame_lengths)``: a list of ``num_layers + 1`` tensors of shape
            ``(batch, frames, dim)`` (index 0: the transformer's input; ``k``: block ``k``'s
            raw output, as torchaudio's ``extract_features`` and Hugging Face's
            ``hidden_states`` give them: pre-norm models' final layer norm is not applied) and
            ``(batch,)`` valid frames per item.
        """
        F = torch.nn.functional
        m = self.module
        if waveforms.ndim != 2:
            raise ValueError(f"expected (batch, samples), got {tuple(waveforms.shape)}")
        B, T = waveforms.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=waveforms.device)
        lengths = lengths.to(waveforms.device)
        x = waveforms
        if self.normalize_waveform:
            x = _masked_layer_norm_1d(x, lengths)
        # Convolutional front end (torchaudio ConvLayerBlock, with masked group norm).
        x = x.unsqueeze(1)
        n = lengths
        for block in m.feature_extractor.conv_layers:
            x = block.conv(x)
            n = torch.clamp(torch.div(n - block.kernel_size, block.stride, rounding_mode="floor") + 1, min=0)
            norm = block.layer_norm
            if isinstance(norm, torch.nn.GroupNorm):
                x = _masked_group_norm(x, n, norm)
            elif norm is not None:
                x = norm(x)
            x = F.gelu(x)
        x = x.transpose(1, 2)
        frames = x.shape[1]
        pad = torch.arange(frames, device=x.device)[None, :] >= n[:, None]  # True = padding
        enc = m.encoder
        x = enc.feature_projection(x)
        x = x.masked_fill(pad[..., None], 0.0)
        tr = enc.transformer
        # Transformer._preprocess, spelled out (its flag is the inverse of the model's).
        x = x + tr.pos_conv_embed(x)
        if tr.layer_norm_first:
            x = tr.layer_norm(x)
        x = tr.dropout(x)
        hidden = [x]
        any_pad = bool(pad.any())
        attn_mask = key_mask = None
        if any_pad:
            # Additive masks as torchaudio builds them (-10000 on padded keys: exp() is 0).
            if self.is_wavlm:
                key_mask = -10000.0 * pad.to(x.dtype)
            else:
                attn_mask = (-10000.0 * pad[:, None, None, :].to(x.dtype)).expand(B, 1, frames, frames)
        limit = self.num_layers if num_layers is None else int(num_layers)
        position_bias = None
        for i, layer in enumerate(tr.layers):
            if i >= limit:
                break
            if m.training and tr.layer_drop > 0 and float(torch.rand(1)) < tr.layer_drop:
                hidden.append(x)
                continue
            if self.is_wavlm:
                x, position_bias = layer(x, position_bias=position_bias, key_padding_mask=key_mask)
            else:
                x, _ = layer(x, attention_mask=attn_mask)
            hidden.append(x)
        return hidden, n

    # --- numpy convenience --------------------------------------------------------------------
    def encode(
        self,
        signals: Sequence[np.ndarray],
        layers: Sequence[int] | None = None,
        *,
        max_batch: int = 8,
        max_samples: int = 16000 * 120,
        device: str | None = None,
    ) -> list[np.ndarray]:
        """See :meth:`Encoder.encode`. Items are length-bucketed into padded batches."""
        sel = self.resolve_layers(layers)
        dev = device or _module_device(self.module)
        out: list[np.ndarray | None] = [None] * len(signals)
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.inference_mode():
                for batch in length_buckets([s.shape[0] for s in signals], max_batch, max_samples):
                    wav, lens = pad_batch([signals[i] for i in batch])
                    hidden, n = self.forward(wav.to(dev), lens.to(dev), num_layers=max(sel))
                    stacked = torch.stack([hidden[k] for k in sel], dim=1).float().cpu().numpy()
                    for j, i in enumerate(batch):
                        out[i] = np.ascontiguousarray(stacked[j, :, : int(n[j])])
        finally:
            self.module.train(was_training)
        return out  # type: ignore[return-value]

    @property
    def arch(self) -> dict[str, Any]:
        """:func:`torchaudio_arch` of this encoder."""
        return torchaudio_arch(self.module, self.normalize_waveform)

    def to(self, device: str) -> "SSLEncoder":
        self.module.to(device)
        return self


def _module_device(module) -> str:
    try:
        return str(next(module.parameters()).device)
    except StopIteration:  # pragma: no cover
        return "cpu"


def _masked_layer_norm_1d(x, lengths, eps: float = 1e-5):
    """Per-item layer norm of ``(batch, samples)`` over valid samples (padding stays 0)."""
    valid = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mean = (x * valid).sum(1, keepdim=True) / n
    var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * valid


def _masked_group_norm(x, lengths, gn):
    """``torch.nn.GroupNorm`` over valid frames only. ``x``: ``(batch, channels, frames)``."""
    B, C, T = x.shape
    G = gn.num_groups
    xr = x.view(B, G, C // G, T)
    valid = (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    valid = valid[:, None, None, :]
    n = (lengths.to(x.dtype) * (C // G)).clamp(min=1)[:, None, None, None]
    mean = (xr * valid).sum(dim=(2, 3), keepdim=True) / n
    var = (((xr - mean) * valid) ** 2).sum(dim=(2, 3), keepdim=True) / n
    y = ((xr - mean) / torch.sqrt(var + gn.eps)).view(B, C, T)
    if gn.affine:
        y = y * gn.weight[None, :, None] + gn.bias[None, :, None]
    return y


class LayerMix(torch.nn.Module):
    """Combine hidden states ``list[(B, T, D)]`` into one ``(B, T, D)``.

    Args:
        num_hidden: number of hidden states (``num_layers + 1``).
        layer: an index (negative counts from the top) or ``'weighted'``: ``sum_k softmax(w)_k
            * h_k`` with ``w`` learned and initialised equal (the SUPERB weighted sum).
    """

    def __init__(self, num_hidden: int, layer: int | str = -1):
        super().__init__()
        self.num_hidden = int(num_hidden)
        self.weighted = layer == "weighted"
        if self.weighted:
            self.weights = torch.nn.Parameter(torch.zeros(self.num_hidden))
            self.index = self.num_hidden - 1
        else:
            try:
                k = int(layer)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"layer must be an integer or 'weighted', got {layer!r}") from exc
            k = k + self.num_hidden if k < 0 else k
            if not 0 <= k < self.num_hidden:
                raise ConfigError(f"layer {layer} out of range 0..{self.num_hidden - 1}")
            self.index = k

    @property
    def needed_layers(self) -> int:
        """Transformer blocks that must run (the ones above are skipped)."""
        return self.num_hidden - 1 if self.weighted else self.index

    def forward(self, hidden):
        if not self.weighted:
            return hidden[self.index]
        w = torch.softmax(self.weights, dim=0)
        out = w[0] * hidden[0]
        for k in range(1, len(hidden)):
            out = out + w[k] * hidden[k]
        return out


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SSLSource:
    """Where an SSL encoder's weights come from (resolved by :func:`resolve_source`)."""

    kind: str  # asset | torchaudio | fairseq | huggingface
    path: Path | None
    factory: str | None = None
    name: str = ""
    normalize_waveform: bool | None = None


def build_model(factory: str, **overrides: Any):
    """An untrained torchaudio model from a factory name (``aux_num_out=None``)."""
    import torchaudio

    if factory not in FACTORIES:
        raise ConfigError(f"unknown SSL factory '{factory}'; known: {', '.join(FACTORIES)}")
    return getattr(torchaudio.models, factory)(**overrides)


#: A tiny architecture (standard 20 ms front end, 2 blocks of width 32) for tests and for
#: ``bench/bench_strong_learner.py --tiny``; random weights only.
TINY_ARCH: dict[str, Any] = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2,
    "extractor_conv_bias": False,
    "encoder_embed_dim": 32,
    "encoder_projection_dropout": 0.0,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
    "encoder_num_layers": 2,
    "encoder_num_heads": 4,
    "encoder_attention_dropout": 0.0,
    "encoder_ff_interm_features": 64,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.0,
    "encoder_layer_norm_first": False,
    "encoder_layer_drop": 0.0,
}


def torchaudio_arch(model: Any, normalize_waveform: bool = False) -> dict[str, Any]:
    """The ``wav2vec2_model``/``wavlm_model`` arguments that rebuild ``model``'s architecture
    (read from its module tree), as accepted by :func:`build_random`. Bundles store this, so a
    fine-tuned encoder reloads without its original checkpoint or loader."""
    from torchaudio.models.wav2vec2.wavlm_attention import WavLMSelfAttention

    convs = model.feature_extractor.conv_layers
    first_norm = convs[0].layer_norm
    enc = model.encoder
    tr = enc.transformer
    layer0 = tr.layers[0]
    att = layer0.attention
    wavlm = isinstance(att, WavLMSelfAttention)
    arch: dict[str, Any] = {
        "type": "wavlm" if wavlm else "wav2vec2",
        "extractor_mode": "group_norm" if isinstance(first_norm, torch.nn.GroupNorm) else "layer_norm",
        "extractor_conv_layer_config": [
            [int(b.conv.out_channels), int(b.kernel_size), int(b.stride)] for b in convs
        ],
        "extractor_conv_bias": convs[0].conv.bias is not None,
        "encoder_embed_dim": int(enc.feature_projection.projection.out_features),
        "encoder_projection_dropout": float(enc.feature_projection.dropout.p),
        "encoder_pos_conv_kernel": int(tr.pos_conv_embed.kernel_size),
        "encoder_pos_conv_groups": int(tr.pos_conv_embed.conv.groups),
        "encoder_num_layers": len(tr.layers),
        "encoder_num_heads": int(att.num_heads),
        "encoder_attention_dropout": float(att.dropout),
        "encoder_ff_interm_features": int(layer0.feed_forward.intermediate_dense.out_features),
        "encoder_ff_interm_dropout": float(layer0.feed_forward.intermediate_dropout.p),
        "encoder_dropout": float(layer0.dropout.p),
        "encoder_layer_norm_first": bool(layer0.layer_norm_first),
        "encoder_layer_drop": float(tr.layer_drop),
        "normalize_waveform": bool(normalize_waveform),
    }
    if wavlm:
        arch["encoder_num_buckets"] = int(att.num_buckets)
        arch["encoder_max_distance"] = int(att.max_distance)
    return arch


def build_random(arch: dict[str, Any], *, seed: int = 0, name: str = "random") -> SSLEncoder:
    """An SSL encoder with random weights (tests, benchmarks, training from scratch).

    ``arch``: ``{"factory": "wavlm_base"}`` (a torchaudio preset), or explicit
    ``torchaudio.models.wav2vec2_model`` arguments, with ``"type": "wavlm"`` for
    ``wavlm_model`` (then ``encoder_num_buckets``/``encoder_max_distance`` default to 320/800),
    and optionally ``"normalize_waveform"``.
    """
    import torchaudio

    arch = dict(arch)
    normalize = arch.pop("normalize_waveform", None)
    torch.manual_seed(seed)
    if "factory" in arch:
        factory = arch.pop("factory")
        model = build_model(factory, **arch)
        normalize = NORMALIZE_WAVEFORM[factory] if normalize is None else normalize
    else:
        kind = arch.pop("type", "wav2vec2")
        arch["extractor_conv_layer_config"] = [tuple(c) for c in arch["extractor_conv_layer_config"]]
        if kind == "wavlm":
            arch.setdefault("encoder_num_buckets", 320)
            arch.setdefault("encoder_max_distance", 800)
            model = torchaudio.models.wavlm_model(aux_num_out=None, **arch)
        elif kind in ("wav2vec2", "hubert"):
            model = torchaudio.models.wav2vec2_model(aux_num_out=None, **arch)
        else:
            raise ConfigError(f"unknown SSL type '{kind}' (wav2vec2, hubert, wavlm)")
    model.eval()
    return SSLEncoder(model, name=name, normalize_waveform=bool(normalize))


def _read_state_dict(path: Path) -> dict:
    import torch

    from speechqe.assets import refusing_pickled_code

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise ConfigError(f"{path}: not a readable safetensors file ({exc})") from None
    with refusing_pickled_code(path, "state dict"):
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, ValueError) as exc:
            raise ConfigError(f"{path}: not a readable torch state dict ({exc})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ConfigError(f"{path} does not hold a state dict")
    return sd


def load_torchaudio_state_dict(
    factory: str,
    source: str | Path | dict,
    *,
    name: str | None = None,
    normalize_waveform: bool | None = None,
    fingerprint: str | None = None,
) -> SSLEncoder:
    """A torchaudio factory model with a bundle state dict (file path or dict), strictly."""
    from speechqe.assets import cached_sha256 as sha256_file

    if isinstance(source, dict):
        sd, fp = source, fingerprint
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"state dict not found: {path}")
        sd = _read_state_dict(path)
        fp = fingerprint or sha256_file(path)[:12]
    model = build_model(factory)
    sd = {k: v for k, v in sd.items() if not k.startswith("aux.")}
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"state dict does not fit torchaudio.models.{factory}: {str(exc).splitlines()[0]}"
        ) from exc
    model.eval()
    norm = NORMALIZE_WAVEFORM[factory] if normalize_waveform is None else normalize_waveform
    return SSLEncoder(model, name=name or factory, normalize_waveform=norm, fingerprint=fp)


def load_fairseq(
    path: str | Path, *, trust_pickle: bool = False, checkpoint: dict | None = None
) -> SSLEncoder:
    """A fairseq wav2vec 2.0 / HuBERT checkpoint (see :mod:`speechqe.encoders.fairseq`).

    ``checkpoint``: the already-read file contents (avoids reading a large file twice).
    """
    from speechqe.assets import cached_sha256 as sha256_file

    from .fairseq import import_fairseq_state_dict, read_checkpoint, split_checkpoint

    ckpt = checkpoint if checkpoint is not None else read_checkpoint(path, trust_pickle=trust_pickle)
    state, cfg = split_checkpoint(ckpt)
    model = import_fairseq_state_dict(state, cfg)
    model.eval()
    # fairseq's pre-norm (layer_norm_first) models are the ones pre-trained on normalised
    # waveforms (task.normalize=True); post-norm base models on raw waveforms.
    return SSLEncoder(
        model,
        name=f"fairseq-{cfg.kind}-{Path(path).stem}",
        normalize_waveform=cfg.layer_norm_first,
        fingerprint=sha256_file(path)[:12],
    )


def load_huggingface(folder: str | Path) -> SSLEncoder:
    """A Hugging Face ``Wav2Vec2Model``/``HubertModel``/``WavLMModel`` folder
    (``save_pretrained`` layout) through ``import_huggingface_model``."""
    import json
    import logging

    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"not a Hugging Face model folder (no config.json): {folder}")
    if not list(folder.glob("*.safetensors")):
        # pickled weights (pytorch_model.bin): read first with weights_only=True, whatever the
        # installed transformers and torch do with them
        from speechqe.assets import check_weights_only

        for weights in sorted(folder.glob("*.bin")):
            check_weights_only(weights, "Hugging Face weights file")
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("transformers", "models", "loading a Hugging Face SSL model") from exc
    from torchaudio.models.wav2vec2.utils import import_huggingface_model

    cfg = json.loads(cfg_path.read_text())
    model_type = cfg.get("model_type", "")
    classes = {
        "wav2vec2": transformers.Wav2Vec2Model,
        "hubert": transformers.HubertModel,
        "wavlm": transformers.WavLMModel,
    }
    if model_type not in classes:
        raise ConfigError(
            f"{folder}: model_type '{model_type}' is not one of {', '.join(classes)}"
        )
    original = classes[model_type].from_pretrained(str(folder), local_files_only=True,
                                                   trust_remote_code=False)
    original.eval()
    # import_huggingface_model warns that a bare model has no CTC head; that is what we want.
    logging.getLogger("torchaudio.models.wav2vec2.utils.import_huggingface").setLevel(logging.ERROR)
    model = import_huggingface_model(original)
    model.eval()
    normalize = bool(cfg.get("do_stable_layer_norm", False))
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        normalize = bool(json.loads(pre.read_text()).get("do_normalize", normalize))
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    from speechqe.assets import cached_sha256 as sha256_file

    fp = sha256_file(weights[0])[:12] if weights else None
    return SSLEncoder(model, name=f"hf-{model_type}-{folder.name}", normalize_waveform=normalize, fingerprint=fp)


def load_asset(name: str, *, download: bool = True) -> SSLEncoder:
    """An SSL asset of ``data/assets/ssl.yaml`` (torchaudio bundle state dict).

    The file is looked for, in order: the asset override (``SPEECHQE_ASSET_<NAME>`` or
    ``--asset``), the speechqe cache, the torch hub cache (``$TORCH_HOME``, filled by
    ``torchaudio.pipelines`` bundles; the asset's ``search_dirs``); otherwise it is downloaded
    into the speechqe cache. It is verified wherever it is found (registered sha256, else the
    hash pinned on first use).
    """
    from speechqe import assets

    asset = assets.get(name)
    factory = asset.param("factory")
    if not factory:
        raise ConfigError(f"asset '{name}' is not an SSL encoder (no 'factory' param)")
    # override, speechqe cache, then the torch hub cache (search_dirs), else download; the
    # file is verified (registered sha256, or the hash pinned on first use)
    path = asset.file(download=download)
    return load_torchaudio_state_dict(
        factory,
        path,
        name=name,
        normalize_waveform=asset.param("normalize_waveform"),
    )


def load_ssl(
    source: str | Path,
    *,
    factory: str | None = None,
    trust_pickle: bool = False,
    device: str = "cpu",
) -> SSLEncoder:
    """Load an SSL encoder from an asset name, a Hugging Face folder, a fairseq checkpoint or a
    torchaudio state dict (``factory`` required). See the module docstring."""
    src = str(source)
    path = Path(os.path.expanduser(src))
    if not path.exists():
        from speechqe import assets

        if src in assets.catalogue():
            return load_asset(src).to(device)
        raise ConfigError(
            f"SSL source '{src}' is neither an existing file/folder nor a registered asset "
            "(see data/assets/ssl.yaml)"
        )
    if path.is_dir():
        return load_huggingface(path).to(device)
    if factory:
        return load_torchaudio_state_dict(factory, path).to(device)
    if path.suffix in (".pt", ".pth"):
        from .fairseq import read_checkpoint

        ckpt = read_checkpoint(path, trust_pickle=trust_pickle)
        if isinstance(ckpt, dict) and "model" in ckpt and ("cfg" in ckpt or "args" in ckpt):
            return load_fairseq(path, checkpoint=ckpt).to(device)
    raise ConfigError(
        f"{path} is not a fairseq checkpoint; for a torchaudio state dict give the factory "
        f"(one of {', '.join(FACTORIES)})"
    )
