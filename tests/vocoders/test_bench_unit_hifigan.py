"""bench/train_unit_hifigan.py end to end on a tiny synthetic corpus (log-mel units, 2 steps,
quantised F0), then again from its units file: the GPU run's path."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import soundfile as sf
from conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("train_unit_hifigan",
                                                  REPO / "bench" / "train_unit_hifigan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _corpus(root):
    (root / "wavs").mkdir(parents=True)
    g = np.random.default_rng(0)
    lines = []
    for i in range(5):
        sr = 22050
        t = np.arange(int(1.2 * sr)) / sr
        f = 120 + 40 * np.sin(2 * np.pi * (0.5 + i) * t)
        x = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / sr) + 0.01 * g.standard_normal(t.size)
        sf.write(root / "wavs" / f"c{i}.wav", x.astype(np.float32), sr)
        lines.append(f"c{i}\tclip number {i}")
    (root / "transcripts.tsv").write_text("\n".join(lines) + "\n")


def test_bench_script_runs_and_reuses_units(tmp_path, capsys):
    _corpus(tmp_path / "corpus")
    bench = _bench()
    common = ["--corpus", str(tmp_path / "corpus"), "--holdout", "1", "--steps", "2",
              "--log-every", "1", "--checkpoint-every", "2", "--segment-frames", "40",
              "--batch-size", "2", "--no-score", "--threads", "1", "--f0-bins", "4", "--dur-predictor"]
    s1 = bench.main(common + ["--encoder", "logmel", "--k", "8", "--kmeans-epochs", "1",
                              "--out", str(tmp_path / "a")])
    assert s1["end_step"] == 2 and s1["k"] == 8 and s1["frame_rate"] == 100.0
    assert s1["batch"] == 2 and s1["segment_samples"] == 40 * 160 and s1["steps_per_s"] > 0
    assert s1["bitrate_train"]["nominal_bps"] == 300.0 and np.isfinite(s1["val_mel_l1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["end_step"] == 2  # the one-line JSON summary
    held = list((tmp_path / "a" / "resynth").glob("*/c4.wav"))
    assert len(held) == 1 and sf.info(held[0]).samplerate == 16000
    s2 = bench.main(common + ["--units", str(tmp_path / "a" / "units.jsonl"), "--codebook",
                              str(tmp_path / "a" / "codebook-k8.npz"),
                              "--out", str(tmp_path / "b")])
    assert s2["mel_l1"] == s1["mel_l1"]  # same units, same seed: the same run
