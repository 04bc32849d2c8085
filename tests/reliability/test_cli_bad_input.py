"""Every command answers bad input with an exit status and one ``error:`` line, never a
traceback unless ``--debug`` (issue 12).

Every command line below runs as its own process (forked by tests/reliability/driver.py from
one warm interpreter, so that a hundred of them cost seconds, not minutes): ``score``,
``evaluate``, ``mos train|predict|evaluate``, ``units train|encode``, ``resynth``,
``compare``, ``report``, ``dashboard``, ``runs``, ``summary``, ``export``, ``manifest``,
``models ...`` and ``serve``, each with the bad inputs that apply to it: a missing file, a
folder where a file is expected, a corrupt (random bytes) or empty store, a YAML file with a
syntax error, a value of the wrong type, a binary file as a config, a non-UTF-8 config.

Two checks per command line:

* ``test_answered``: a non-zero exit, exactly one line starting with ``error:``, no
  ``Traceback`` (the guarantee of :func:`speechqe.cli.common.run`, whatever the command does);
* ``test_message``: the expected exit status (2 for bad input; 1 for the environment) and the
  words that tell the user what is wrong. Where the command's own code still reports bad
  input as an unexpected error (a bug to fix), the case is an ``xfail(strict=True)`` naming
  the area that owns the fix.

Three more run the real console script (``speechqe``, a fresh interpreter each): the
entry point is wired to the same handling, and ``--debug``/``SPEECHQE_DEBUG=1`` show the
traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

from .helpers import driver_env, error_lines, flat, hostile_files, run_job

# A case whose answer depends on a known hole names its owner in the last column and is an
# xfail(strict=True) until the hole is fixed (none is open today).

# Cases whose generic answer (non-zero exit, one error line) fails because of a hole that
# another area owns: xfail(strict) in test_answered too.
ANSWER_HOLES: dict[str, str] = {}

# (id, argv, expected exit status, words expected in the error message, owner of a hole)
# {name} is replaced by the path of hostile_files()[name]; {tmp} by the test's folder.
CASES: list[tuple[str, list[str], int, str, str | None]] = [
    # score
    ("score-missing-set", ["score", "{missing}", "--metrics", "toy_level"], 2, "no such file or folder", None),
    ("score-markup-path", ["score", "{markup_name}", "--metrics", "toy_level"], 2, "[bold]x[/]-missing.wav", None),
    ("score-folder-as-text", ["score", "{set}", "--text", "{folder}", "--metrics", "toy_rate"], 2, "a-folder", None),
    ("score-missing-text", ["score", "{set}", "--text", "{missing}", "--metrics", "toy_rate"], 2, "does-not-exist", None),
    ("score-latin1-text", ["score", "{set}", "--text", "{latin1_text}", "--metrics", "toy_rate"], 2, "latin1.tsv", None),
    ("score-binary-text", ["score", "{set}", "--text", "{binary_text}", "--metrics", "toy_rate"], 2, "binary.tsv", None),
    ("score-corrupt-store", ["score", "{set}", "--metrics", "toy_level", "--db", "{corrupt_store}"], 2, "corrupt.duckdb", None),
    ("score-empty-store", ["score", "{set}", "--metrics", "toy_level", "--db", "{empty_store}"], 2, "empty.duckdb", None),
    ("score-folder-as-store", ["score", "{set}", "--metrics", "toy_level", "--db", "{folder}"], 2, "a-folder", None),
    ("score-suite-syntax", ["score", "{set}", "--suite", "{syntax_yaml}"], 2, "syntax.yaml", None),
    ("score-suite-binary", ["score", "{set}", "--suite", "{binary_yaml}"], 2, "binary.yaml", None),
    ("score-suite-latin1", ["score", "{set}", "--suite", "{latin1_yaml}"], 2, "latin1.yaml", None),
    ("score-suite-wrong-type", ["score", "{set}", "--suite", "{wrong_suite}"], 2, "wrong-suite.yaml", None),
    ("score-suite-folder", ["score", "{set}", "--suite", "{folder_yaml}"], 2, "unknown suite", None),
    ("score-chunk-size-not-int", ["score", "{set}", "--metrics", "toy_level", "--chunk-size", "many"], 2, "--chunk-size", None),
    ("score-param-wrong-type", ["score", "{set}", "--metrics", "toy_level", "--param", "toy_level.delay_s=[1, 2]"], 2, "delay_s", None),
    ("score-binary-jsonl", ["score", "{binary_jsonl}", "--metrics", "toy_level"], 2, "binary.jsonl", None),
    ("score-bad-jsonl", ["score", "{bad_jsonl}", "--metrics", "toy_level"], 2, "bad.jsonl", None),
    ("score-binary-csv", ["score", "{binary_csv}", "--metrics", "toy_level"], 2, "binary.csv", None),
    ("score-out-is-folder", ["score", "{set}", "--metrics", "toy_level", "--db", "{tmp}/out.duckdb", "--out", "{folder_csv}"], 2, "folder.csv", None),
    ("score-unknown-option", ["score", "{set}", "--metricz", "toy_level"], 2, "No such option", None),
    # evaluate (fails before Prefect starts)
    ("evaluate-missing-set", ["evaluate", "{missing}", "--metrics", "toy_level"], 2, "no such file or folder", None),
    ("evaluate-missing-text", ["evaluate", "{set}", "--text", "{missing}", "--metrics", "toy_level"], 2, "does-not-exist", None),
    ("evaluate-suite-syntax", ["evaluate", "{set}", "--suite", "{syntax_yaml}"], 2, "syntax.yaml", None),
    ("evaluate-suite-latin1", ["evaluate", "{set}", "--suite", "{latin1_yaml}"], 2, "latin1.yaml", None),
    ("evaluate-corrupt-store", ["evaluate", "{set}", "--metrics", "toy_level", "--db", "{corrupt_store}"], 2, "corrupt.duckdb", None),
    ("evaluate-chunk-size-not-int", ["evaluate", "{set}", "--chunk-size", "x"], 2, "--chunk-size", None),
    ("evaluate-bad-threshold", ["evaluate", "{set}", "--metrics", "toy_level", "--threshold", "oops"], 2, "oops", None),
    # mos train
    ("mos-train-missing-config", ["mos", "train", "-c", "{missing}", "-o", "{tmp}/b1"], 2, "not found", None),
    ("mos-train-folder-config", ["mos", "train", "-c", "{folder_yaml}", "-o", "{tmp}/b2"], 2, "folder.yaml", None),
    ("mos-train-syntax-config", ["mos", "train", "-c", "{syntax_yaml}", "-o", "{tmp}/b3"], 2, "syntax.yaml", None),
    ("mos-train-binary-config", ["mos", "train", "-c", "{binary_yaml}", "-o", "{tmp}/b4"], 2, "binary.yaml", None),
    ("mos-train-latin1-config", ["mos", "train", "-c", "{latin1_yaml}", "-o", "{tmp}/b5"], 2, "latin1.yaml", None),
    ("mos-train-wrong-type", ["mos", "train", "-c", "{wrong_mos}", "-o", "{tmp}/b6"], 2, "folds", None),
    ("mos-train-unknown-key", ["mos", "train", "-c", "{unknown_key_mos}", "-o", "{tmp}/b7"], 2, "foldz", None),
    ("mos-train-list-config", ["mos", "train", "-c", "{list_yaml}", "-o", "{tmp}/b8"], 2, "mapping", None),
    # mos predict
    ("mos-predict-missing-bundle", ["mos", "predict", "-b", "{missing}", "{set}", "-o", "{tmp}/p.csv"], 2, "does-not-exist", None),
    ("mos-predict-not-a-bundle", ["mos", "predict", "-b", "{bundle_empty}", "{set}", "-o", "{tmp}/p.csv"], 2, "not a MOS bundle", None),
    ("mos-predict-truncated-bundle", ["mos", "predict", "-b", "{bundle_badjson}", "{set}", "-o", "{tmp}/p.csv"], 2, "bundle.json", None),
    ("mos-predict-binary-bundle", ["mos", "predict", "-b", "{bundle_binary}", "{set}", "-o", "{tmp}/p.csv"], 2, "bundle.json", None),
    ("mos-predict-future-bundle", ["mos", "predict", "-b", "{bundle_future}", "{set}", "-o", "{tmp}/p.csv"], 2, "version 99", None),
    ("mos-predict-missing-set", ["mos", "predict", "-b", "{bundle_empty}", "{missing}"], 2, "", None),
    # mos evaluate
    ("mos-evaluate-missing-data", ["mos", "evaluate", "{missing}", "--predictions", "{text}"], 2, "does-not-exist", None),
    ("mos-evaluate-binary-csv", ["mos", "evaluate", "{binary_csv}", "--predictions", "{text}"], 2, "binary.csv", None),
    ("mos-evaluate-bad-csv", ["mos", "evaluate", "{bad_csv}", "--predictions", "{text}"], 2, "bad.csv", None),
    ("mos-evaluate-bad-format", ["mos", "evaluate", "{bad_csv}", "--format", "xlsx"], 2, "xlsx", None),
    ("mos-evaluate-bootstrap-not-int", ["mos", "evaluate", "{bad_csv}", "--bootstrap", "lots"], 2, "--bootstrap", None),
    # units
    ("units-train-missing-set", ["units", "train", "{missing}", "-o", "{tmp}/cb.npz", "--encoder", "logmel"], 2, "no such file or folder", None),
    ("units-train-bad-encoder", ["units", "train", "{set}", "-o", "{tmp}/cb.npz", "--encoder", "nonsense"], 2, "nonsense", None),
    ("units-train-k-not-int", ["units", "train", "{set}", "-o", "{tmp}/cb.npz", "--k", "ten"], 2, "--k", None),
    ("units-encode-missing-codebook", ["units", "encode", "{set}", "-c", "{missing}", "-o", "{tmp}/u.jsonl"], 2, "codebook not found", None),
    ("units-encode-folder-codebook", ["units", "encode", "{set}", "-c", "{folder}", "-o", "{tmp}/u.jsonl"], 2, "a-folder", None),
    ("units-encode-binary-codebook", ["units", "encode", "{set}", "-c", "{binary_npz}", "-o", "{tmp}/u.jsonl"], 2, "not a speechqe codebook", None),
    # resynth
    ("resynth-missing-set", ["resynth", "{missing}", "-c", "{binary_npz}", "-v", "{binary_pt}", "-o", "{tmp}/rs"], 2, "", None),
    ("resynth-binary-files", ["resynth", "{set}", "-c", "{binary_npz}", "-v", "{binary_pt}", "-o", "{tmp}/rs"], 2, "not a speechqe codebook", None),
    ("resynth-unpaired", ["resynth", "{set}", "-c", "{binary_npz}", "-c", "{binary_npz}", "-v", "{binary_pt}", "-o", "{tmp}/rs"], 2, "one --codebook per --vocoder", None),
    # compare, report, dashboard
    ("compare-missing-store", ["compare", "a", "b", "--db", "{missing}"], 2, "no results store", None),
    ("compare-corrupt-store", ["compare", "a", "b", "--db", "{corrupt_store}"], 2, "corrupt.duckdb", None),
    ("compare-unknown-runs", ["compare", "nope1", "nope2", "--db", "{tmp}/ok.duckdb"], 2, "nope1", None),
    ("compare-bad-threshold", ["compare", "a", "b", "--db", "{tmp}/ok.duckdb", "--threshold", "x=y"], 2, "x=y", None),
    ("report-missing-store", ["report", "--db", "{missing}"], 2, "no results store", None),
    ("report-corrupt-store", ["report", "--db", "{corrupt_store}"], 2, "corrupt.duckdb", None),
    ("report-folder-as-store", ["report", "--db", "{folder}"], 2, "a-folder", None),
    ("report-unknown-run", ["report", "nope", "--db", "{tmp}/ok.duckdb"], 2, "nope", None),
    ("report-out-is-folder", ["report", "--db", "{tmp}/ok.duckdb", "--out", "{folder}"], 2, "a-folder", None),
    ("dashboard-missing-store", ["dashboard", "--db", "{missing}"], 2, "no results store", None),
    ("dashboard-corrupt-store", ["dashboard", "--db", "{corrupt_store}"], 2, "corrupt.duckdb", None),
    ("dashboard-folder-as-store", ["dashboard", "--db", "{folder}"], 2, "a-folder", None),
    ("dashboard-port-not-int", ["dashboard", "--db", "{tmp}/ok.duckdb", "--port", "http"], 2, "--port", None),
    # runs, summary, export
    ("runs-missing-store", ["runs", "--db", "{missing}"], 2, "no results store", None),
    ("runs-corrupt-store", ["runs", "--db", "{corrupt_store}"], 2, "corrupt.duckdb", None),
    ("runs-empty-store", ["runs", "--db", "{empty_store}"], 2, "empty.duckdb", None),
    ("runs-folder-as-store", ["runs", "--db", "{folder}"], 2, "a-folder", None),
    ("runs-binary-store", ["runs", "--db", "{binary_yaml}"], 2, "binary.yaml", None),
    ("summary-corrupt-store", ["summary", "--db", "{corrupt_store}"], 2, "corrupt.duckdb", None),
    ("summary-unknown-run", ["summary", "nope", "--db", "{tmp}/ok.duckdb"], 2, "nope", None),
    ("export-bad-suffix", ["export", "{tmp}/x.xlsx", "--db", "{tmp}/ok.duckdb"], 2, "xlsx", None),
    ("export-corrupt-store", ["export", "{tmp}/x.csv", "--db", "{corrupt_store}"], 2, "corrupt.duckdb", None),
    # manifest
    ("manifest-missing-set", ["manifest", "{missing}", "-o", "{tmp}/m.jsonl"], 2, "no such file or folder", None),
    ("manifest-output-is-folder", ["manifest", "{set}", "-o", "{folder}"], 2, "a-folder", None),
    ("manifest-latin1-text", ["manifest", "{set}", "--text", "{latin1_text}", "-o", "{tmp}/m.jsonl"], 2, "latin1.tsv", None),
    ("manifest-binary-jsonl", ["manifest", "{binary_jsonl}", "-o", "{tmp}/m.jsonl"], 2, "binary.jsonl", None),
    # models
    ("models-bad-asset-spec", ["models", "--asset", "nonsense"], 2, "NAME=PATH", None),
    ("models-unknown-asset", ["models", "--asset", "nope={missing}"], 2, "nope", None),
    ("models-verify-unknown", ["models", "verify", "nope"], 2, "nope", None),
    ("models-fetch-unknown", ["models", "fetch", "nope"], 2, "nope", None),
    ("models-convert-missing", ["models", "convert-ct2-whisper", "{missing}", "{tmp}/w.pt"], 2, "does-not-exist", None),
    ("models-convert-binary", ["models", "convert-ct2-whisper", "{folder}", "{tmp}/w.pt"], 2, "a-folder", None),
    # serve (see SERVE_ENV)
    ("serve-missing-watch-file", ["serve", "{missing}"], 2, "does-not-exist", None),
    ("serve-syntax-watch-file", ["serve", "{syntax_yaml}"], 2, "syntax.yaml", None),
    ("serve-latin1-watch-file", ["serve", "{latin1_yaml}"], 2, "latin1.yaml", None),
    ("serve-binary-watch-file", ["serve", "{binary_yaml}"], 2, "binary.yaml", None),
    # --debug: the same answer, with the traceback before it
    ("debug-runs-corrupt-store", ["--debug", "runs", "--db", "{corrupt_store}"], 2, "corrupt.duckdb", None),
    ("debug-score-missing-set", ["--debug", "score", "{missing}", "--metrics", "toy_level"], 2, "no such file or folder", None),
]
# Prefect reads its settings once, when imported (before the driver forks): every case sees a
# server URL on which nothing answers (port 9), so `serve` reads its watch file.
SERVE_ENV = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
# what the commands import, imported once before forking
WARM = ("torch", "duckdb", "prefect", "speechqe.engine.evaluation", "speechqe.engine.report",
        "speechqe.engine.history", "speechqe.predictors.train", "speechqe.predictors.bundle",
        "speechqe.vocoders.units", "speechqe.vocoders.resynth", "speechqe.vocoders.tokenize",
        "speechqe.flows.deployments", "speechqe.flows.evaluate", "speechqe.cli.flows")


def _argv(argv: list[str], files: dict[str, Path], tmp: Path) -> list[str]:
    names = {k: str(v) for k, v in files.items()}
    return [a.format(tmp=tmp, **names) for a in argv]


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    """Every case's result, from one driver run."""
    tmp = tmp_path_factory.mktemp("cli-bad-input")
    files = hostile_files(tmp / "in")
    steps = [{"id": "make-ok-store", "argv": ["score", str(files["set"]), "--metrics", "toy_level",
                                               "--db", str(tmp / "ok.duckdb"), "--progress", "none"]}]
    for cid, argv, *_ in CASES:
        cwd = tmp / "cwd" / cid  # its own default store (speechqe-out/): cases run two at a time
        cwd.mkdir(parents=True)
        steps.append({"id": cid, "argv": _argv(argv, files, tmp), "cwd": str(cwd), "timeout": 120,
                      "parallel": True})
    res = run_job(steps, tmp / "job", warm=WARM, env=driver_env(tmp, **SERVE_ENV), parallel=2)
    assert res["make-ok-store"]["code"] == 0, res["make-ok-store"]["stderr"]
    return res


