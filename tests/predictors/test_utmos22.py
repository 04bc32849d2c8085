"""UTMOS22 strong (SpeechMOS layout) import: strict keys, numerics against an independent
forward of the published architecture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fairseq_layout import fairseq_state_dict, reference_forward
from speechqe.errors import ConfigError
from speechqe.predictors.ssl_strong.train import predict_strong
from speechqe.predictors.ssl_strong.utmos22 import import_utmos22_strong, load_utmos22_strong

BASE_CONV = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
TINY_CONV = ((32, 10, 5), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 3, 2), (32, 2, 2), (32, 2, 2))


def speechmos_state_dict(*, dim, layers, ffn, conv, pos_kernel, pos_groups, emb=128, rnn=512, proj=2048, seed=0):
    """A random state dict with exactly SpeechMOS's UTMOS22Strong keys (``wav2vec2.*`` in
    fairseq layout incl. ``mask_emb``, ``domain_emb``, ``judge_emb``, ``blstm.*``,
    ``projection.{0,2}.*``)."""
    sd = fairseq_state_dict(dim=dim, layers=layers, ffn=ffn, conv=conv, pos_kernel=pos_kernel,
                            pos_groups=pos_groups, prefix="wav2vec2.", extras=False, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    sd["wav2vec2.mask_emb"] = torch.rand(dim, generator=g)
    sd["domain_emb"] = torch.randn(1, emb, generator=g)
    sd["judge_emb"] = torch.randn(1, emb, generator=g)
    feat = dim + 2 * emb
    for r in ("", "_reverse"):
        sd[f"blstm.weight_ih_l0{r}"] = torch.randn(4 * rnn, feat, generator=g) / feat ** 0.5
        sd[f"blstm.weight_hh_l0{r}"] = torch.randn(4 * rnn, rnn, generator=g) / rnn ** 0.5
        sd[f"blstm.bias_ih_l0{r}"] = torch.randn(4 * rnn, generator=g) * 0.1
        sd[f"blstm.bias_hh_l0{r}"] = torch.randn(4 * rnn, generator=g) * 0.1
    sd["projection.0.weight"] = torch.randn(proj, 2 * rnn, generator=g) / (2 * rnn) ** 0.5
    sd["projection.0.bias"] = torch.randn(proj, generator=g) * 0.1
    sd["projection.2.weight"] = torch.randn(1, proj, generator=g) / proj ** 0.5
    sd["projection.2.bias"] = torch.randn(1, generator=g) * 0.1
    return sd


def reference_score(sd, wav, heads, strides):
    """UTMOS22Strong.forward, written out: SSL frames ++ domain ++ judge -> BLSTM -> proj -> mean*2+3."""
    ssl = reference_forward(sd, wav, heads=heads, strides=strides, prefix="wav2vec2.")[None]
    T = ssl.shape[1]
    x = torch.cat([ssl, sd["domain_emb"][:, None].expand(1, T, -1), sd["judge_emb"][:, None].expand(1, T, -1)], -1)
    rnn = sd["blstm.weight_hh_l0"].shape[1]
    lstm = torch.nn.LSTM(x.shape[-1], rnn, batch_first=True, bidirectional=True)
    lstm.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("blstm.")})
    h = lstm(x)[0]
    s = F.linear(F.relu(F.linear(h, sd["projection.0.weight"], sd["projection.0.bias"])),
                 sd["projection.2.weight"], sd["projection.2.bias"])
    return float(s.mean() * 2 + 3)


def test_tiny_import_matches_reference_and_batches():
    sd = speechmos_state_dict(dim=32, layers=2, ffn=64, conv=TINY_CONV, pos_kernel=16,
                              pos_groups=4, emb=8, rnn=16, proj=32)
    model = import_utmos22_strong(sd, num_heads=4)
    rng = np.random.default_rng(0)
    sigs = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (16000, 7000, 11111)]
    with torch.no_grad():
        want = [reference_score(sd, torch.from_numpy(s)[None], 4, [c[2] for c in TINY_CONV]) for s in sigs]
    batched = predict_strong(model, sigs, max_batch=8)
    single = [predict_strong(model, [s])[0] for s in sigs]
    np.testing.assert_allclose(single, want, atol=1e-4)
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_strict_layout_errors():
    sd = speechmos_state_dict(dim=32, layers=2, ffn=64, conv=TINY_CONV, pos_kernel=16,
                              pos_groups=4, emb=8, rnn=16, proj=32)
    bad = dict(sd)
    bad["projection.4.weight"] = bad.pop("projection.2.weight")
    with pytest.raises(ConfigError, match="projection"):
        import_utmos22_strong(bad, num_heads=4)
    bad = dict(sd)
    del bad["wav2vec2.encoder.layers.1.fc1.bias"]
    with pytest.raises(ConfigError, match="missing"):
        import_utmos22_strong(bad, num_heads=4)
    bad = dict(sd)
    bad["judge_emb"] = torch.zeros(1, 9)
    with pytest.raises(ConfigError):
        import_utmos22_strong(bad, num_heads=4)


@pytest.mark.slow
def test_full_size_published_layout(tmp_path):
    """The published checkpoint's exact keys and shapes (wav2vec 2.0 Base, 128-d embeddings,
    512-unit BLSTM, 2048-unit projection), saved as a file and loaded strictly."""
    sd = speechmos_state_dict(dim=768, layers=12, ffn=3072, conv=BASE_CONV, pos_kernel=128, pos_groups=16)
    assert len(sd) == 225  # 211 wav2vec2.* (incl. mask_emb) + 2 embeddings + 8 BLSTM + 4 projection
    path = tmp_path / "utmos22_strong_step7459_v1.pt"
    torch.save(sd, path)
    model = load_utmos22_strong(path)
    assert model.ssl.num_layers == 12 and model.ssl.dim == 768 and model.cfg.blstm_hidden == 512
    x = (np.random.default_rng(1).standard_normal(16000) * 0.1).astype(np.float32)
    with torch.no_grad():
        want = reference_score(sd, torch.from_numpy(x)[None], 12, [c[2] for c in BASE_CONV])
    np.testing.assert_allclose(predict_strong(model, [x])[0], want, atol=1e-4)


def test_utmos_strong_metric_scores_like_the_model(tmp_path):
    from speechqe.audio import LoadedAudio
    from speechqe.manifest import AudioItem
    from speechqe import plugins
    from speechqe.metric import ScoringInput

    # 48-d so that the published 12 heads divide it
    sd = speechmos_state_dict(dim=48, layers=2, ffn=64, conv=TINY_CONV, pos_kernel=16,
                              pos_groups=4, emb=8, rnn=16, proj=32)
    path = tmp_path / "utmos.pt"
    torch.save(sd, path)
    m = plugins.create(f"utmos_strong:{path}")
    m.ensure_ready()
    assert m.model_id().startswith("utmos22-")
    rng = np.random.default_rng(3)
    sigs = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (16000, 9000)]
    inputs = [ScoringInput(AudioItem(id=f"i{k}", path="", system="s"), LoadedAudio.from_array(s, 16000))
              for k, s in enumerate(sigs)]
    got = [r.values["utmos_strong"] for r in m.score_batch(inputs)]
    with torch.no_grad():
        want = [reference_score(sd, torch.from_numpy(s)[None], 12, [c[2] for c in TINY_CONV]) for s in sigs]
    np.testing.assert_allclose(got, want, atol=1e-4)
