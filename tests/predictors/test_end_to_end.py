"""Every learner and the ensemble, trained end to end on CPU with tiny encoder configurations;
the bundle round trip (identical predictions after save/load); the metric adapters; the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from speechqe.audio import LoadedAudio
from speechqe.encoders.ssl import TINY_ARCH
from speechqe.manifest import from_sheet_csv
from speechqe import plugins
from speechqe.metric import ScoringInput
from speechqe.predictors.bundle import MOSBundle
from speechqe.cli.mos import app
from speechqe.predictors.synthetic import CONDITIONS, Clip, build_degraded_set
from speechqe.predictors.train import load_config, predict_set, train_bundle

SR = 16000


def _voice(seed: int, seconds: float = 0.8) -> np.ndarray:
    """A vowel-like harmonic signal with a pitch glide and syllable envelope (not speech, but
    with speech's spectral tilt and modulation)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 25))
    env = 0.5 * (1 - np.cos(2 * np.pi * rng.uniform(2, 4) * t))
    return (0.3 * x * env / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    conds = [c for c in CONDITIONS if c.name in ("clean", "white20", "white0", "lp1k")]
    clips = [Clip(f"c{i}", _voice(i), f"sentence {i}", f"spk{i % 3}") for i in range(9)]
    sset = build_degraded_set(clips, root / "wav", conditions=conds)
    with open(root / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["wav_path", "system_id", "sample_id", "avg_score", "clip", "domain"])
        for it in sset:
            w.writerow([it.path, it.system, it.id, it.mos, it.get("clip"), "synthetic"])
    # a tiny random openai-whisper checkpoint in its real format
    from whisper.model import ModelDimensions, Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=16, n_audio_head=2,
                           n_audio_layer=2, n_vocab=64, n_text_ctx=8, n_text_state=16,
                           n_text_head=2, n_text_layer=1)
    torch.manual_seed(0)
    torch.save({"dims": dataclasses.asdict(dims), "model_state_dict": Whisper(dims).state_dict()},
               root / "whisper-tiny-random.pt")
    return root


def _config(root, *, full=True) -> dict:
    whisper = {"kind": "whisper", "source": str(root / "whisper-tiny-random.pt"), "pad_to_30s": False}
    learners = [{"kind": "ridge"}, {"kind": "svr"}, {"kind": "knn", "params": {"n_neighbors": 3}},
                {"kind": "rf", "params": {"n_estimators": 10}}, {"kind": "gp"},
                {"kind": "lightgbm", "params": {"n_estimators": 20, "min_child_samples": 3}}]
    cfg = {
        "train": {"format": "sheet", "path": "train.csv"},
        "folds": 3, "group_by": "clip", "device": "cpu", "cache": "cache",
        "weak": {"features": [{"name": "logmel", "encoder": {"kind": "logmel"}}],
                 "learners": learners if full else learners[:2]},
        "stacking": {"stage2": [{"kind": "nnls"}, {"kind": "gp"}]},
    }
    if full:
        cfg["strong"] = [{
            "name": "strong", "ssl": {"kind": "ssl", "arch": TINY_ARCH},
            "model": {"domain_dim": 4, "listener_dim": 4, "blstm_hidden": 8, "proj_hidden": 16,
                      "phoneme": True, "phoneme_dim": 8, "phoneme_layers": 1, "layer": "weighted"},
            "train": {"steps": 3, "batch_size": 4, "accumulate": 1, "lr": 1e-3, "warmup_steps": 1,
                      "max_seconds": 0.5, "checkpoint_every": 0},
        }]
        cfg["whisper"] = [
            {"name": "whisper-frozen", "encoder": whisper, "head": {"layers": [-1, -2], "proj_dim": 8,
             "blstm_hidden": 8, "attn_hidden": 8}, "train": {"epochs": 2, "batch_size": 8}},
            {"name": "whisper-finetune", "encoder": {**whisper, "pad_to_30s": True},
             "head": {"finetune_blocks": 1, "proj_dim": 8, "blstm_hidden": 8, "attn_hidden": 8},
             "train": {"epochs": 1, "batch_size": 8}},
        ]
        cfg["weak"]["features"] += [
            {"name": "tinyssl", "encoder": {"kind": "ssl", "arch": TINY_ARCH}, "layers": [1, 2]},
            {"name": "whisperfeat", "encoder": whisper, "layers": [-1], "pooling": ["mean"]},
        ]
    return cfg


@pytest.mark.slow
def test_every_learner_trains_and_the_bundle_round_trips(tiny_data, tmp_path):
    (tiny_data / "full.yaml").write_text(yaml.safe_dump(_config(tiny_data)))
    cfg = load_config(tiny_data / "full.yaml")
    trained = train_bundle(cfg, tmp_path / "bundle", base=tiny_data)
    meta = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert meta["format"] == "speechqe-mos-bundle" and meta["version"] == 2
    assert meta["training_data"]["n_items"] == 36 and len(meta["training_data"]["content_hash"]) == 64
    cols = meta["columns"]
    assert cols[:3] == ["strong", "whisper-frozen", "whisper-finetune"] and len(cols) == 3 + 3 * 6  # strong, 2 whisper, 3 feature sets x 6 learners
    assert set(meta["report"]["oof"]) == set(cols)
    assert not list((tmp_path).glob(".bundle.work"))  # checkpoints removed once written
    # nothing in the bundle needs unpickling
    suffixes = {p.suffix for p in (tmp_path / "bundle").rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".pt", ".skops", ".txt"}

    sset = from_sheet_csv(tiny_data / "train.csv")
    before, _ = predict_set(trained, sset)
    loaded = MOSBundle.load(tmp_path / "bundle")
    after, errors = predict_set(loaded, sset)
    assert all(e is None for e in errors)
    for c in before:
        np.testing.assert_array_equal(before[c], after[c], err_msg=c)
    assert loaded.bundle_id == trained.bundle_id

    # batch size one gives the same scores as the batched call
    some = sset.replace_items(list(sset)[:5])
    batched, _ = predict_set(loaded, some)
    for i in range(5):
        one, _ = predict_set(loaded, some.replace_items([some[i]]))
        for c in batched:
            assert abs(one[c][0] - batched[c][i]) < 1e-4, c

    # the bundle and its components are metrics
    inputs = [ScoringInput(it, LoadedAudio.from_file(it.path)) for it in some]
    for ref, col in [("mos_ensemble", "ensemble"), ("mos_strong", "strong"),
                     ("mos_whisper", "whisper-frozen"), ("mos_weak", None)]:
        m = plugins.create(f"{ref}:{tmp_path / 'bundle'}")
        m.ensure_ready()
        assert trained.bundle_id in m.model_id()
        res = m.score_batch(inputs)
        col = col or m.column
        np.testing.assert_allclose([r.values[ref] for r in res], batched[col], atol=1e-5)
    m = plugins.create(f"mos_whisper:{tmp_path / 'bundle'}", {"component": "whisper-finetune"})
    m.ensure_ready()
    assert m.column == "whisper-finetune"


def test_cli_train_and_predict(tiny_data, tmp_path):
    (tiny_data / "small.yaml").write_text(yaml.safe_dump(_config(tiny_data, full=False)))
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--config", str(tiny_data / "small.yaml"), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "logmel-svr" in out and "out of fold" in out
    assert "ENSEMBLE (nested)" in out and "nested estimate (3 outer grouped folds)" in out
    res = runner.invoke(app, ["predict", "--bundle", str(tmp_path / "b"), str(tiny_data / "train.csv"),
                              "--out", str(tmp_path / "p.csv")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(rows) == 36 and all(r["status"] == "ok" for r in rows)
    # predicting a SHEET CSV keeps its sample_ids, so its predictions evaluate against it
    assert [r["sample_id"] for r in rows] == [it.id for it in from_sheet_csv(tiny_data / "train.csv")]
    res = runner.invoke(app, ["evaluate", str(tiny_data / "train.csv"), "-p", str(tmp_path / "p.csv"),
                              "--bootstrap", "0"])
    assert res.exit_code == 0 and "without a prediction" not in res.output, res.output
    res = runner.invoke(app, ["evaluate", str(tiny_data / "train.csv"), "--bundle", str(tmp_path / "b"),
                              "--component", "all", "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    assert "ensemble" in res.output
    # unknown keys in the config are errors
    bad = _config(tiny_data, full=False)
    bad["weak"]["learnerz"] = []
    (tiny_data / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = runner.invoke(app, ["train", "--config", str(tiny_data / "bad.yaml"), "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "weak: unknown key 'learnerz'" in " ".join(res.output.split())


def test_bundle_files_are_checked_on_load(tiny_data, tmp_path):
    """A bundle whose files changed, or of another format version, is refused with a message."""
    import shutil

    from speechqe.errors import ConfigError

    (tiny_data / "tiny.yaml").write_text(yaml.safe_dump(_config(tiny_data, full=False)))
    train_bundle(load_config(tiny_data / "tiny.yaml"), tmp_path / "b", base=tiny_data)
    MOSBundle.load(tmp_path / "b")
    for case in ("changed", "extra", "old", "new"):
        b = tmp_path / case
        shutil.copytree(tmp_path / "b", b)
        meta = json.loads((b / "bundle.json").read_text())
        if case == "changed":
            f = next((b / "weak" / "logmel").glob("*.skops"))
            data = f.read_bytes()
            f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
            with pytest.raises(ConfigError, match=r"do not match its checksums: weak/logmel/.*\.skops has changed"):
                MOSBundle.load(b)
        elif case == "extra":
            (b / "stacking" / "stage2_evil.skops").write_bytes(b"x")
            with pytest.raises(ConfigError, match="stage2_evil.skops is not part of the bundle"):
                MOSBundle.load(b)
        else:
            meta["version"] = 1 if case == "old" else 3
            (b / "bundle.json").write_text(json.dumps(meta))
            with pytest.raises(ConfigError, match="Retrain it" if case == "old" else "Upgrade speechqe"):
                MOSBundle.load(b)
