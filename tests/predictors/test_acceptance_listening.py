"""Acceptance (issue 10): on a listening-test-like set, the ensemble's nested estimate is not
below its best member's beyond noise, and no stage is worse than predicting the mean.

The set is built in code from ``../shared/corpora`` (:func:`speechqe.predictors.synthetic.
listening_test`): 16 real sentences (8 LJSpeech, 8 LibriSpeech speakers) x 8 conditions in three
clusters of near-equal quality, 0-100 ratings of 8 simulated listeners per clip from a noisy,
non-linear function of the conditions' parameters, with per-sentence offsets, listener bias and
scale use. It is written as a SHEET CSV with one row per rating and trained through the reader,
grouped by its ``sentence`` column, exactly as a user would.

Cheap features only (CI): the signal descriptors and pooled log-mel, with ridge, SVR, kNN and
GP (inner grouped searches, standardisation and PCA inside each). With 4 folds the nested
estimate's outer folds are the 4 folds and its inner folds the other 3.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import corpus
from speechqe.config import validate
from speechqe.predictors.config import MOSTrainConfig
from speechqe.predictors.synthetic import corpus_clips, listening_test, listening_test_config
from speechqe.predictors.train import train_bundle


@pytest.mark.slow
@pytest.mark.corpora
def test_ensemble_never_loses_to_its_best_member_on_a_listening_test(tmp_path):
    t0 = time.time()
    clips = corpus_clips(corpus("ljspeech-32").parent, ljspeech=8, librispeech_per_speaker=1,
                         max_seconds=3.0)[:16]
    assert len(clips) >= 12
    csv_path = listening_test(clips, tmp_path / "set", seed=0)
    cfg = validate(MOSTrainConfig, listening_test_config(csv_path, seed=0), "acceptance")
    bundle = train_bundle(cfg, tmp_path / "bundle", say=print)
    report = bundle.meta["report"]
    nested = report["nested"]
    var_y = report["label_variance"]
    assert nested["status"] == "done" and nested["outer_folds"] == 4 and nested["inner_folds"] == 3
    assert bundle.meta["training_data"]["n_items"] == len(clips) * 8
    assert bundle.meta["training_data"]["n_groups"] == len(clips)  # grouped by sentence, not by item

    ens = nested["ensemble"]["utterance"]
    best = nested["members"][nested["best_member"]]["utterance"]
    print(f"\nnested (4 outer folds by sentence, {time.time() - t0:.0f} s): ensemble clip SRCC "
          f"{ens['SRCC']:.3f}, condition SRCC {nested['ensemble']['system']['SRCC']:.3f}; best member "
          f"{nested['best_member']} {best['SRCC']:.3f}; label variance {var_y:.0f}")
    for name, ev in sorted(nested["members"].items(), key=lambda kv: -kv[1]["utterance"]["SRCC"]):
        print(f"  {name:18s} {ev['utterance']['SRCC']:.3f}  MSE {ev['utterance']['MSE']:.0f}  "
              f"{report['members'][name]['status']}")
    assert ens["SRCC"] >= best["SRCC"] - 0.01
    # no reported stage is worse than predicting the labels' mean
    assert ens["MSE"] <= var_y
    for name, ev in {**report["stage2_oof"], **nested["stage2"]}.items():
        if report["candidates"].get(name, {}).get("status") != "degenerate":
            assert ev["utterance"]["MSE"] <= var_y, name
    for name, c in report["candidates"].items():
        assert c["status"] == "degenerate" or c["mse"] <= var_y, name
    # members with an undefined or non-positive correlation never enter
    for name, m in report["members"].items():
        ev = report["oof"][name]["utterance"]
        if not ev["LCC"] or not np.isfinite(ev["LCC"]) or ev["LCC"] <= 0:
            assert m["status"] != "kept", name
