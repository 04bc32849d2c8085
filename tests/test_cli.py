"""The command line: scoring, summary, exports, bad arguments, kill-and-resume."""

from __future__ import annotations

import csv
import json
import os
import queue
import signal
import subprocess
import sys
import threading
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
    # Progress lines are read on a thread, so a run that hangs silently fails the test at the
    # deadline instead of blocking it.
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
    done, deadline = 0, time.monotonic() + 180
    try:
        while done < 64:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no progress past {done} items in 180 s")
            if line.startswith("scored "):
                done = int(line.split("(")[1].split()[0])  # "(N saved, ...": committed items
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # What was committed is read from the store once the killed process has let go of it
    # (DuckDB has one writer): whole chunks, every output of every item in them.
    n_partial, _ = _count(killed_db)
    assert n_partial % 3 == 0 and 64 * 3 <= n_partial < 200 * 3
    rerun = subprocess.run(cmd + ["--db", str(killed_db)], capture_output=True, text=True,
                           env=env, cwd=REPO, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    first = rerun.stderr.splitlines()[0]
    assert first.startswith(f"scored {n_partial // 3}/200 items (") and f"{n_partial // 3} reused" in first, first
    full_db = tmp_path / "full.duckdb"
    full = subprocess.run(cmd + ["--db", str(full_db)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600)
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


# ------------------------------------------------------------------------------------------
# Inputs (issues 12, 14, 16) and the wide layout
# ------------------------------------------------------------------------------------------
def _score(tmp_path, *args):
    return runner.invoke(app, ["score", *map(str, args), "--db", str(tmp_path / "s.duckdb"),
                               "--progress", "none"])


def test_latin1_transcript_is_a_message_not_a_traceback(tmp_path, toy_metrics):
    write_tone(tmp_path / "g" / "u1.wav", seed=1)
    (tmp_path / "t.tsv").write_bytes("u1\tcaf\xe9\n".encode("latin-1"))
    res = _score(tmp_path, tmp_path / "g", "--text", tmp_path / "t.tsv", "--metrics", "toy_rate")
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    out = " ".join(res.output.split())
    assert "t.tsv:1:" in out and "--text-encoding" in out and "Traceback" not in out
    ok = _score(tmp_path, tmp_path / "g", "--text", tmp_path / "t.tsv", "--metrics", "toy_rate",
                "--text-encoding", "latin-1")
    assert ok.exit_code == 0, ok.output


def test_every_scanned_entry_is_in_the_results(tmp_path, toy_metrics):
    g = tmp_path / "g"
    write_tone(g / "good.wav", seed=1)
    (g / "loop.wav").symlink_to("loop.wav")
    (g / "x.wav").mkdir()
    out = tmp_path / "o.csv"
    res = _score(tmp_path, g, "--metrics", "toy_level", "--out", out)
    assert res.exit_code == 0, res.output
    assert "header errors: 2" in res.output
    with open(out) as f:
        rows = {r["item_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"good", "loop", "x"}
    assert rows["loop"]["error"] == "symbolic link loop"
    assert rows["x"]["error"] == "is a folder, not an audio file"


def test_text_or_ref_matching_nothing_says_so(tmp_path, toy_metrics):
    write_tone(tmp_path / "g" / "u1.wav", seed=1)
    (tmp_path / "t.tsv").write_text("other\thello\n")
    res = _score(tmp_path, tmp_path / "g", "--text", tmp_path / "t.tsv", "--metrics", "toy_rate")
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "matched 0 of 1 items" in out and "'u1'" in out and "'other'" in out
    assert "needs transcripts" not in out


def test_single_audio_file_with_its_reference(tmp_path, toy_metrics):
    write_tone(tmp_path / "x.wav", seed=1)
    write_tone(tmp_path / "clean.wav", seed=2)
    res = _score(tmp_path, tmp_path / "x.wav", "--ref", tmp_path / "clean.wav",
                 "--metrics", "toy_level,toy_snr")
    assert res.exit_code == 0, res.output
    assert "x: 1 items" in res.output and "1 with reference" in res.output


def test_wide_layout_is_strict_json_with_errors(tmp_path, toy_metrics):
    gen = _set(tmp_path, n=4)
    out = tmp_path / "w.jsonl"
    res = _score(tmp_path, gen, "--ref", tmp_path / "ref", "--metrics", "toy_level,toy_snr",
                 "--out", out, "--layout", "wide")
    assert res.exit_code == 0, res.output

    def no_constants(x):
        raise AssertionError(f"bare {x} in strict JSON")

    lines = [json.loads(line, parse_constant=no_constants) for line in out.read_text().splitlines()]
    assert [d["key"] for d in lines] == ["sys0/bad", "sys0/u0", "sys0/u2", "sys1/u1", "sys1/u3"]
    good = lines[1]
    assert set(good) == {"key", "system", "path", "toy_peak_db", "toy_rms_db", "toy_snr", "errors"}
    assert isinstance(good["toy_peak_db"], float) and good["errors"] == {}
    bad = lines[0]
    assert bad["toy_snr"] is None and bad["errors"]["toy_snr"]["type"] == "unreadable"
    # the export command writes the same lines
    again = tmp_path / "again.jsonl"
    exp = runner.invoke(app, ["export", str(again), "--db", str(tmp_path / "s.duckdb"),
                              "--layout", "wide"])
    assert exp.exit_code == 0 and again.read_text() == out.read_text()
    bad_out = _score(tmp_path, gen, "--metrics", "toy_level", "--out", tmp_path / "w.csv",
                     "--layout", "wide")
    assert bad_out.exit_code == 2 and "--layout wide writes JSONL" in bad_out.output


def test_kaldi_list_with_pipes_from_the_cli(tmp_path, toy_metrics, monkeypatch):
    monkeypatch.setenv("SPEECHQE_CACHE", str(tmp_path / "cache"))
    write_tone(tmp_path / "a.wav", seed=1)
    scp = tmp_path / "data" / "wav.scp"
    scp.parent.mkdir()
    scp.write_text(f"a cat {tmp_path / 'a.wav'} |\n")
    res = _score(tmp_path, scp, "--metrics", "toy_level")
    assert res.exit_code == 2 and "--allow-pipes" in res.output and "wav.scp:1" in res.output
    ok = _score(tmp_path, scp, "--metrics", "toy_level", "--allow-pipes")
    assert ok.exit_code == 0, ok.output
    assert "data: 1 items" in ok.output


def test_runs_and_summary_show_what_a_run_was_asked_to_do(tmp_path, toy_metrics):
    """The stored parameters (suite or metrics, --param values, source) appear in `runs`
    (compact) and `summary`; a run at the defaults says so."""
    gen = _set(tmp_path, n=2)
    db = str(tmp_path / "s.duckdb")
    res = runner.invoke(app, ["score", str(gen), "--metrics", "toy_level", "--param",
                              "toy_level.delay_s=0.001", "--db", db, "--progress", "none"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["score", str(gen), "--metrics", "toy_level,toy_rate", "--db", db,
                              "--text", str(tmp_path / "t.tsv"), "--progress", "none"])
    assert res.exit_code == 0, res.output
    runs = runner.invoke(app, ["runs", "--db", db])
    lines = [ln for ln in runs.output.splitlines() if "finished" in ln]
    assert len(lines) == 2 and "toy_level.delay_s=0.001" in lines[0] and "delay_s" not in lines[1]
    assert "metrics toy_level" in lines[0] and "metrics toy_level, toy_rate" in lines[1]
    from speechqe.store import Store

    with Store(db, read_only=True) as st:
        first, second = (r["run_id"] for r in st.runs())
    out = " ".join(runner.invoke(app, ["summary", first[:-1], "--db", db]).output.split())
    assert f"run {first} (gen): finished" in out and f"source {gen}" in out
    assert "metrics toy_level; metric parameters: toy_level.delay_s=0.001" in out
    out = " ".join(runner.invoke(app, ["summary", second, "--db", db]).output.split())
    assert "metric parameters: defaults" in out and f"transcripts {tmp_path / 't.tsv'}" in out


def test_summary_of_an_interrupted_run_says_so_and_shows_only_its_own_records(tmp_path, toy_metrics):
    """Ctrl-C during `score` records the run as interrupted; its summary says so, and after a
    later run completed the set it still shows what the interrupted run stored, not the
    records the later run computed for the same items."""
    for k in range(48):
        write_tone(tmp_path / "gen" / f"u{k:02d}.wav", seconds=0.1, seed=k)
    db = tmp_path / "s.duckdb"
    cmd = [sys.executable, "-m", "speechqe.cli.main", "score", str(tmp_path / "gen"), "--metrics",
           "toy_level", "--param", "toy_level.delay_s=0.03", "--chunk-size", "4", "--progress",
           "plain", "--db", str(db)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ), cwd=REPO)
    deadline = time.monotonic() + 120
    for line in proc.stderr:
        if line.startswith("scored ") and int(line.split()[1].split("/")[0]) >= 8:
            break
        assert time.monotonic() < deadline, "run made no progress"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    from speechqe.store import Store

    with Store(db, read_only=True) as st:
        (stopped,) = st.runs()
        n_own = len({r["item_id"] for r in st.results(stopped["run_id"])})
    assert stopped["status"] == "interrupted" and 8 <= n_own < 48
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), cwd=REPO)
    assert rerun.returncode == 0, rerun.stderr
    res = runner.invoke(app, ["summary", stopped["run_id"], "--db", str(db)])
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and f"run {stopped['run_id']} (gen): interrupted" in out
    assert "rerun the same command to resume" in out
    assert f"({n_own} of 48 items have records)" in out and f"{2 * n_own} records" in out
    with Store(db, read_only=True) as st:  # a run links only what it computed or reused
        assert len(st.results(stopped["run_id"])) == 2 * n_own
        assert len(st.results(stopped["run_id"], own_only=True)) == 2 * n_own


def test_an_ambiguous_run_prefix_lists_the_matching_runs(tmp_path, toy_metrics):
    gen = _set(tmp_path, n=2)
    db = str(tmp_path / "s.duckdb")
    for _ in range(2):
        res = runner.invoke(app, ["score", str(gen), "--metrics", "toy_level", "--db", db,
                                  "--progress", "none"])
        assert res.exit_code == 0, res.output
    from speechqe.store import Store

    with Store(db, read_only=True) as st:
        ids = [r["run_id"] for r in st.runs()]
    prefix = os.path.commonprefix(ids)
    assert prefix  # both ids start with the date
    for cmd in (["summary", prefix], ["export", str(tmp_path / "x.csv"), "--run", prefix],
                ["compare", prefix, ids[0]]):
        res = runner.invoke(app, [*cmd, "--db", db])
        out = " ".join(res.output.split())
        assert res.exit_code == 2 and f"'{prefix}' matches 2 runs" in out, (cmd, out)
        assert all(i in out for i in ids) and "no run" not in out
    res = runner.invoke(app, ["summary", "zzz", "--db", db])
    assert res.exit_code == 2 and "no run 'zzz'" in res.output


def test_export_names_its_positional_file_in_errors(tmp_path, toy_metrics):
    gen = _set(tmp_path, n=2)
    db = str(tmp_path / "s.duckdb")
    runner.invoke(app, ["score", str(gen), "--metrics", "toy_level", "--db", db, "--progress", "none"])
    res = runner.invoke(app, ["export", str(tmp_path / "o.xlsx"), "--db", db])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "FILE must end in .csv, .parquet or .jsonl (got o.xlsx)" in out
    assert "--out" not in out


def test_metric_arguments_are_checked_before_the_set_is_read(tmp_path, toy_metrics, monkeypatch):
    """A bad bundle path, a metric listed twice (two bundles of one kind) or a --param for a
    metric not in the run stop the command before a single file is hashed."""
    from speechqe.engine import evaluation

    def never(cfg):
        raise AssertionError("the set was read before the metric arguments were checked")

    monkeypatch.setattr(evaluation, "load_set", never)
    gen = _set(tmp_path, n=2)
    db = str(tmp_path / "s.duckdb")
    cases = [
        (["--metrics", f"mos_ensemble:{tmp_path / 'nowhere'}"], "no MOS bundle at"),
        (["--metrics", f"utmos_strong:{tmp_path / 'nowhere.pt'}"], "no checkpoint file at"),
        (["--metrics", "mos_ensemble:a,mos_ensemble:b"],
         "--metrics lists mos_ensemble 2 times (mos_ensemble:a, mos_ensemble:b)"),
        (["--metrics", "toy_level,toy_level"], "--metrics lists toy_level 2 times"),
        (["--metrics", "toy_level", "--param", "toy_rate.x=1"], "--param given for metrics not in this run"),
    ]
    for args, message in cases:
        res = runner.invoke(app, ["score", str(gen), "--db", db, "--progress", "none", *args])
        out = " ".join(res.output.split())
        assert res.exit_code == 2 and message in out, (args, out)
    res = runner.invoke(app, ["score", str(gen), "--db", db, "--metrics", "mos_ensemble:a,mos_ensemble:b"])
    assert "score each in its own run" in " ".join(res.output.split())


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
    assert "interrupted" in first.output and f"({n_records // 2} of 24 items have records)" in " ".join(first.output.split())
    assert runner.invoke(app, ["score", str(tmp_path / "gen"), "--metrics", "toy_level", "--param",
                               "toy_level.delay_s=0.25", "--db", str(db), "--progress", "none",
                               "--workers", "1"]).exit_code == 0
    again = runner.invoke(app, ["summary", run_id, "--db", str(db)])
    assert f"{n_records} records" in again.output and f"({n_records // 2} of 24 items have records)" in " ".join(again.output.split())
