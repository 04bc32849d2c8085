"""Help texts and layouts of the command line: every option explains itself, nothing is cut
on an 80-column terminal, and help never contradicts the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
from conftest import REPO
from typer.testing import CliRunner

from speechqe.cli.main import app

runner = CliRunner()


def _commands():
    """``(path, click command)`` for every command of ``speechqe``."""
    out = []

    def walk(cmd, path):
        out.append((path, cmd))
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return out


COMMANDS = _commands()


def test_every_option_and_argument_has_a_help_text():
    missing = [f"speechqe {' '.join(path)} {p.name}" for path, cmd in COMMANDS
               for p in cmd.params if not getattr(p, "help", None)]
    assert not missing, missing
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("columns", ["80", "100", "160"])
def test_help_shows_every_option_name_in_full_at_any_width(columns):
    """Typer's boxed layout cut '--fail-on-regression' to '--fail-on-regressi…' at 80 columns;
    narrow terminals now get click's plain layout, which wraps."""
    for path, cmd in COMMANDS:
        res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": columns})
        assert res.exit_code == 0, (path, res.output)
        assert "…" not in res.output, (path, columns, res.output)
        for p in cmd.params:
            for opt in p.opts + p.secondary_opts:
                if opt.startswith("-"):
                    assert opt in res.output, (path, columns, opt)
        assert max(len(line) for line in res.output.splitlines()) <= int(columns), (path, columns)


def test_narrow_help_in_a_real_process():
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-m", "speechqe.cli.main", "evaluate", "--help"],
                         capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    assert "--fail-on-regression" in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80


def _device_here() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu (cuda-capable)"


def test_metrics_listing_fits_80_columns_and_shows_the_device_used_here():
    from speechqe import plugins

    res = runner.invoke(app, ["metrics"], env={"COLUMNS": "80"})
    assert res.exit_code == 0 and "…" not in res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    for name, cls in plugins.available().items():
        head = next(line for line in lines if line.startswith(f"{name} v"))
        device = _device_here() if cls.spec.device == "cuda" else "cpu"
        assert f"device {device}," in head, head
        for o in cls.spec.outputs:
            assert any(line.startswith(f"  {o.name} ") for line in lines), o.name
    assert "  wer ↓ [0, inf] ratio fraction; regression threshold 0.005" in lines
    wide = runner.invoke(app, ["metrics"], env={"COLUMNS": "250"})
    assert "┃ metric" in wide.output and "…" not in wide.output
    assert f"│ {_device_here()}" in wide.output
    js = runner.invoke(app, ["metrics", "--json"])
    assert f'"device_here": "{_device_here()}"' in js.output and '"device": "cuda"' in js.output


def test_metrics_listing_in_a_real_process_at_80_columns():
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-m", "speechqe.cli.main", "metrics"],
                         capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    assert "…" not in out and re.search(r"^dnsmos v\d+: 16000 Hz", out, re.M)
    assert max(len(line) for line in out.splitlines()) <= 80


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_help_texts_agree_with_the_code():
    from speechqe.engine.resynthesis import DEFAULT_METRICS

    score = _flat(runner.invoke(app, ["score", "--help"], env={"COLUMNS": "200"}).output)
    assert "overrides --suite" not in score and "instead of a suite (not both)" in score
    resynth = _flat(runner.invoke(app, ["resynth", "--help"], env={"COLUMNS": "200"}).output)
    assert "UTMOS" not in resynth.upper().replace("UTMOS_STRONG", "")
    assert f"registered ones among {', '.join(DEFAULT_METRICS)})" in resynth
    assert "--predict-durations" in resynth and "duration predictor" in resynth
    manifest = _flat(runner.invoke(app, ["manifest", "--help"], env={"COLUMNS": "200"}).output)
    assert "Reference audio: a folder" in manifest and "System name for a flat folder" in manifest
