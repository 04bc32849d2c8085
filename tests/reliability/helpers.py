"""Shared helpers of the reliability tests: running the fork driver, the hostile input files
the command-line tests feed to every command, and small speech sets."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import REPO, write_tone

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
DRIVER = HERE / "driver.py"


def driver_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of the driver: toy metric plugins, a private asset cache and Prefect
    home, one thread per library, no debug unless asked."""
    env = dict(os.environ)
    env.pop("SPEECHQE_DEBUG", None)
    env.update(
        SPEECHQE_PLUGINS="plugins.toy_metrics",
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        SPEECHQE_CACHE=str(tmp / "speechqe-cache"),
        PREFECT_HOME=str(tmp / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        COLUMNS="200",
    )
    env.update(extra)
    return env


def run_job(steps: list[dict], tmp: Path, *, warm=("torch",), timeout: float = 600,
            env: dict[str, str] | None = None, parallel: int = 1,
            wrap: list[str] | None = None) -> dict[str, dict]:
    """Run ``steps`` through the fork driver (see driver.py); results by step id.

    ``wrap``: a command line the driver runs inside, with ``{driver}`` in its last word (a
    shell script) replaced by the driver's command (e.g. ``unshare`` and mounts)."""
    tmp.mkdir(parents=True, exist_ok=True)
    job = tmp / "job.json"
    results = tmp / "results.json"
    job.write_text(json.dumps({"warm": list(warm), "steps": steps, "parallel": parallel}))
    cmd = [sys.executable, str(DRIVER), str(job), str(results)]
    if wrap:
        cmd = wrap[:-1] + [wrap[-1].replace("{driver}", " ".join(shlex.quote(c) for c in cmd))]
    proc = subprocess.run(cmd, env=env or driver_env(tmp), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"the driver failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return {r["id"]: r for r in json.loads(results.read_text())}


def error_lines(result: dict) -> list[str]:
    """The lines of a command's output that start with ``error:``."""
    text = result["stdout"] + "\n" + result["stderr"]
    return [ln for ln in text.splitlines() if ln.startswith("error:")]


def flat(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------
# Hostile inputs
# ------------------------------------------------------------------------------------------
BINARY = bytes(range(256)) * 16  # NUL bytes, every byte value: not text in any encoding
LATIN1_SUITE = "name: caf\xe9\nmetrics: [toy_level]\n".encode("latin-1")


def tone_set(root: Path, n: int = 3, seconds: float = 0.2, systems=("s",)) -> Path:
    """``n`` short tones per system under ``root`` (and references under ``root``.ref)."""
    for k in range(n):
        for s in systems:
            write_tone(root / s / f"u{k}.wav", seconds=seconds, seed=k, freq=200 + 30 * k)
        write_tone(root.with_name(root.name + ".ref") / f"u{k}.wav", seconds=seconds, seed=k + 50)
    return root


def hostile_files(root: Path) -> dict[str, Path]:
    """Every kind of bad input file the command-line tests give to the commands."""
    root.mkdir(parents=True, exist_ok=True)
    p = {}
    p["set"] = tone_set(root / "set")
    p["ref"] = root / "set.ref"
    p["text"] = root / "text.tsv"
    p["text"].write_text("u0\tone\nu1\ttwo words\nu2\tthree more words\n")
    p["missing"] = root / "does-not-exist"
    p["folder"] = root / "a-folder"
    p["folder"].mkdir()
    p["folder_yaml"] = root / "folder.yaml"  # a directory with a config's name
    p["folder_yaml"].mkdir()
    p["folder_csv"] = root / "folder.csv"  # a directory where an output file is asked for
    p["folder_csv"].mkdir()
    p["corrupt_store"] = root / "corrupt.duckdb"
    p["corrupt_store"].write_bytes(np.random.default_rng(0).bytes(96 * 1024))
    p["empty_store"] = root / "empty.duckdb"
    p["empty_store"].write_bytes(b"")
    p["syntax_yaml"] = root / "syntax.yaml"
    p["syntax_yaml"].write_text("name: x\nmetrics: [toy_level\n  - {bad: \n")
    p["binary_yaml"] = root / "binary.yaml"
    p["binary_yaml"].write_bytes(BINARY)
    p["latin1_yaml"] = root / "latin1.yaml"
    p["latin1_yaml"].write_bytes(LATIN1_SUITE)
    p["wrong_suite"] = root / "wrong-suite.yaml"
    p["wrong_suite"].write_text("name: x\nmetrics: 5\n")
    p["list_yaml"] = root / "list.yaml"
    p["list_yaml"].write_text("- just\n- a list\n")
    p["wrong_mos"] = root / "wrong-mos.yaml"
    p["wrong_mos"].write_text("train: {format: sheet, path: x.csv}\nfolds: many\n")
    p["unknown_key_mos"] = root / "unknown-mos.yaml"
    p["unknown_key_mos"].write_text("train: {format: sheet, path: x.csv}\nfoldz: 3\n")
    p["latin1_text"] = root / "latin1.tsv"
    p["latin1_text"].write_bytes("u0\tcaf\xe9\nu1\ttwo\n".encode("latin-1"))
    p["binary_text"] = root / "binary.tsv"
    p["binary_text"].write_bytes(BINARY)
    p["binary_jsonl"] = root / "binary.jsonl"
    p["binary_jsonl"].write_bytes(BINARY)
    p["bad_jsonl"] = root / "bad.jsonl"
    p["bad_jsonl"].write_text('{"path": "a.wav"}\n{"path": \n')
    p["binary_csv"] = root / "binary.csv"
    p["binary_csv"].write_bytes(BINARY)
    p["bad_csv"] = root / "bad.csv"
    p["bad_csv"].write_text("wav_path,system_id,sample_id,avg_score\nx.wav,s,a,not-a-number\n")
    p["binary_npz"] = root / "binary.npz"
    p["binary_npz"].write_bytes(BINARY)
    p["binary_pt"] = root / "binary.pt"
    p["binary_pt"].write_bytes(BINARY)
    p["bundle_empty"] = root / "bundle-empty"
    p["bundle_empty"].mkdir()
    p["bundle_badjson"] = root / "bundle-badjson"
    p["bundle_badjson"].mkdir()
    (p["bundle_badjson"] / "bundle.json").write_text('{"format": "speechqe-mos-bundle", ')
    p["bundle_binary"] = root / "bundle-binary"
    p["bundle_binary"].mkdir()
    (p["bundle_binary"] / "bundle.json").write_bytes(BINARY)
    p["bundle_future"] = root / "bundle-future"
    p["bundle_future"].mkdir()
    (p["bundle_future"] / "bundle.json").write_text(
        json.dumps({"format": "speechqe-mos-bundle", "version": 99}))
    p["markup_name"] = root / "[bold]x[/]-missing.wav"  # rich markup in a path: printed as text
    p["out_dir"] = root / "out"
    p["out_dir"].mkdir()
    return p
