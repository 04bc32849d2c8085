"""Public checkpoint layout: random-weight checkpoints written as speech-resynthesis /
textlesslib write them (``{"generator": state_dict}`` with ``weight_g``/``weight_v`` + JSON
config) load into our generator and give the public forward pass's waveform; ours load into the
public module tree."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from unit_vocoder_helpers import RefCodeGenerator, public_config, tiny_generator

from speechqe.errors import ConfigError
from speechqe.vocoders.unit_hifigan.checkpoint import load_generator, save_checkpoint
from speechqe.vocoders.unit_hifigan.config import GeneratorConfig
from speechqe.vocoders.unit_hifigan.infer import UnitVocoder
from speechqe.vocoders.unit_hifigan.model import UnitHiFiGAN


def _write_public(folder, h, name="g_00400000"):
    torch.manual_seed(3)
    ref = RefCodeGenerator(h).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"generator": ref.state_dict()}, folder / name)
    (folder / "config.json").write_text(json.dumps(h))
    return ref


@pytest.mark.parametrize("variant", ["units", "f0bins_spkr_dur", "spkr_vector_f0"])
def test_public_checkpoint_loads_and_matches_reference_forward(tmp_path, variant):
    if variant == "units":
        h = public_config()
    elif variant == "f0bins_spkr_dur":
        h = public_config(f0=True, f0_quant_num_bin=4, multispkr=True, num_speakers=3,
                          model_in_dim=48, dur_predictor_params={
                              "encoder_embed_dim": 16, "var_pred_hidden_dim": 8,
                              "var_pred_kernel_size": 3, "var_pred_dropout": 0.5})
    else:
        h = public_config(f0=True, multispkr=True, embedder_params={"embedder_dim": 6},
                          embedder_dim=6, model_in_dim=33)
    ref = _write_public(tmp_path / "ckpt", h)
    assert "conv_pre.weight_g" in ref.state_dict()
    voc = UnitVocoder.from_checkpoint(tmp_path / "ckpt")
    g = torch.Generator().manual_seed(0)
    code = torch.randint(0, 12, (1, 17), generator=g)
    kw, ours_kw = {}, {}
    if variant == "f0bins_spkr_dur":
        f0 = torch.randint(0, 4, (1, 17), generator=g)
        kw = {"f0": f0, "spkr": torch.tensor([[2]])}
        ours_kw = {"f0": [f0[0].numpy()], "speakers": [2]}
    elif variant == "spkr_vector_f0":
        f0 = torch.rand(1, 17, generator=g) * 3
        vec = torch.randn(1, 6, generator=g)
        kw = {"f0": f0, "spkr": vec[:, None, :]}
        ours_kw = {"f0": [f0[0].numpy()], "speakers": [vec[0].numpy()]}
    with torch.no_grad():
        want = ref(code, **kw)[0, 0].numpy()
    got = voc.synthesize([code[0].numpy()], **ours_kw)[0]
    assert got.shape == want.shape == (17 * 320,)
    assert np.std(want) > 1e-3
    np.testing.assert_allclose(got, want, atol=1e-4)
    if variant == "f0bins_spkr_dur":
        u = np.array([1, 5, 2, 9, 3])
        with torch.no_grad():
            xd = ref.dict(torch.from_numpy(u)[None])
            d = torch.clamp(torch.round(torch.exp(ref.dur_predictor(xd)) - 1).long(), min=1)
        n = int(d.sum())
        f0 = np.arange(n) % 4
        with torch.no_grad():
            want = ref(torch.from_numpy(u)[None], f0=torch.from_numpy(f0)[None],
                       spkr=torch.tensor([[1]]), dur_prediction=True)[0, 0].numpy()
        got = voc.synthesize([u], predict_durations=True, f0=[f0], speakers=[1])[0]
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_our_checkpoint_loads_into_the_public_module_tree(tmp_path):
    cfg = tiny_generator(f0=True, f0_quant_num_bin=4, multispkr=True, num_speakers=3)
    torch.manual_seed(1)
    ours = UnitHiFiGAN(cfg)
    save_checkpoint(tmp_path, 10, ours, cfg, {"note": "test"})
    h = json.loads((tmp_path / "config.json").read_text())
    assert h["model_in_dim"] == 48 and h["code_hop_size"] == 320
    ref = RefCodeGenerator(h)
    blob = torch.load(tmp_path / "g_00000010", weights_only=True)
    ref.load_state_dict(blob["generator"], strict=True)
    ref.eval()
    ours.eval()
    code = torch.randint(0, 12, (1, 9))
    f0 = torch.randint(0, 4, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(code, f0=f0, speaker=torch.tensor([1])),
                                   ref(code, f0=f0, spkr=torch.tensor([[1]])), atol=1e-5, rtol=0)
    model, meta = load_generator(tmp_path)
    assert meta["speechqe"]["note"] == "test"
    assert GeneratorConfig.from_public(h) == cfg


def test_weight_norm_folded_checkpoint_loads(tmp_path):
    h = public_config()
    ref = _write_public(tmp_path / "a", h)
    folded = UnitVocoder.from_checkpoint(tmp_path / "a")
    (tmp_path / "b").mkdir()
    torch.save({"generator": folded.model.state_dict()}, tmp_path / "b" / "model.pt")
    (tmp_path / "b" / "config.json").write_text(json.dumps(h))
    again = UnitVocoder.from_checkpoint(tmp_path / "b" / "model.pt")
    u = np.arange(12) % 12
    np.testing.assert_allclose(again.synthesize([u])[0], folded.synthesize([u])[0], atol=1e-6)
    assert ref is not None


def test_unsupported_or_inconsistent_configs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="VQ-VAE"):
        GeneratorConfig.from_public(public_config(f0=True, f0_quantizer_path="x/g_0040"))
    with pytest.raises(ConfigError, match="model_in_dim"):
        GeneratorConfig.from_public(public_config(model_in_dim=384))
    with pytest.raises(ConfigError, match="code_hop_size"):
        GeneratorConfig.from_public(public_config(code_hop_size=256))
    # speech-resynthesis' "multispkr": "single" builds the speaker table
    assert GeneratorConfig.from_public(public_config(multispkr="single", model_in_dim=32)
                                       ).multispkr
    # weights that do not fit the config
    _write_public(tmp_path / "c", public_config())
    (tmp_path / "c" / "config.json").write_text(json.dumps(public_config(num_embeddings=20)))
    with pytest.raises(ConfigError, match="wrong shapes"):
        load_generator(tmp_path / "c")
    with pytest.raises(ConfigError, match="no g_"):
        load_generator(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "g_00000001").write_bytes(b"not a checkpoint")
    (tmp_path / "d" / "config.json").write_text(json.dumps(public_config()))
    with pytest.raises(ConfigError, match="cannot read"):
        load_generator(tmp_path / "d")
