"""Issue 13's acceptance on real speech: units fitted on LJ001-0001..0024 (openai-whisper
tiny.en from the packaged weights, block 2, K = 500), the WORLD unit vocoder fitted on the same
clips, LJ001-0025..0032 resynthesised with F0 from the source: corpus WER <= 0.30 (the
originals: 0.05). The same run as the ``whisper-tiny.en`` L2 K500 row of the sweep in
docs/benchmarks.md, through ``speechqe units sweep``."""

from __future__ import annotations

import json

import pytest
from conftest import corpus
from typer.testing import CliRunner

pytestmark = [pytest.mark.corpora, pytest.mark.slow]


def test_world_vocoder_on_the_best_offline_units_is_intelligible(tmp_path):
    from speechqe.cli.vocoders import app

    lj = corpus("ljspeech-32")
    fit, held = tmp_path / "fit", tmp_path / "heldout"
    for i in range(1, 33):
        wav = lj / "wavs" / f"LJ001-{i:04d}.wav"
        dest = fit if i <= 24 else held
        dest.mkdir(exist_ok=True)
        (dest / wav.name).symlink_to(wav)
    r = CliRunner().invoke(app, [
        "units", "sweep", str(held), "--fit", str(fit), "--text", str(lj / "transcripts.tsv"),
        "-o", str(tmp_path / "out"), "--encoders", "whisper-tiny.en", "--layers", "2",
        "--k", "500", "--metrics", "wer,cer", "--no-originals"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"]
    assert row["layer"] == 2 and row["k"] == 500 and row.get("wer_errors") is None
    assert row["wer"] <= 0.30, row
