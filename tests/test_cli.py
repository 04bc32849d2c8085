"""The command line: scoring, summary, exports, bad arguments, kill-and-resume."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest
from conftest import REPO, write_tone
from typer.testing import CliRunner

from speechqe.cli.main import app

runner = CliRunner()


def _set(tmp_path, n=6):
    for k in range(n):
        write_tone(tmp_path / "gen" / f"sys{k % 2}" / f"u{k}.wav", seconds=0.3, seed=k)
        write_tone(tmp_path / "ref" / f"u{k}.wav", seconds=0.3, seed=k + 100)
    (tmp_path / "gen" / "sys0" / "bad.wav").write_text("not audio")
    (tmp_path / "t.tsv").write_text("".join(f"u{k}\tword {'w ' * k}\n" for k in range(n)))
    return tmp_path / "gen"


def test_score_prints_summary_and_writes_long_csv(tmp_path, toy_metrics):
    gen = _set(tmp_path)
    out = tmp_path / "o.csv"
    res = runner.invoke(app, ["score", str(gen), "--ref", str(tmp_path / "ref"), "--text",
                              str(tmp_path / "t.tsv"), "--metrics", "toy_level,toy_snr,toy_rate",
                              "--db", str(tmp_path / "s.duckdb"), "--out", str(out),
                              "--progress", "none"])
    assert res.exit_code == 0, res.output
    assert "toy_words_per_s (corpus)" in res.output and "sys0" in res.output and "sys1" in res.output
    assert "errors by reason: unreadable: 4" in res.output
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert {"item_id", "system", "metric", "value", "status", "error"} <= set(rows[0])
    bad = [r for r in rows if r["item_id"] == "sys0/bad"]
    assert len(bad) == 4 and all(r["status"] == "error" and r["value"] == "" for r in bad)
    again = runner.invoke(app, ["summary", "--db", str(tmp_path / "s.duckdb")])
    assert again.exit_code == 0 and "toy_snr" in again.output
    runs = runner.invoke(app, ["runs", "--db", str(tmp_path / "s.duckdb")])
    assert "finished" in runs.output
    exp = runner.invoke(app, ["export", str(tmp_path / "o.parquet"), "--db", str(tmp_path / "s.duckdb")])
    assert exp.exit_code == 0 and (tmp_path / "o.parquet").stat().st_size > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metrics", "nope"], "unknown metric 'nope'"),
        (["--metrics", "toy_snr"], "needs references"),
        (["--suite", "nope"], "unknown suite"),
        (["--metrics", "toy_level", "--out", "x.xlsx"], "--out must end in"),
        (["--metrics", "toy_level", "--device", "tpu"], "--device must be"),
        (["--metrics", "toy_level", "--param", "toy_level.bogus=1"], "unknown parameter"),
        (["--metrics", "toy_level", "--param", "broken"], "METRIC.NAME=VALUE"),
        (["--metrics", "toy_level", "--asset", "nope=/x"], "unknown asset"),
        (["--metrics", "toy_level", "--suite", "default"], "either --suite or --metrics"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_message(tmp_path, toy_metrics, args, message):
    gen = _set(tmp_path, n=2)
    res = runner.invoke(app, ["score", str(gen), "--db", str(tmp_path / "s.duckdb"), *args])
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())


def test_missing_path_is_an_error(tmp_path, toy_metrics):
    res = runner.invoke(app, ["score", str(tmp_path / "nowhere"), "--metrics", "toy_level"])
    assert res.exit_code == 2 and "no such file or folder" in res.output


def test_metrics_command_lists_contracts(toy_metrics):
    res = runner.invoke(app, ["metrics"])
    assert res.exit_code == 0 and "toy_snr" in res.output and "reference" in res.output
    js = runner.invoke(app, ["metrics", "--json"])
    assert '"needs_reference": true' in js.output


def _count(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT count(*), count(DISTINCT (input_key, metric)) FROM scores"
        ).fetchone()
    finally:
        con.close()


def _values(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return dict(
            ((k, m), v) for k, m, v in con.execute("SELECT input_key, metric, value FROM scores").fetchall()
        )
    finally:
        con.close()


def test_sigkill_midway_then_rerun_resumes_exactly(tmp_path, toy_metrics):
    """200 items, killed with SIGKILL after some chunks are committed; the rerun completes the
    store with exactly one record per (item, metric), equal to an uninterrupted run."""
    for k in range(200):
        write_tone(tmp_path / "gen" / f"s{k % 4}" / f"u{k:03d}.wav", seconds=0.12, seed=k)
        write_tone(tmp_path / "ref" / f"u{k:03d}.wav", seconds=0.12, seed=k + 1000)
    cmd = [sys.executable, "-m", "speechqe.cli.main", "score", str(tmp_path / "gen"), "--ref",
           str(tmp_path / "ref"), "--metrics", "toy_level,toy_snr", "--param",
           "toy_level.delay_s=0.02", "--chunk-size", "8", "--progress", "plain"]
    env = dict(os.environ)
    killed_db = tmp_path / "killed.duckdb"
    proc = subprocess.Popen(cmd + ["--db", str(killed_db)], stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)
    done = 0
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if line.startswith("scored "):
            done = int(line.split("(")[1].split()[0])  # "(N saved, ...": committed items
            if done >= 64:
                break
        assert time.monotonic() < deadline, "run made no progress"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and 64 <= done < 200
    n_partial, _ = _count(killed_db)
    assert 0 < n_partial < 200 * 3
    rerun = subprocess.run(cmd + ["--db", str(killed_db)], capture_output=True, text=True,
                           env=env, cwd=REPO)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done}" in rerun.stderr.splitlines()[0]  # the rerun starts from the committed items
    full_db = tmp_path / "full.duckdb"
    full = subprocess.run(cmd + ["--db", str(full_db)], capture_output=True, text=True, env=env,
                          cwd=REPO)
    assert full.returncode == 0, full.stderr
    assert _count(killed_db) == (600, 600) == _count(full_db)
    assert _values(killed_db) == _values(full_db)


def test_bad_files_with_real_metrics_from_the_cli(tmp_path):
    """The acceptance folder (corrupt, empty, silent, NaN, text renamed .wav beside good
    files) through `speechqe score` with real metrics: the run completes, each bad file has
    error records with its specific reason, each good file is scored."""
    from test_runner import _bad_folder

    gen, ref = _bad_folder(tmp_path)
    out = tmp_path / "o.csv"
    res = runner.invoke(app, ["score", str(gen), "--ref", str(ref), "--metrics",
                              "si_sdr,stoi,dnsmos", "--db", str(tmp_path / "s.duckdb"),
                              "--out", str(out), "--progress", "none"])
    assert res.exit_code == 0, res.output
    with open(out) as f:
        rows = list(csv.DictReader(f))
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["item_id"].split("/")[-1], []).append(r)
    assert len(rows) == 9 * 6  # 9 files x (si_sdr, stoi, 4 DNSMOS outputs)
    for k in range(3):
        assert all(r["status"] == "ok" and r["value"] != "" for r in by[f"good{k}"])
    expected = {"corrupt": "unreadable", "truncated": "unreadable", "empty": "empty",
                "silent": "silent", "nan": "non_finite", "notes": "unreadable"}
    for name, code in expected.items():
        assert {(r["status"], r["error_type"], r["value"]) for r in by[name]} == {("error", code, "")}, name


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_exits_130_says_how_to_resume_and_the_run_says_interrupted(tmp_path, toy_metrics, workers):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while scoring: the
    command commits what was scored, stops its workers, says how to resume and exits 130; the
    run is recorded ``interrupted`` and `summary` says so and shows only what it computed,
    also after a later run has completed the set."""
    import psutil

    for k in range(24):
        write_tone(tmp_path / "gen" / f"u{k:02d}.wav", seconds=0.2, seed=k)
    db = tmp_path / "s.duckdb"
    cmd = [sys.executable, "-m", "speechqe.cli.main", "score", str(tmp_path / "gen"), "--metrics",
           "toy_level", "--param", "toy_level.delay_s=0.25", "--progress", "plain", "--db",
           str(db), "--workers", workers, "--chunk-size", "2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 180
    for line in proc.stderr:
        if line.startswith("scored ") and int(line.split("(")[1].split()[0]) >= 4:
            break
        assert time.monotonic() < deadline, "no progress"
    children = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "rerun the same command to resume" in err
    _gone, alive = psutil.wait_procs(children, timeout=15)  # workers, resource tracker
    assert not [c for c in alive if c.status() != psutil.STATUS_ZOMBIE]
    con = duckdb.connect(str(db), read_only=True)
    run_id, status, n_records = con.execute("SELECT run_id, status, n_records FROM runs").fetchone()
    con.close()
    assert status == "interrupted" and 8 <= n_records < 48
    first = runner.invoke(app, ["summary", run_id, "--db", str(db)])
    assert "interrupted" in first.output and f"results for {n_records // 2} of 24 items" in first.output
    assert runner.invoke(app, ["score", str(tmp_path / "gen"), "--metrics", "toy_level", "--param",
                               "toy_level.delay_s=0.25", "--db", str(db), "--progress", "none",
                               "--workers", "1"]).exit_code == 0
    again = runner.invoke(app, ["summary", run_id, "--db", str(db)])
    assert f"{n_records} records" in again.output and f"results for {n_records // 2} of" in again.output
