"""Layer interfaces (weighted sum, hierarchical convolution): shapes, log depth, gradients,
batch == single, the file, and the aggregated encoder on a random-weight SSL model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechqe.encoders.aggregate import (
    AggregatedEncoder,
    AggregatorConfig,
    HierarchicalConv,
    WeightedSum,
    build_aggregator,
    hconv_depth,
    load_aggregator,
    save_aggregator,
)
from speechqe.errors import ConfigError


@pytest.mark.parametrize("layers,depth", [(1, 0), (2, 1), (3, 2), (5, 3), (13, 4), (25, 5)])
def test_hconv_depth_is_log2_rounded_up(layers, depth):
    assert hconv_depth(layers) == depth == (0 if layers == 1 else int(np.ceil(np.log2(layers))))
    m = build_aggregator(AggregatorConfig(kind="hconv", channels=8, out_dim=6), layers, 4)
    assert isinstance(m, HierarchicalConv) and len(m.convs) == depth
    assert m(torch.randn(2, layers, 7, 4)).shape == (2, 7, 6)


def test_weighted_sum_is_the_softmax_mix_of_normalised_layers():
    m = build_aggregator(AggregatorConfig(kind="weighted_sum"), 3, 4)
    assert isinstance(m, WeightedSum) and np.allclose(m.layer_weights(), 1 / 3)
    with torch.no_grad():
        m.weights.copy_(torch.tensor([0.0, 0.0, 50.0]))  # all weight on layer 2
    h = torch.randn(1, 3, 5, 4) * torch.tensor([1.0, 10.0, 100.0])[None, :, None, None]
    want = torch.nn.functional.layer_norm(h[:, 2], (4,))
    torch.testing.assert_close(m(h), want, rtol=1e-5, atol=1e-5)
    # the list form LayerMix takes is the same input
    torch.testing.assert_close(m([h[:, i] for i in range(3)]), m(h))


@pytest.mark.parametrize("kind", ["weighted_sum", "hconv"])
def test_gradients_reach_every_parameter(kind):
    torch.manual_seed(0)
    m = build_aggregator(AggregatorConfig(kind=kind), 5, 8)
    h = torch.randn(2, 5, 6, 8, requires_grad=True)
    m(h).pow(2).mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert h.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["weighted_sum", "hconv"])
def test_padding_never_changes_an_item(kind):
    torch.manual_seed(1)
    m = build_aggregator(AggregatorConfig(kind=kind), 4, 6).eval()
    a, b = torch.randn(4, 9, 6), torch.randn(4, 3, 6)
    batch = torch.zeros(2, 4, 9, 6)
    batch[0], batch[1, :, :3] = a, b
    out = m(batch)
    torch.testing.assert_close(out[0], m(a[None])[0])
    torch.testing.assert_close(out[1, :3], m(b[None])[0])


def test_shapes_are_checked():
    m = build_aggregator(AggregatorConfig(), 4, 6)
    with pytest.raises(ConfigError, match=r"\(batch, 4, frames, 6\)"):
        m(torch.randn(1, 3, 5, 6))
    with pytest.raises(ConfigError, match="stride"):
        from speechqe.config import validate

        validate(AggregatorConfig, {"stride": 1}, "agg")


def test_file_round_trip_and_aggregated_encoder(tmp_path):
    from speechqe.encoders import EncoderSpec, load_encoder
    from speechqe.encoders.aggregate import load_aggregated_encoder
    from speechqe.encoders.ssl import TINY_ARCH

    spec = EncoderSpec.from_dict({"kind": "ssl", "arch": TINY_ARCH, "seed": 2}).to_dict()
    base = load_encoder(spec)
    cfg = AggregatorConfig(kind="hconv", out_dim=7)
    torch.manual_seed(3)
    agg = build_aggregator(cfg, base.num_layers + 1, base.dim)
    path = save_aggregator(tmp_path / "agg", agg, cfg, spec, {"trained_on": "nothing"})
    module, cfg2, header = load_aggregator(path)
    assert cfg2 == cfg and header["meta"] == {"trained_on": "nothing"}
    for k, v in agg.state_dict().items():
        torch.testing.assert_close(module.state_dict()[k], v)
    enc = load_aggregated_encoder(path)
    assert isinstance(enc, AggregatedEncoder) and enc.num_layers == 0 and enc.dim == 7
    x = [np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1,
         np.random.default_rng(1).standard_normal(5000).astype(np.float32) * 0.1]
    out = enc.encode(x)
    hidden = base.encode(x, None)
    for o, h in zip(out, hidden):
        assert o.shape == (1, h.shape[1], 7)
        with torch.no_grad():
            np.testing.assert_allclose(o[0], agg.eval()(torch.as_tensor(h)[None])[0].numpy(),
                                       rtol=1e-5, atol=1e-5)
    assert enc.encoder_id.startswith("aggregate:hconv:") and base.encoder_id in enc.encoder_id
    with pytest.raises(ConfigError, match="hidden states"):
        AggregatedEncoder(base, build_aggregator(cfg, base.num_layers, base.dim), cfg)
    (tmp_path / "x.safetensors").write_bytes(b"junk")
    with pytest.raises(ConfigError, match="not a layer aggregator"):
        load_aggregator(tmp_path / "x.safetensors")

