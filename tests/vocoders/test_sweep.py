"""``speechqe units sweep``: two tiny settings (log-mel, K = 3 and 4) fitted on one set,
resynthesised with the WORLD vocoder on another, scored in one run; a rerun reuses them."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from speechqe.encoders import EncoderSpec, parse_spec


def _set(root, f0s, seed):
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    t = np.arange(8000) / 16000
    for i, f0 in enumerate(f0s):
        x = sum(np.sin(2 * np.pi * h * f0 * t) / h for h in range(1, 8))
        x = np.concatenate([x, 0.3 * rng.standard_normal(3000)])
        sf.write(root / f"u{i}.wav", (0.2 * x / np.abs(x).max()).astype(np.float32), 16000)
    return root


def test_sweep_two_settings_and_resume(tmp_path, toy_metrics):
    from speechqe.cli.vocoders import app

    fit = _set(tmp_path / "fit", (120, 160, 200), 0)
    held = _set(tmp_path / "held", (140, 180), 1)
    args = ["units", "sweep", str(held), "--fit", str(fit), "-o", str(tmp_path / "sw"),
            "--encoders", "logmel", "--k", "3,4", "--metrics", "toy_level", "--epochs", "2"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    rows = summary["rows"]
    assert [(row["encoder"], row["k"]) for row in rows] == [
        ("logmel", 3), ("logmel", 4), ("original", None)]
    assert rows[0]["nominal_bps"] == np.log2(3) * 100.0 and rows[2]["nominal_bps"] is None
    assert all(np.isfinite(row["toy_peak_db"]) for row in rows)
    md = (tmp_path / "sw" / "sweep.md").read_text()
    assert md.startswith("| encoder | layer | k |") and md.count("\n") == 5
    folders = sorted(p.name for p in (tmp_path / "sw").iterdir() if p.is_dir())
    assert any(f.endswith("-k3") for f in folders) and "originals" in folders
    # a rerun with nothing changed reuses every setting
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and r.output.count(": reused") == 2, r.output
    # bad settings are one clean error
    r = CliRunner().invoke(app, args[:-4] + ["--k", "1,4"])
    assert r.exit_code == 2 and "at least 2" in r.output


def test_whisper_shorthand_is_the_packaged_openai_whisper():
    assert parse_spec("whisper-tiny.en") == EncoderSpec(kind="whisper", source="whisper-tiny.en")
    assert parse_spec("whisper-ct2") == EncoderSpec(kind="whisper-ct2")
    assert parse_spec("ssl:/x/h.pt") == EncoderSpec(kind="ssl", source="/x/h.pt")
