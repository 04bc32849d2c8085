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


def _columns(seed=0, n=120):
    rng = np.random.default_rng(seed)
    y = rng.uniform(1, 5, n)
    good = y + rng.normal(0, 0.3, n)
    other = 0.5 * y + 1.5 + rng.normal(0, 0.4, n)  # shrunk scale, still informative
    noise = rng.uniform(1, 5, n)
    anti = 6 - y + rng.normal(0, 0.5, n)
    const = np.full(n, 3.0)
    return y, np.column_stack([good, other, noise, anti, const])


def test_stack_never_falls_below_its_best_member_and_round_trips(tmp_path):
    y, Z = _columns()
    cols = ["good", "other", "noise", "anti", "const"]
    folds = make_folds([f"g{i % 12}" for i in range(len(y))], 4)
    stack = fit_stack(Z, y, cols, folds, StackingConfig(stage2=(LearnerSpec(kind="nnls"),)),
                      score_range=(1.0, 5.0))
    # pruning: negative and undefined correlations never enter
    assert stack.members["anti"]["status"] == "pruned" and "correlation" in stack.members["anti"]["reason"]
    assert stack.members["const"]["status"] == "degenerate"
    assert stack.best == "good" and "anti" not in stack.used and "const" not in stack.used
    assert sum(stack.weights.values()) == pytest.approx(1.0) and min(stack.weights.values()) > 0
    assert all(0 <= v <= 1 for v in stack.convex.values()) and sum(stack.convex.values()) == pytest.approx(1.0)
    # out of fold, every kept candidate beats predicting the mean
    for name, c in stack.candidates.items():
        if c["status"] == "kept":
            assert c["mse"] < np.var(y), name
    # on fresh data from the same process, the ensemble is not worse than the best member
    y2, Z2 = _columns(seed=1)
    pred = stack.predict(Z2)
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    from scipy.stats import spearmanr

    assert spearmanr(pred, y2)[0] >= spearmanr(Z2[:, 0], y2)[0] - 0.01
    from speechqe.predictors.stacking import Stack

    meta = stack.save(tmp_path, Z[:4])
    again = Stack.load(tmp_path, meta)
    np.testing.assert_array_equal(again.predict(Z2), pred)
    oof = out_of_fold(lambda tr, te: np.full(len(te), float(np.mean(y[tr]))), len(y), folds)
    assert np.isfinite(oof).all()


def test_nothing_to_stack_is_an_error():
    y, Z = _columns()
    folds = make_folds([f"g{i % 12}" for i in range(len(y))], 4)
    with pytest.raises(ConfigError, match="nothing to stack"):
        fit_stack(Z[:, 3:], y, ["anti", "const"], folds)


def test_convex_weights_solve_the_constrained_least_squares():
    from speechqe.predictors.stacking import convex_weights

    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    C = np.column_stack([y + rng.normal(0, 0.5, 200), y + rng.normal(0, 1.0, 200), -y])
    w = convex_weights(C, y)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    # the same optimum by another method: NNLS with a heavily weighted sum-to-one row
    from scipy.optimize import nnls

    ref = nnls(np.vstack([C, 1e3 * np.ones(3)]), np.concatenate([y, [1e3]]))[0]
    np.testing.assert_allclose(w, ref, atol=1e-3)
    assert w[0] > w[1] > w[2]  # the less noisy column weighs most


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
    from speechqe.config import validate

    with pytest.raises(ConfigError, match="fine-tuning the top blocks"):
        validate(WhisperHeadConfig, {"layers": [-1, -2], "finetune_blocks": 1}, "head")


def test_pooling_and_feature_specs():
    from speechqe.config import validate

    frames = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    v = pool(frames, ("mean", "std"))
    assert v.shape == (12,) and v[0] == pytest.approx(4.5) and v[3] == pytest.approx(np.std([0, 3, 6, 9]))
    v = pool(frames, ("p10", "p90", "dmean", "dstd", "median"))
    assert v.shape == (30,)
    assert v[0] == pytest.approx(np.percentile([0, 3, 6, 9], 10)) and v[6] == pytest.approx(3.0) and v[9] == 0
    with pytest.raises(ConfigError, match="needs 'encoder'"):
        validate(FeatureSetSpec, {"name": "x", "source": "encoder"}, "fs")
    with pytest.raises(ConfigError, match="pooling.0: Input should be"):
        validate(FeatureSetSpec, {"name": "x", "source": "dnsmos", "pooling": ["mode"]}, "fs")
    with pytest.raises(ConfigError, match="layer_mode each needs an encoder"):
        validate(FeatureSetSpec, {"name": "x", "source": "signal", "layer_mode": "each"}, "fs")


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