def _case_params(check_owner: bool):
    out = []
    for cid, argv, code, words, owner in CASES:
        marks = []
        owner = owner if check_owner else ANSWER_HOLES.get(cid)
        if owner is not None:
            marks.append(pytest.mark.xfail(strict=True, reason=f"hole owned by {owner}"))
        out.append(pytest.param(cid, code, words, id=cid, marks=marks))
    return out


@pytest.mark.parametrize("cid, code, words", _case_params(check_owner=False))
def test_answered(answers, cid, code, words):
    """Non-zero exit, one ``error:`` line, no traceback (unless --debug)."""
    r = answers[cid]
    text = r["stdout"] + r["stderr"]
    assert r["code"] not in (0, None), f"exit {r['code']} (signal {r['signal']}):\n{text}"
    assert len(error_lines(r)) == 1, text
    if cid.startswith("debug-"):
        assert "Traceback (most recent call last)" in r["stderr"], text
        assert r["stderr"].index("Traceback") < r["stderr"].index("error:")
    else:
        assert "Traceback" not in text, text


@pytest.mark.parametrize("cid, code, words", _case_params(check_owner=True))
def test_message(answers, cid, code, words):
    """The expected exit status, words naming what is wrong, and no bug report for bad input."""
    r = answers[cid]
    text = r["stdout"] + r["stderr"]
    assert r["code"] == code, text
    (line,) = error_lines(r)
    msg = flat(r["stderr"][r["stderr"].index("error:"):])
    assert "unexpected" not in line, text
    assert words in msg, text


