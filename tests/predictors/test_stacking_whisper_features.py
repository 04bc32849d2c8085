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


ALL = ("best-member", "convex", "mean", "rank-mean", "greedy")


@pytest.mark.parametrize("kw", [
    {"stage2": (LearnerSpec(kind="nnls"),)},
    {"candidates": ALL, "stage3": "select"},
    {"candidates": ALL, "shrink": "cv"},
    {"candidates": ("rank-mean", "greedy"), "stage3": "convex"},
], ids=["default+nnls", "select", "shrink-cv", "rank+greedy"])
def test_stack_never_falls_below_its_best_member_and_round_trips(tmp_path, kw):
    y, Z = _columns()
    cols = ["good", "other", "noise", "anti", "const"]
    folds = make_folds([f"g{i % 12}" for i in range(len(y))], 4)
    stack = fit_stack(Z, y, cols, folds, StackingConfig(**kw), score_range=(1.0, 5.0))
    # pruning: negative and undefined correlations never enter
    assert stack.members["anti"]["status"] == "pruned" and "correlation" in stack.members["anti"]["reason"]
    assert stack.members["const"]["status"] == "degenerate"
    assert stack.best == "good" and "anti" not in stack.used and "const" not in stack.used
    assert sum(stack.weights.values()) == pytest.approx(1.0) and min(stack.weights.values()) > 0
    if "convex" in stack.candidates:
        assert all(0 <= v <= 1 for v in stack.convex.values()) and sum(stack.convex.values()) == pytest.approx(1.0)
    if kw.get("stage3") == "select":
        assert len(stack.weights) == 1
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

    import json

    meta = json.loads(json.dumps(stack.save(tmp_path, Z[:4])))  # as bundle.json stores it
    again = Stack.load(tmp_path, meta)
    np.testing.assert_array_equal(again.predict(Z2), pred)
    for name, p in stack.candidate_predict(Z2).items():
        np.testing.assert_array_equal(again.candidate_predict(Z2)[name], p, err_msg=name)


def test_greedy_selection_and_rank_mean():
    """Caruana's forward selection starts from the best column and only adds what raises the
    SRCC; rank-mean is monotone in the members' mean rank and on the mean candidate's scale."""
    from scipy.stats import spearmanr

    from speechqe.predictors.stacking import fit_stage2, greedy_weights

    y, Z = _columns()
    U = Z[:, :3]  # good, other, noise
    w = greedy_weights(U, y)
    assert w.sum() == pytest.approx(1.0) and w[0] >= 0.5 and w[2] == 0.0
    mix = U @ w
    assert spearmanr(mix, y)[0] >= spearmanr(U[:, 0], y)[0]
    cols = ["good", "other", "noise"]
    st = fit_stage2(U, y, cols, StackingConfig(mean_members=2), np.arange(len(y)), ["mean", "rank-mean"])
    p = st.predict(U, cols, ["mean", "rank-mean"], (1.0, 5.0))
    avg_rank = np.argsort(np.argsort(U[:, 0])) + np.argsort(np.argsort(U[:, 1]))
    order = np.argsort(avg_rank, kind="stable")
    assert np.all(np.diff(p["rank-mean"][order]) >= -1e-9)  # monotone in the members' mean rank
    # ranks only: a monotone transform of a member changes nothing
    V = U.copy()
    V[:, 1] = 1.0 + 4.0 * ((V[:, 1] - V[:, 1].min()) / np.ptp(V[:, 1])) ** 3  # stays inside 1-5
    st2 = fit_stage2(V, y, cols, StackingConfig(mean_members=2), np.arange(len(y)), ["rank-mean"])
    wide = (-np.inf, np.inf)  # no clipping: it would tie values at the bounds
    q = st2.predict(V, cols, ["rank-mean"], wide)["rank-mean"]
    assert spearmanr(q, st.predict(U, cols, ["rank-mean"], wide)["rank-mean"])[0] == pytest.approx(1.0)
    assert p["rank-mean"].min() >= p["mean"].min() - 1e-9 and p["rank-mean"].max() <= p["mean"].max() + 1e-9


def test_stacking_config_errors():
    from speechqe.config import validate

    with pytest.raises(ConfigError, match="shrink moves weights towards best-member"):
        validate(StackingConfig, {"candidates": ["convex"], "shrink": 0.5}, "stacking")
    with pytest.raises(ConfigError, match="at least one candidate"):
        validate(StackingConfig, {"candidates": []}, "stacking")
    with pytest.raises(ConfigError, match="shrink must be cv or a share"):
        validate(StackingConfig, {"shrink": 1.5}, "stacking")
    with pytest.raises(ConfigError, match="repeated"):
        validate(StackingConfig, {"candidates": ["mean", "mean"]}, "stacking")


def test_out_of_fold_fits_on_the_other_groups_only():
    """Each fit sees exactly the rows outside its test fold (no group on both sides), and its
    predictions land on its test rows: a fit given the mean of its training labels predicts
    it, so a held-out row's label cannot move its own prediction."""
    y, _ = _columns()
    groups = np.array([f"g{i % 12}" for i in range(len(y))])
    folds = make_folds(groups, 4)
    seen = []

    def fit_predict(tr, te):
        seen.append((tr, te))
        return np.full(len(te), float(np.mean(y[tr])))

    oof = out_of_fold(fit_predict, len(y), folds)
    assert len(seen) == 4
    for tr, te in seen:
        assert not set(groups[tr]) & set(groups[te])
        assert sorted(np.concatenate([tr, te])) == list(range(len(y)))
        np.testing.assert_array_equal(oof[te], np.mean(np.delete(y, te)))


