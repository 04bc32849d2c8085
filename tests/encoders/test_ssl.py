"""SSL encoders: padding-aware batches, layer selection, torchaudio/HF/asset loading."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from speechqe.encoders import EncoderSpec, load_encoder
from speechqe.encoders.ssl import TINY_ARCH, LayerMix, build_random, load_ssl, load_torchaudio_state_dict
from speechqe.errors import ConfigError

VARIANTS = {
    "wav2vec2-groupnorm": {},
    "wav2vec2-prenorm-normalised": {"extractor_mode": "layer_norm", "encoder_layer_norm_first": True,
                                    "normalize_waveform": True},
    "wavlm": {"type": "wavlm"},
}


def _signals(lengths=(16000, 9000, 12345, 400), seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in lengths]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_padded_batch_equals_batch_size_one(variant):
    enc = build_random({**TINY_ARCH, **VARIANTS[variant]}, seed=3)
    sigs = _signals()
    batched = enc.encode(sigs, max_batch=8)
    for s, b in zip(sigs, batched):
        one = enc.encode([s])[0]
        assert b.shape == one.shape == (3, enc.frames_for(s.size), 32)
        np.testing.assert_allclose(b, one, atol=1e-5)


@pytest.mark.parametrize("variant", ["wav2vec2-groupnorm", "wavlm"])
def test_unpadded_matches_torchaudio_extract_features(variant):
    enc = build_random({**TINY_ARCH, **VARIANTS[variant]}, seed=4)
    x = _signals((8000,))[0]
    ours = enc.encode([x])[0]
    with torch.no_grad():
        ta, _ = enc.module.extract_features(torch.from_numpy(x)[None])
    for k, t in enumerate(ta):
        np.testing.assert_allclose(ours[k + 1], t[0].numpy(), atol=1e-5)


def test_torchaudio_extract_features_differs_under_padding():
    """The flaw we fix: torchaudio's group norm sees the padding."""
    enc = build_random(TINY_ARCH, seed=5)
    short, long = _signals((6000, 16000))
    wav = torch.zeros(2, 16000)
    wav[0, :6000] = torch.from_numpy(short)
    wav[1] = torch.from_numpy(long)
    with torch.no_grad():
        ta, n = enc.module.extract_features(wav, torch.tensor([6000, 16000]))
        alone, _ = enc.module.extract_features(torch.from_numpy(short)[None])
    gap = float((ta[-1][0, : int(n[0])] - alone[-1][0]).abs().max())
    assert gap > 1e-3
    np.testing.assert_allclose(enc.encode([short, long])[0][-1], alone[-1][0].numpy(), atol=1e-5)


def test_layer_selection_and_weighted_mix():
    enc = build_random(TINY_ARCH, seed=6)
    x = _signals((8000,))[0]
    full = enc.encode([x])[0]
    np.testing.assert_array_equal(enc.encode([x], layers=[-1, 0])[0], full[[2, 0]])
    with pytest.raises(ConfigError):
        enc.encode([x], layers=[3])
    hidden = [torch.from_numpy(h)[None] for h in full]
    mix = LayerMix(3, "weighted")
    np.testing.assert_allclose(mix(hidden)[0].detach().numpy(), full.mean(0), atol=1e-6)
    assert LayerMix(3, 1)(hidden) is hidden[1]
    with pytest.raises(ConfigError):
        LayerMix(3, 5)


def test_forward_is_differentiable():
    enc = build_random(TINY_ARCH, seed=7)
    enc.module.train()
    wav = torch.randn(2, 8000) * 0.1
    hidden, n = enc.forward(wav, torch.tensor([8000, 5000]))
    loss = hidden[-1].pow(2).mean()
    loss.backward()
    assert enc.module.encoder.transformer.layers[0].feed_forward.output_dense.weight.grad is not None


def test_huggingface_folders(tmp_path):
    transformers = pytest.importorskip("transformers")
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                  conv_dim=(32, 32, 32), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2),
                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                  hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                  feat_proj_dropout=0.0, layerdrop=0.0)
    x = _signals((7000,))[0]
    for cfg_cls, model_cls, extra in [
        (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model, {}),
        (transformers.HubertConfig, transformers.HubertModel, {}),
        (transformers.WavLMConfig, transformers.WavLMModel, {"num_buckets": 32, "max_bucket_distance": 64}),
        (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model,
         {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}),
    ]:
        torch.manual_seed(0)
        hf = model_cls(cfg_cls(**common, **extra)).eval()
        folder = tmp_path / f"{model_cls.__name__}-{len(extra)}"
        hf.save_pretrained(folder)
        enc = load_ssl(folder)
        ours = enc.encode([x])[0]
        wav = torch.from_numpy(x)[None]
        # Pre-norm models get a normalised waveform (HF does it in the feature extractor).
        assert enc.normalize_waveform is bool(extra.get("do_stable_layer_norm"))
        if enc.normalize_waveform:
            wav = torch.nn.functional.layer_norm(wav, wav.shape)
        with torch.no_grad():
            ref = hf(wav, output_hidden_states=True).hidden_states
        assert len(ref) == ours.shape[0]
        for k in range(len(ref)):
            np.testing.assert_allclose(ours[k], ref[k][0].numpy(), atol=1e-4, err_msg=f"{folder.name} layer {k}")


