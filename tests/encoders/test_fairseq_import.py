"""fairseq wav2vec 2.0 / HuBERT checkpoints -> torchaudio, checked against an independent
functional forward of the fairseq architecture on random weights."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from fairseq_layout import fairseq_cfg, fairseq_state_dict, reference_forward
from speechqe.encoders.fairseq import FairseqConfig, parse_conv_layers
from speechqe.encoders.ssl import load_ssl
from speechqe.errors import ConfigError

CONV = ((32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 2, 2))
STRIDES = [c[2] for c in CONV]


def _wav(n=6000, seed=0):
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


@pytest.mark.parametrize("group_norm", [True, False], ids=["base-groupnorm", "large-layernorm"])
def test_pretraining_checkpoint_matches_reference(tmp_path, group_norm):
    sd = fairseq_state_dict(conv=CONV, group_norm=group_norm, seed=1)
    path = tmp_path / "w2v.pt"
    torch.save({"model": sd, "cfg": {"model": fairseq_cfg(conv=CONV, group_norm=group_norm)}}, path)
    enc = load_ssl(path)
    assert enc.num_layers == 2 and enc.dim == 32
    assert enc.normalize_waveform is (not group_norm)  # pre-norm models normalise the input
    x = _wav()
    got = enc.encode([x], layers=[-1])[0][0]
    wav = torch.from_numpy(x)[None]
    if not group_norm:
        wav = torch.nn.functional.layer_norm(wav, wav.shape)
    with torch.no_grad():
        want = reference_forward(sd, wav, heads=4, strides=STRIDES, group_norm=group_norm,
                                 layer_norm_first=not group_norm, final_norm=False).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


def test_old_checkpoint_with_argparse_namespace_and_hubert(tmp_path):
    sd = fairseq_state_dict(conv=CONV, seed=2)
    sd["label_embs_concat"] = torch.randn(10, 8)
    args = argparse.Namespace(**fairseq_cfg(conv=CONV, name="hubert"), arch="hubert")
    path = tmp_path / "hubert.pt"
    torch.save({"model": sd, "args": args, "cfg": None}, path)
    enc = load_ssl(path)
    assert "hubert" in enc.encoder_id
    with torch.no_grad():
        want = reference_forward(sd, torch.from_numpy(_wav())[None], heads=4, strides=STRIDES)
    np.testing.assert_allclose(enc.encode([_wav()], [-1])[0][0], want.numpy(), atol=2e-5, rtol=1e-4)


def test_finetuned_ctc_checkpoint_keeps_the_encoder(tmp_path):
    sd = fairseq_state_dict(conv=CONV, seed=3, extras=False, prefix="w2v_encoder.w2v_model.")
    sd["w2v_encoder.proj.weight"] = torch.randn(30, 32)
    sd["w2v_encoder.proj.bias"] = torch.randn(30)
    cfg = {"model": {"_name": "wav2vec_ctc", "w2v_args": {"model": fairseq_cfg(conv=CONV)}}}
    path = tmp_path / "ctc.pt"
    torch.save({"model": sd, "cfg": cfg}, path)
    enc = load_ssl(path)
    plain = {k[len("w2v_encoder.w2v_model."):]: v for k, v in sd.items() if k.startswith("w2v_encoder.w2v_model.")}
    with torch.no_grad():
        want = reference_forward(plain, torch.from_numpy(_wav())[None], heads=4, strides=STRIDES)
    np.testing.assert_allclose(enc.encode([_wav()], [-1])[0][0], want.numpy(), atol=2e-5, rtol=1e-4)


class _Evil:  # a class a safe loader must refuse to instantiate
    def __reduce__(self):
        return (print, ("this must not run",))


def test_refuses_checkpoints_that_need_unpickling(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"model": fairseq_state_dict(conv=CONV), "cfg": {"model": fairseq_cfg(conv=CONV)},
                "extra": _Evil()}, path)
    with pytest.raises(ConfigError, match="does not unpickle"):
        load_ssl(path)


def test_architecture_mismatch_is_a_clear_error(tmp_path):
    sd = fairseq_state_dict(conv=CONV)
    del sd["encoder.layers.1.fc2.bias"]
    path = tmp_path / "broken.pt"
    torch.save({"model": sd, "cfg": {"model": fairseq_cfg(conv=CONV)}}, path)
    with pytest.raises(ConfigError, match="missing"):
        load_ssl(path)


def test_conv_layer_strings_are_parsed_without_eval():
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2") == (
        ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
    )
    with pytest.raises(ConfigError):
        parse_conv_layers("__import__('os').system('true')")


def test_config_from_shapes():
    sd = fairseq_state_dict(conv=CONV)
    cfg = FairseqConfig.from_state_dict(sd, num_heads=4, conv_strides=tuple(STRIDES))
    assert cfg.conv_feature_layers == CONV and cfg.encoder_layers == 2
    assert cfg.conv_pos == 16 and cfg.conv_pos_groups == 4 and cfg.encoder_ffn_embed_dim == 64