def test_stacking_choices_never_see_their_held_out_rows():
    """Every candidate's out-of-fold predictions of a fold's rows come from choices (pruning,
    the best member, weights, stage-2 learners) made without those rows: replacing their
    labels by garbage changes none of them. (Pruning on all rows, the previous rule, failed
    this: the held-out labels chose which members entered.)"""
    y, Z = _columns()
    rng = np.random.default_rng(5)
    Z = np.column_stack([Z, y + rng.normal(0, 0.6, len(y)), y + rng.normal(0, 0.9, len(y))])
    cols = ["good", "other", "noise", "anti", "const", "mid", "weak"]
    folds = make_folds([f"g{i % 12}" for i in range(len(y))], 4)
    cfg = StackingConfig(candidates=("best-member", "convex", "mean", "rank-mean", "greedy"),
                         max_members=3, mean_members=2,
                         stage2=(LearnerSpec(kind="nnls"), LearnerSpec(kind="ridge", tune={})))
    ref = fit_stack(Z, y, cols, folds, cfg, score_range=(1.0, 5.0)).candidates_oof
    assert set(ref) == {"best-member", "convex", "mean", "rank-mean", "greedy", "nnls", "ridge"}
    for tr, te in folds:
        garbage = y.copy()
        garbage[te] = rng.permutation(6.0 - y[te])  # anti-correlated with every good member
        got = fit_stack(Z, garbage, cols, folds, cfg, score_range=(1.0, 5.0)).candidates_oof
        for name, p in ref.items():
            np.testing.assert_array_equal(got[name][te], p[te], err_msg=name)
        for name in ("convex", "nnls", "ridge"):  # fitted weights: the other folds saw the change
            assert not np.array_equal(got[name], ref[name]), name


def _voice_set(root, n_clips=8):
    """A small labelled set of vowel-like signals (not speech) under 4 degradations, grouped
    by clip, written as 16 kHz wavs."""
    from speechqe.predictors.synthetic import CONDITIONS, Clip, build_degraded_set

    sr = 16000
    clips = []
    for i in range(n_clips):
        r = np.random.default_rng(i)
        t = np.arange(int(0.6 * sr)) / sr
        phase = 2 * np.pi * np.cumsum(r.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * 2 * t))) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, 20)) * 0.5 * (1 - np.cos(2 * np.pi * 3 * t))
        clips.append(Clip(f"c{i}", (0.3 * x / np.max(np.abs(x))).astype(np.float32), None, f"s{i}"))
    conds = [c for c in CONDITIONS if c.name in ("clean", "white20", "white0", "lp1k")]
    return build_degraded_set(clips, root, conditions=conds)


def test_training_never_lets_a_held_out_label_reach_its_own_prediction(tmp_path):
    """End to end through ``train_bundle``: the labels of one fold's items, replaced by
    garbage, change neither the members' out-of-fold predictions of those items nor the nested
    ensemble's predictions of them (their outer fold), while the rest of the training changes."""
    import dataclasses

    from speechqe.config import validate
    from speechqe.predictors.config import MOSTrainConfig
    from speechqe.predictors.nested import nested_predictions
    from speechqe.predictors.train import train_bundle

    sset = _voice_set(tmp_path / "wav")
    cfg = validate(MOSTrainConfig, {
        "train": {"format": "folder", "path": "-"}, "folds": 4, "group_by": "clip", "device": "cpu",
        "cache": "off", "nested_folds": 4,
        "weak": {"features": [{"name": "signal", "source": "signal"}, {"name": "logmel", "encoder": {"kind": "logmel"}}],
                 "learners": [{"kind": "ridge"}, {"kind": "knn", "params": {"n_neighbors": 3}}]},
    }, "test")

    def train(s, out):
        got = []
        train_bundle(cfg, tmp_path / out, train_set=s, say=lambda m: None, on_stage_one=got.append)
        return got[0]

    ref = train(sset, "ref")
    assert len(ref.outer) == 4
    ens_ref = nested_predictions(ref, cfg.stacking).ensemble
    rng = np.random.default_rng(0)
    for k in (0, 2):  # two of the four folds: the check is the same for each, training is not free
        te = ref.folds[k][1]
        items = list(sset)
        for i in te:
            items[i] = dataclasses.replace(items[i], mos=float(rng.uniform(1, 5)))
        got = train(sset.replace_items(items), f"garbage{k}")
        np.testing.assert_array_equal(got.Z[te], ref.Z[te])
        of = next(o for o in got.outer if set(o.test) == set(te))
        ens = nested_predictions(got, cfg.stacking).ensemble
        np.testing.assert_array_equal(ens[of.test], ens_ref[of.test])
        assert not np.array_equal(got.Z, ref.Z)  # the other folds' fits saw the garbage


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