def _console_script(args, env_extra=None, tmp=None):
    env = driver_env(tmp, **(env_extra or {}))
    script = Path(sys.executable).with_name("speechqe")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "speechqe.cli"]
    return subprocess.run(cmd + args, capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)


def test_console_script_answers_bad_input_without_traceback(tmp_path):
    """The installed ``speechqe`` script: a corrupt store is one error line, exit 2."""
    bad = tmp_path / "corrupt.duckdb"
    bad.write_bytes(os.urandom(8192))
    p = _console_script(["runs", "--db", str(bad)], tmp=tmp_path)
    assert p.returncode == 2, p.stderr
    assert [ln for ln in p.stderr.splitlines() if ln.startswith("error:")] == [
        ln for ln in p.stderr.splitlines() if ln.strip()], p.stderr
    assert "Traceback" not in p.stdout + p.stderr


@pytest.mark.parametrize("how", ["--debug", "SPEECHQE_DEBUG=1"])
def test_console_script_debug_shows_the_traceback(tmp_path, how):
    bad = tmp_path / "corrupt.duckdb"
    bad.write_bytes(os.urandom(8192))
    args = ["runs", "--db", str(bad)]
    p = _console_script(["--debug", *args] if how == "--debug" else args,
                        {"SPEECHQE_DEBUG": "1"} if how != "--debug" else None, tmp=tmp_path)
    assert p.returncode == 2, p.stderr
    assert "Traceback (most recent call last)" in p.stderr and "StoreError" in p.stderr
    assert p.stderr.rstrip().splitlines()[-1].startswith("error:")
