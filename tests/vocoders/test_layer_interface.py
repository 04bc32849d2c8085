"""Fitting a layer interface for the tokenizer (CTC characters over the aggregated hidden
states of a frozen encoder), on a random-weight SSL model."""

from __future__ import annotations

import numpy as np

from speechqe.encoders.aggregate import AggregatorConfig, save_aggregator


def test_ctc_interface_fit_lowers_the_loss_and_tokenizes(tmp_path):
    """Fit both interfaces on a random-weight SSL model over 3 transcribed clips: the CTC loss
    falls; the saved interface is a tokenizer input (``aggregate:<file>``)."""
    import soundfile as sf

    from speechqe.encoders import EncoderSpec, load_encoder
    from speechqe.encoders.ssl import TINY_ARCH
    from speechqe.manifest import from_folder
    from speechqe.vocoders.features import load_feature_source
    from speechqe.vocoders.layer_interface import InterfaceFitConfig, char_ids, fit_ctc_interface
    from speechqe.vocoders.tokenize import train_codebook
    from speechqe.vocoders.units import KMeansConfig

    assert char_ids("Hello,  World's!") == [10, 7, 14, 14, 17, 1, 25, 17, 20, 14, 6, 2, 21]
    root = tmp_path / "set"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, text in enumerate(("a b", "ab", "ba a")):
        sf.write(root / f"c{i}.wav", (0.1 * rng.standard_normal(12000)).astype(np.float32), 16000)
        (root / f"c{i}.txt").write_text(text)
    sset = from_folder(root)
    spec = EncoderSpec.from_dict({"kind": "ssl", "arch": TINY_ARCH, "seed": 2}).to_dict()
    base = load_encoder(spec)
    for kind in ("weighted_sum", "hconv"):
        cfg = InterfaceFitConfig(aggregator=AggregatorConfig(kind=kind), steps=30, lr=1e-2)
        agg, info = fit_ctc_interface(sset, base, cfg)
        assert info["items"] == 3 and info["loss_last"] < info["loss_first"]
        assert ("layer_weights" in info) == (kind == "weighted_sum")
    path = save_aggregator(tmp_path / "i.safetensors", agg, cfg.aggregator, spec, info)
    src = load_feature_source(f"aggregate:{path}", None, cache_dir=str(tmp_path / "cache"))
    cb = train_codebook(sset, src, KMeansConfig(k=4, batch_size=32, epochs=1))
    assert cb.dim == base.dim and cb.encoder.startswith("aggregate:hconv:")
