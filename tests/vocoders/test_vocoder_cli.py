"""``units train|encode`` and ``resynth`` commands (typer CliRunner, log-mel encoder)."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from conftest import write_tone
from typer.testing import CliRunner

from speechqe.cli.vocoders import app
from speechqe.vocoders.unit_hifigan.checkpoint import save_checkpoint
from speechqe.vocoders.unit_hifigan.config import GeneratorConfig
from speechqe.vocoders.unit_hifigan.model import UnitHiFiGAN
from speechqe.vocoders.units import Codebook, read_units


def test_cli_module_import_is_light():
    code = ("import sys, speechqe.cli.vocoders; "
            "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_units_train_encode_and_resynth(tmp_path, toy_metrics):
    root = tmp_path / "set"
    for i, f in enumerate((150, 300, 600)):
        write_tone(root / f"a{i}.wav", seconds=0.5, freq=f)
    runner = CliRunner()
    cache = tmp_path / "cache"
    r = runner.invoke(app, ["units", "train", str(root), "-o", str(tmp_path / "cb.npz"),
                            "--encoder", "logmel", "--k", "3", "--batch-size", "32",
                            "--epochs", "2", "--cache-dir", str(cache)])
    assert r.exit_code == 0, r.output
    cb = Codebook.load(tmp_path / "cb.npz")
    assert cb.k == 3 and cb.info["encoder_spec"] == "logmel"
    r = runner.invoke(app, ["units", "encode", str(root), "-c", str(tmp_path / "cb.npz"),
                            "-o", str(tmp_path / "u.jsonl"), "--dedup", "--cache-dir", str(cache)])
    assert r.exit_code == 0, r.output
    assert "nominal bps" in r.output
    header, recs = read_units(tmp_path / "u.jsonl")
    assert header["dedup"] and len(recs) == 3 and recs[0].frames == 51
    br = json.loads((tmp_path / "u.jsonl.bitrate.json").read_text())
    assert br["k"] == 3 and br["frame_rate"] == 100.0

    cfg = GeneratorConfig(num_embeddings=3, embedding_dim=8, upsample_rates=(5, 4, 4, 2),
                          upsample_kernel_sizes=(11, 8, 8, 4), upsample_initial_channel=16,
                          resblock="2", resblock_kernel_sizes=(3,), resblock_dilation_sizes=((1, 3),))
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "voc", 1, UnitHiFiGAN(cfg), cfg, {})
    r = runner.invoke(app, ["resynth", str(root), "-c", str(tmp_path / "cb.npz"),
                            "-v", str(tmp_path / "voc"), "-o", str(tmp_path / "rs"),
                            "--metrics", "toy_level"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "rs" / "comparison.json").read_text())
    assert len(rows) == 1 and rows[0]["nominal_bps"] > 0 and "toy_peak_db" in rows[0]
    # a pair whose sizes disagree is a clean error
    r = runner.invoke(app, ["resynth", str(root), "-c", str(tmp_path / "cb.npz"),
                            "-c", str(tmp_path / "cb.npz"), "-v", str(tmp_path / "voc"),
                            "-o", str(tmp_path / "rs2")])
    assert r.exit_code == 2 and "one --codebook per --vocoder" in r.output
