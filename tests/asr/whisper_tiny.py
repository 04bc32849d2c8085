"""Tiny random-weight Whisper models in the real formats (openai-whisper checkpoint, and a
CTranslate2 model folder written by CTranslate2's own spec/serialiser), for tests."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

#: The smallest dimensions whisper accepts with real 30 s inputs (1500 encoder frames) and the
#: English tokenizer (51864 tokens).
TINY_DIMS = dict(
    n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=2,
    n_vocab=51864, n_text_ctx=64, n_text_state=32, n_text_head=2, n_text_layer=2,
)


def tiny_whisper(seed: int = 0, **dims):
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(seed)
    d = ModelDimensions(**{**TINY_DIMS, **dims})
    model = Whisper(d)
    with torch.no_grad():
        # whisper leaves the decoder's positional embedding uninitialised (torch.empty): the
        # real checkpoints overwrite it; give it values of the trained scale
        model.decoder.positional_embedding.normal_(0.0, 0.02)
        for p in model.parameters():  # default init leaves LayerNorms at identity: perturb all
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def save_openai_checkpoint(model, path: Path) -> Path:
    """``{'dims', 'model_state_dict'}``: the format of the official checkpoints."""
    import torch

    torch.save({"dims": asdict(model.dims), "model_state_dict": model.state_dict()}, path)
    return path


def _fuse(sd, prefix, parts):
    ws, bs = [], []
    for part in parts:
        w = sd[f"{prefix}.{part}.weight"]
        ws.append(w)
        bias = sd.get(f"{prefix}.{part}.bias")
        bs.append(np.zeros(w.shape[0], np.float32) if bias is None else bias)
    return np.concatenate(ws), np.concatenate(bs)


def openai_to_ct2_variables(model) -> dict[str, np.ndarray]:
    """The inverse of the converter's mapping, written independently, as CTranslate2's
    Transformers converter lays out a Whisper model (fused QKV, zero key bias)."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    v: dict[str, np.ndarray] = {}

    def lin(dst, src):
        v[dst + "/weight"] = sd[src + ".weight"]
        if src + ".bias" in sd:
            v[dst + "/bias"] = sd[src + ".bias"]

    def ln(dst, src):
        v[dst + "/gamma"], v[dst + "/beta"] = sd[src + ".weight"], sd[src + ".bias"]

    lin("encoder/conv1", "encoder.conv1")
    lin("encoder/conv2", "encoder.conv2")
    v["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    for side, n in (("encoder", model.dims.n_audio_layer), ("decoder", model.dims.n_text_layer)):
        for i in range(n):
            s, d = f"{side}.blocks.{i}", f"{side}/layer_{i}"
            w, b = _fuse(sd, s + ".attn", ("query", "key", "value"))
            v[d + "/self_attention/linear_0/weight"], v[d + "/self_attention/linear_0/bias"] = w, b
            lin(d + "/self_attention/linear_1", s + ".attn.out")
            ln(d + "/self_attention/layer_norm", s + ".attn_ln")
            if side == "decoder":
                lin(d + "/attention/linear_0", s + ".cross_attn.query")
                w, b = _fuse(sd, s + ".cross_attn", ("key", "value"))
                v[d + "/attention/linear_1/weight"], v[d + "/attention/linear_1/bias"] = w, b
                lin(d + "/attention/linear_2", s + ".cross_attn.out")
                ln(d + "/attention/layer_norm", s + ".cross_attn_ln")
            lin(d + "/ffn/linear_0", s + ".mlp.0")
            lin(d + "/ffn/linear_1", s + ".mlp.2")
            ln(d + "/ffn/layer_norm", s + ".mlp_ln")
    ln("encoder/layer_norm", "encoder.ln_post")
    v["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    v["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    ln("decoder/layer_norm", "decoder.ln")
    v["decoder/projection/weight"] = sd["decoder.token_embedding.weight"]  # tied
    return v


def vocabulary(n_vocab: int) -> list[str]:
    """Token strings with Whisper's special tokens at their real ids (CTranslate2 looks them
    up by name); ordinary tokens get placeholder names."""
    from whisper.tokenizer import get_tokenizer

    enc = get_tokenizer(multilingual=n_vocab >= 51865).encoding
    tokens = [f"tok{i}" for i in range(n_vocab)]
    for name in enc.special_tokens_set:
        i = enc.encode_single_token(name)
        if i < n_vocab:
            tokens[i] = name
    return tokens


def save_ct2_model(model, folder: Path, quantization: str | None = None) -> Path:
    """Write ``model`` as a CTranslate2 Whisper model folder with ctranslate2's own
    ``WhisperSpec`` and serialiser (``quantization``: None, 'int8', 'float16', ...)."""
    from ctranslate2.specs import model_spec, whisper_spec

    d = model.dims
    spec = whisper_spec.WhisperSpec(d.n_audio_layer, d.n_audio_head, d.n_text_layer, d.n_text_head)
    for name, value in openai_to_ct2_variables(model).items():
        scope, attr = name.rsplit("/", 1)
        setattr(model_spec.index_spec(spec, scope), attr, value)
    spec.register_vocabulary(vocabulary(d.n_vocab))
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = []
    spec.config.lang_ids = []
    spec.config.alignment_heads = [[d.n_text_layer - 1, 0]]
    spec.validate()
    spec.optimize(quantization=quantization)
    folder.mkdir(parents=True, exist_ok=True)
    spec.save(str(folder))
    return folder
