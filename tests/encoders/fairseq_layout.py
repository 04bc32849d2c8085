"""Random-weight state dicts in fairseq's wav2vec 2.0 key layout, and an independent functional
forward of that architecture (written from the paper and fairseq's module order, not from our
importer), used to check the fairseq and UTMOS22 imports numerically."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def fairseq_state_dict(
    *, dim=32, layers=2, ffn=64, conv=((32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 2, 2)),
    pos_kernel=16, pos_groups=4, prefix="", extras=True, seed=0, group_norm=True,
) -> dict[str, torch.Tensor]:
    """Keys and shapes as in fairseq's ``Wav2Vec2Model.state_dict()`` (pre-training)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    sd: dict[str, torch.Tensor] = {}
    in_c = 1
    for i, (c, k, _s) in enumerate(conv):
        sd[f"feature_extractor.conv_layers.{i}.0.weight"] = r(c, in_c, k, scale=1 / math.sqrt(in_c * k))
        if group_norm and i == 0:
            sd[f"feature_extractor.conv_layers.{i}.2.weight"] = 1 + r(c, scale=0.1)
            sd[f"feature_extractor.conv_layers.{i}.2.bias"] = r(c, scale=0.1)
        elif not group_norm:
            sd[f"feature_extractor.conv_layers.{i}.2.1.weight"] = 1 + r(c, scale=0.1)
            sd[f"feature_extractor.conv_layers.{i}.2.1.bias"] = r(c, scale=0.1)
        in_c = c
    last = conv[-1][0]
    sd["layer_norm.weight"] = 1 + r(last, scale=0.1)
    sd["layer_norm.bias"] = r(last, scale=0.1)
    sd["post_extract_proj.weight"] = r(dim, last, scale=1 / math.sqrt(last))
    sd["post_extract_proj.bias"] = r(dim, scale=0.1)
    sd["encoder.pos_conv.0.bias"] = r(dim, scale=0.1)
    sd["encoder.pos_conv.0.weight_g"] = 0.5 + r(1, 1, pos_kernel, scale=0.1).abs()
    sd["encoder.pos_conv.0.weight_v"] = r(dim, dim // pos_groups, pos_kernel)
    for i in range(layers):
        p = f"encoder.layers.{i}."
        for n in ("k_proj", "v_proj", "q_proj", "out_proj"):
            sd[p + f"self_attn.{n}.weight"] = r(dim, dim, scale=1 / math.sqrt(dim))
            sd[p + f"self_attn.{n}.bias"] = r(dim, scale=0.1)
        sd[p + "self_attn_layer_norm.weight"] = 1 + r(dim, scale=0.1)
        sd[p + "self_attn_layer_norm.bias"] = r(dim, scale=0.1)
        sd[p + "fc1.weight"] = r(ffn, dim, scale=1 / math.sqrt(dim))
        sd[p + "fc1.bias"] = r(ffn, scale=0.1)
        sd[p + "fc2.weight"] = r(dim, ffn, scale=1 / math.sqrt(ffn))
        sd[p + "fc2.bias"] = r(dim, scale=0.1)
        sd[p + "final_layer_norm.weight"] = 1 + r(dim, scale=0.1)
        sd[p + "final_layer_norm.bias"] = r(dim, scale=0.1)
    sd["encoder.layer_norm.weight"] = 1 + r(dim, scale=0.1)
    sd["encoder.layer_norm.bias"] = r(dim, scale=0.1)
    if extras:  # pre-training-only tensors an importer must skip
        sd["mask_emb"] = r(dim)
        sd["quantizer.vars"] = r(1, 16, 8)
        sd["quantizer.weight_proj.weight"] = r(16, last)
        sd["quantizer.weight_proj.bias"] = r(16)
        sd["project_q.weight"] = r(8, 8)
        sd["project_q.bias"] = r(8)
        sd["final_proj.weight"] = r(8, dim)
        sd["final_proj.bias"] = r(8)
    return {prefix + k: v for k, v in sd.items()}


def fairseq_cfg(*, dim=32, layers=2, ffn=64, heads=4, conv=((32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 2, 2)),
                pos_kernel=16, pos_groups=4, name="wav2vec2", group_norm=True) -> dict:
    """fairseq's ``cfg['model']`` (only the fields an importer needs, plus training noise)."""
    return {
        "_name": name,
        "extractor_mode": "default" if group_norm else "layer_norm",
        "conv_feature_layers": " + ".join(f"[({c}, {k}, {s})]" for c, k, s in conv),
        "conv_bias": False,
        "encoder_layers": layers,
        "encoder_embed_dim": dim,
        "encoder_ffn_embed_dim": ffn,
        "encoder_attention_heads": heads,
        "conv_pos": pos_kernel,
        "conv_pos_groups": pos_groups,
        "layer_norm_first": not group_norm,
        "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
        "dropout_input": 0.1, "encoder_layerdrop": 0.05,
        "mask_prob": 0.65, "logit_temp": 0.1, "latent_vars": 320,  # ignored training fields
    }


def reference_forward(sd, wav, *, heads, strides, prefix="", group_norm=True, layer_norm_first=False,
                      final_norm=True):
    """Final-layer features of a fairseq wav2vec 2.0 model, computed from its state dict.

    ``wav``: ``(1, samples)``. Returns ``(frames, dim)``; ``final_norm=False`` leaves out a
    pre-norm model's final layer norm (the raw output of the last block).
    """
    p = prefix
    x = wav[:, None, :]
    i = 0
    while f"{p}feature_extractor.conv_layers.{i}.0.weight" in sd:
        x = F.conv1d(x, sd[f"{p}feature_extractor.conv_layers.{i}.0.weight"], stride=strides[i])
        if group_norm and i == 0:
            c = x.shape[1]
            x = F.group_norm(x, c, sd[f"{p}feature_extractor.conv_layers.0.2.weight"],
                             sd[f"{p}feature_extractor.conv_layers.0.2.bias"])
        elif not group_norm:
            x = F.layer_norm(x.transpose(1, 2), (x.shape[1],),
                             sd[f"{p}feature_extractor.conv_layers.{i}.2.1.weight"],
                             sd[f"{p}feature_extractor.conv_layers.{i}.2.1.bias"]).transpose(1, 2)
        x = F.gelu(x)
        i += 1
    x = x.transpose(1, 2)
    x = F.layer_norm(x, (x.shape[-1],), sd[f"{p}layer_norm.weight"], sd[f"{p}layer_norm.bias"])
    x = F.linear(x, sd[f"{p}post_extract_proj.weight"], sd[f"{p}post_extract_proj.bias"])
    # weight norm over every dim but dim 2: w = g * v / ||v||
    v = sd[f"{p}encoder.pos_conv.0.weight_v"]
    gw = sd[f"{p}encoder.pos_conv.0.weight_g"]
    w = gw * v / v.norm(dim=(0, 1), keepdim=True)
    k = v.shape[2]
    groups = x.shape[-1] // v.shape[1]
    xc = F.conv1d(x.transpose(1, 2), w, sd[f"{p}encoder.pos_conv.0.bias"], padding=k // 2, groups=groups)
    if k % 2 == 0:
        xc = xc[..., :-1]
    x = x + F.gelu(xc).transpose(1, 2)
    d = x.shape[-1]

    def ln(t, name):
        return F.layer_norm(t, (d,), sd[f"{name}.weight"], sd[f"{name}.bias"])

    if not layer_norm_first:
        x = ln(x, f"{p}encoder.layer_norm")
    j = 0
    while f"{p}encoder.layers.{j}.fc1.weight" in sd:
        q = f"{p}encoder.layers.{j}."
        res = x
        h = ln(x, q + "self_attn_layer_norm") if layer_norm_first else x
        a = _attention(h, sd, q + "self_attn.", heads)
        x = res + a
        if layer_norm_first:
            ff = F.linear(F.gelu(F.linear(ln(x, q + "final_layer_norm"), sd[q + "fc1.weight"], sd[q + "fc1.bias"])),
                          sd[q + "fc2.weight"], sd[q + "fc2.bias"])
            x = x + ff
        else:
            x = ln(x, q + "self_attn_layer_norm")
            ff = F.linear(F.gelu(F.linear(x, sd[q + "fc1.weight"], sd[q + "fc1.bias"])),
                          sd[q + "fc2.weight"], sd[q + "fc2.bias"])
            x = ln(x + ff, q + "final_layer_norm")
        j += 1
    if layer_norm_first and final_norm:
        x = ln(x, f"{p}encoder.layer_norm")
    return x[0]


def _attention(x, sd, q, heads):
    B, T, D = x.shape
    hd = D // heads

    def proj(n):
        return F.linear(x, sd[q + f"{n}.weight"], sd[q + f"{n}.bias"]).view(B, T, heads, hd).transpose(1, 2)

    Q, K, V = proj("q_proj") * hd ** -0.5, proj("k_proj"), proj("v_proj")
    att = torch.softmax(Q @ K.transpose(-1, -2), dim=-1) @ V
    att = att.transpose(1, 2).reshape(B, T, D)
    return F.linear(att, sd[q + "out_proj.weight"], sd[q + "out_proj.bias"])