def test_torchaudio_state_dict_file_and_errors(tmp_path):
    enc = build_random(TINY_ARCH, seed=8)
    path = tmp_path / "tiny.pth"
    torch.save(enc.module.state_dict(), path)
    with pytest.raises(ConfigError, match="does not fit"):
        load_torchaudio_state_dict("wav2vec2_base", path)
    with pytest.raises(ConfigError, match="factory"):
        load_ssl(tmp_path / "tiny.pth")
    with pytest.raises(ConfigError, match="neither"):
        load_ssl("no-such-asset-or-file")


def test_encoder_spec_random_arch_is_deterministic():
    spec = EncoderSpec.from_dict({"kind": "ssl", "arch": TINY_ARCH, "seed": 1})
    a, b = load_encoder(spec), load_encoder(spec.to_dict())
    assert a.encoder_id == b.encoder_id
    x = _signals((4000,))[0]
    np.testing.assert_array_equal(a.encode([x])[0], b.encode([x])[0])
    with pytest.raises(ConfigError, match="encoder: unknown key 'layer' \\(known: kind, source, "):
        EncoderSpec.from_dict({"kind": "ssl", "source": "x", "layer": 3})


def test_encoder_spec_is_a_typed_config():
    """Unknown keys, bad values and a missing source are errors naming the config, the key
    and the value; a spec survives a round trip through its plain form and stays hashable."""
    spec = EncoderSpec.from_dict({"kind": "ssl", "arch": TINY_ARCH, "seed": "1"})
    assert spec.seed == 1 and EncoderSpec.from_dict(spec.to_dict()) == spec
    assert hash(spec) == hash(EncoderSpec.from_dict(spec.to_dict()))
    assert EncoderSpec.from_dict({"kind": "whisper-ct2"}).pad_to_30s is True  # the one default
    for d, message in [
        ({"kind": "wav2vec"}, "mos.yaml: kind: Input should be 'ssl', 'whisper', 'whisper-ct2' or 'logmel' (got 'wav2vec')"),
        ({"kind": "ssl"}, "mos.yaml: a 'ssl' encoder needs a source"),
        ({"kind": "whisper", "source": "x", "pad_to_30s": "sometimes"}, "mos.yaml: pad_to_30s: Input should be a valid boolean"),
        ({"source": "x"}, "mos.yaml: kind: Field required"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            EncoderSpec.from_dict(d, "mos.yaml")
    with pytest.raises(ConfigError, match=re.escape("encoder 'hubert:x': kind: Input should be")):
        load_encoder("hubert:x")


@pytest.mark.slow
def test_asset_found_in_torch_hub_cache_and_override(tmp_path, monkeypatch):
    """A bundle-format state dict of the real base architecture, placed where
    torchaudio.pipelines.WAVLM_BASE.get_model() caches it, is found and loaded strictly."""
    from speechqe.encoders.ssl import build_model

    torch.manual_seed(0)
    model = build_model("wavlm_base").eval()
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(model.state_dict(), hub / "wavlm_base.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("SPEECHQE_CACHE", str(tmp_path / "cache"))
    enc = load_ssl("ssl-wavlm-base")
    assert enc.num_layers == 12 and enc.dim == 768 and enc.is_wavlm and not enc.normalize_waveform
    assert enc.encoder_id.startswith("ssl:ssl-wavlm-base:")
    x = _signals((8000,))[0]
    with torch.no_grad():
        want, _ = model.extract_features(torch.from_numpy(x)[None])
    np.testing.assert_allclose(enc.encode([x], [6])[0][0], want[5][0].numpy(), atol=1e-4)
    # The asset override (SPEECHQE_ASSET_<NAME>) wins over the hub cache.
    other = tmp_path / "override"
    other.mkdir()
    (hub / "wavlm_base.pth").rename(other / "wavlm_base.pth")
    monkeypatch.setenv("SPEECHQE_ASSET_SSL_WAVLM_BASE", str(other))
    assert load_ssl("ssl-wavlm-base").encoder_id == enc.encoder_id


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_architecture_description_round_trips(variant):
    enc = build_random({**TINY_ARCH, **VARIANTS[variant]}, seed=9)
    again = build_random(enc.arch, seed=9)
    assert again.arch == enc.arch
    assert {k: v.shape for k, v in again.module.state_dict().items()} == {
        k: v.shape for k, v in enc.module.state_dict().items()}
    x = _signals((5000,))[0]
    np.testing.assert_array_equal(again.encode([x])[0], enc.encode([x])[0])
