"""A full disk and a read-only output folder (issue 12): a clean error (exit status, one
``error:`` line that says what happened and what to do, no traceback), and a store that stays
readable with everything committed before the fault; a rerun with room completes it exactly.

Two ways:

* in this process, a store write or an export that raises ``OSError(ENOSPC)`` (runs anywhere);
* for real, in a private mount namespace (``unshare -rm``: no root needed where unprivileged
  user namespaces are allowed; skipped with the reason where they are not): a 400 KiB tmpfs
  that fills up in the middle of a run, and a read-only bind mount of a folder holding a store.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from speechqe.cli.common import run
from speechqe.cli.main import app
from speechqe.store import Store

from .helpers import error_lines, flat, run_job
from .test_crash_safety import final_results, records, score_argv, score_set


def _namespace_reason(tmp: Path) -> str | None:
    """Why a private mount namespace with a tmpfs cannot be made here (``None``: it can)."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = tmp / "probe-mnt"
    probe.mkdir()
    try:
        p = subprocess.run(["unshare", "-rm", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs {probe} && touch {probe}/x"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if p.returncode != 0:
        return f"no private mount namespace with a tmpfs here: {p.stderr.strip()[:200]}"
    return None


def _one_error(out: str, err: str) -> str:
    lines = error_lines({"stdout": out, "stderr": err})
    assert len(lines) == 1, out + err
    assert "Traceback" not in out + err
    return flat(err[err.index("error:"):])


# ------------------------------------------------------------------------------------------
# In this process: an injected ENOSPC
# ------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    from speechqe.cli.common import DEBUG_ENV

    monkeypatch.setenv(DEBUG_ENV, "0")


def test_enospc_at_a_commit_is_a_clean_error_and_keeps_the_committed_chunks(
        tmp_path, toy_metrics, capsys, monkeypatch):
    gen, ref = score_set(tmp_path / "set", 40)
    db, undisturbed = tmp_path / "s.duckdb", tmp_path / "undisturbed.duckdb"
    real_write = Store.write
    calls = {"n": 0}

    def write(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the fourth chunk's commit finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Store, "write", write)
    code = run(app, score_argv(gen, ref, db, 5, 1))
    out, err = capsys.readouterr()
    assert code == 1, out + err
    msg = _one_error(out, err)
    assert "No space left on device" in msg and str(db) in msg and "free some space" in msg
    with Store(db, read_only=True) as st:  # readable; the three committed chunks are there
        (r,) = st.runs()
        assert r["status"] == "failed" and "No space left" in r["error"]
    assert len(records(db)) == 3 * 5 * 3
    monkeypatch.setattr(Store, "write", real_write)
    assert run(app, score_argv(gen, ref, db, 5, 1)) == 0
    assert run(app, score_argv(gen, ref, undisturbed, 16, 1)) == 0
    capsys.readouterr()
    assert records(db) == records(undisturbed)
    assert final_results(db) == final_results(undisturbed)


def test_enospc_while_exporting_keeps_the_finished_run(tmp_path, toy_metrics, capsys, monkeypatch):
    gen, ref = score_set(tmp_path / "set", 12)
    db, out_csv = tmp_path / "s.duckdb", tmp_path / "out.csv"

    def export(self, run_id, path, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Store, "export", export)
    code = run(app, score_argv(gen, ref, db, 4, 1) + ["--out", str(out_csv)])
    out, err = capsys.readouterr()
    assert code == 1
    msg = _one_error(out, err)
    assert "No space left on device" in msg and "out.csv" in msg
    with Store(db, read_only=True) as st:
        (r,) = st.runs()
        assert r["status"] == "finished"
    assert len(records(db)) == 12 * 3


# ------------------------------------------------------------------------------------------
# For real: a tmpfs that fills up, a read-only bind mount
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mounted(tmp_path_factory):
    """One driver job inside a private mount namespace (see the module docstring)."""
    tmp_path = tmp_path_factory.mktemp("mounts")
    reason = _namespace_reason(tmp_path)
    if reason:
        pytest.skip(reason)
    gen, ref = score_set(tmp_path / "set", 400)
    small, _ = score_set(tmp_path / "small", 20)
    full, ro, prep = tmp_path / "full-mnt", tmp_path / "ro-mnt", tmp_path / "prep"
    for d in (full, ro, prep):
        d.mkdir()
    saved, out = tmp_path / "saved", tmp_path / "out"
    steps = [
        # a 400 KiB file system fills up in the middle of the run (its store holds about 60%)
        {"id": "disk-full", "argv": score_argv(gen, ref, full / "s.duckdb", 8, 1)},
        {"id": "runs-on-full-disk", "argv": ["runs", "--db", str(full / "s.duckdb")]},
        {"id": "copy-out", "action": "copy", "src": str(full), "dst": str(saved)},
        {"id": "committed", "action": "count", "db": str(saved / "s.duckdb")},
        {"id": "rerun-with-room", "argv": score_argv(gen, ref, saved / "s.duckdb", 8, 1)},
        {"id": "undisturbed", "argv": score_argv(gen, ref, tmp_path / "undisturbed.duckdb", 8, 1)},
        # a store in a folder that is read-only (the same folder, seen through a read-only
        # bind mount): a new run fails cleanly, reading works
        {"id": "prepare", "argv": score_argv(small, ref, prep / "s.duckdb", 4, 1)},
        {"id": "score-into-read-only", "argv": score_argv(gen, ref, ro / "s.duckdb", 8, 1)},
        {"id": "new-store-in-read-only", "argv": score_argv(small, ref, ro / "new.duckdb", 4, 1)},
        {"id": "runs-read-only", "argv": ["runs", "--db", str(ro / "s.duckdb")]},
        {"id": "summary-read-only", "argv": ["summary", "--db", str(ro / "s.duckdb")]},
        {"id": "export-from-read-only", "argv": ["export", str(out / "x.csv"), "--db", str(ro / "s.duckdb")]},
        {"id": "export-into-read-only", "argv": ["export", str(ro / "x.csv"), "--db", str(prep / "s.duckdb")]},
        {"id": "report-into-read-only", "argv": ["report", "--db", str(prep / "s.duckdb"), "--out", str(ro / "r.html")]},
    ]
    script = (f"mount -t tmpfs -o size=400k tmpfs {full} && mount --bind {prep} {ro} && "
              f"mount -o remount,bind,ro {ro} && exec {{driver}}")
    res = run_job(steps, tmp_path / "job", warm=("torch", "duckdb", "speechqe.engine.evaluation"),
                  wrap=["unshare", "-rm", "sh", "-c", script])
    return tmp_path, res


@pytest.mark.slow
def test_a_full_disk_mid_run(mounted):
    tmp_path, res = mounted
    saved = tmp_path / "saved"
    full_run = res["disk-full"]
    assert full_run["code"] == 1, full_run["stdout"] + full_run["stderr"]
    msg = _one_error(full_run["stdout"], full_run["stderr"])
    assert "No space left on device" in msg and "free some space" in msg, msg
    assert res["runs-on-full-disk"]["code"] == 0 and "failed" in res["runs-on-full-disk"]["stdout"]
    n, distinct = res["committed"]["value"]  # whole chunks, some of them, no duplicate
    assert 0 < n < 400 * 3 and n % 3 == 0 and n == distinct, (n, distinct)
    assert res["rerun-with-room"]["code"] == 0, res["rerun-with-room"]["stderr"]
    assert res["undisturbed"]["code"] == 0
    assert records(saved / "s.duckdb") == records(tmp_path / "undisturbed.duckdb")
    assert final_results(saved / "s.duckdb") == final_results(tmp_path / "undisturbed.duckdb")


@pytest.mark.slow
def test_a_full_disk_is_recorded_as_the_runs_error(mounted):
    tmp_path, res = mounted
    from speechqe.store import Store

    # the store copied off the full disk (the rerun added its own finished run)
    with Store(tmp_path / "saved" / "s.duckdb", read_only=True) as st:
        failed = [r for r in st.runs() if r["status"] == "failed"]
    assert failed and "No space left on device" in failed[0]["error"], failed


@pytest.mark.slow
def test_a_read_only_folder(mounted):
    tmp_path, res = mounted
    assert res["prepare"]["code"] == 0, res["prepare"]["stderr"]
    for cid in ("score-into-read-only", "new-store-in-read-only", "export-into-read-only",
                "report-into-read-only"):
        r = res[cid]
        assert r["code"] in (1, 2), f"{cid}: {r['stdout']}{r['stderr']}"
        assert "Read-only file system" in _one_error(r["stdout"], r["stderr"]), cid
    for cid in ("runs-read-only", "summary-read-only", "export-from-read-only"):
        assert res[cid]["code"] == 0, f"{cid}: {res[cid]['stderr']}"
    assert (tmp_path / "out" / "x.csv").stat().st_size > 0
    assert len(records(tmp_path / "prep" / "s.duckdb")) == 20 * 3  # as it was
