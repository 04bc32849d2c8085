"""Stacking folds and stages; the Whisper head's padding invariance; extra feature sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechqe.errors import ConfigError
from speechqe.predictors.stacking import StackingConfig, fit_stack, make_folds, out_of_fold
from speechqe.predictors.weak.features import FeatureSetSpec, pool
from speechqe.predictors.weak.learners import LearnerSpec
from speechqe.predictors.whisper_mos.model import WhisperHeadConfig
from speechqe.predictors.whisper_mos.train import WhisperMOS, predict_whisper_mos


def test_folds_never_split_a_group():
    groups = [f"sys{i % 7}" for i in range(70)]
    folds = make_folds(groups, 5, seed=1)
    seen = []
    for tr, te in folds:
        assert not {groups[i] for i in tr} & {groups[i] for i in te}
        seen += list(te)
    assert sorted(seen) == list(range(70))
    with pytest.raises(ConfigError, match="groups"):
        make_folds(["a", "b"], 3)


def test_stack_combines_columns_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 5, 120)
    good = y + rng.normal(0, 0.3, 120)
    other = y + rng.normal(0, 0.6, 120)
    noise = rng.uniform(1, 5, 120)
    Z = np.column_stack([good, other, noise])
    folds = make_folds([f"g{i % 12}" for i in range(120)], 4)
    cfg = StackingConfig(stage2=(LearnerSpec("ridge"), LearnerSpec("gp")))
    stack = fit_stack(Z, y, ["good", "other", "noise"], folds, cfg)
    pred = stack.predict(Z)
    assert np.corrcoef(pred, y)[0, 1] > np.corrcoef(good, y)[0, 1] - 0.01
    assert stack.stage2_oof.shape == (120, 2)
    from speechqe.predictors.stacking import Stack

    meta = stack.save(tmp_path)
    again = Stack.load(tmp_path, meta)
    np.testing.assert_allclose(again.predict(Z), pred, rtol=1e-10)
    oof = out_of_fold(lambda tr, te: np.full(len(te), float(np.mean(y[tr]))), 120, folds)
    assert np.isfinite(oof).all()


def test_whisper_head_ignores_padding():
    torch.manual_seed(0)
    cfg = WhisperHeadConfig(layers=(-1, -2), proj_dim=8, blstm_hidden=8, attn_hidden=8)
    model = WhisperMOS(16, cfg).eval()
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((2, n, 16)).astype(np.float32) for n in (40, 7, 25, 13)]
    counts = [n * 320 for n in (40, 7, 25, 13)]
    batched = predict_whisper_mos(model, feats, counts, batch_size=4)
    single = [predict_whisper_mos(model, [f], [c])[0] for f, c in zip(feats, counts)]
    np.testing.assert_allclose(batched, single, atol=1e-5)
    with pytest.raises(ConfigError):
        WhisperHeadConfig(layers=(-1, -2), finetune_blocks=1)


def test_pooling_and_feature_specs():
    frames = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    v = pool(frames, ("mean", "std"))
    assert v.shape == (12,) and v[0] == pytest.approx(4.5) and v[3] == pytest.approx(np.std([0, 3, 6, 9]))
    with pytest.raises(ConfigError):
        FeatureSetSpec(name="x", source="encoder")
    with pytest.raises(ConfigError):
        FeatureSetSpec(name="x", source="dnsmos", pooling=("median",))


@pytest.mark.slow
@pytest.mark.corpora
def test_dnsmos_and_distillmos_features_rank_noise_on_real_speech(tmp_path):
    """The packaged pretrained predictors as extra features: cleaner copies score higher."""
    from conftest import corpus
    from speechqe import degrade as D
    from speechqe.audio import LoadedAudio
    from speechqe.encoders import FeatureCache
    from speechqe.predictors.weak.features import FeatureExtractor

    clip = sorted((corpus("librivox-5")).glob("*.wav"))[0]
    x = LoadedAudio.from_file(clip).at(16000)[: 16000 * 4]
    sigs = [x, D.add_noise(x, D.white_noise(x.size, 1), 10), D.add_noise(x, D.white_noise(x.size, 2), 0)]
    cache = FeatureCache(tmp_path)
    for source, col in (("dnsmos", 2), ("distillmos", 0)):
        ext = FeatureExtractor(FeatureSetSpec(name=source, source=source), cache=cache)
        vecs = ext.vectors(lambda i: sigs[i], ["h0", "h1", "h2"])
        scores = [float(v[col]) for v in vecs]
        assert scores[0] > scores[1] > scores[2], (source, scores)
        again = ext.vectors(lambda i: (_ for _ in ()).throw(AssertionError("recomputed")), ["h0", "h1", "h2"])
        np.testing.assert_array_equal(np.stack(again), np.stack(vecs))
