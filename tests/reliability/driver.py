"""Run many ``speechqe`` command lines as separate processes, cheaply.

A new Python process that imports torch, the metric plugins and Prefect costs 5-10 s on a
loaded 2-core machine; the reliability tests run about a hundred command lines and forty
killed runs. So this script is started once (by a test, with ``subprocess``), imports what the
commands need, and then *forks* one child per command line: each child is a real process
with its own exit status, stdout, stderr and process group, running exactly what the
``speechqe`` console script runs (:func:`speechqe.cli.common.run` on the root app), and can be
killed with SIGKILL at any moment like any other run.

Usage: ``python driver.py JOB.json RESULTS.json``. The job is a JSON object::

    {"warm": ["torch", "prefect"],           # modules to import before forking
     "parallel": 2,                          # steps marked "parallel" run this many at once
     "steps": [
        {"id": "a", "argv": ["runs", "--db", "x.duckdb"], "cwd": "/tmp", "env": {"K": "V"},
         "timeout": 120},
        {"id": "b", "argv": [...], "kill_after": 1.5},   # SIGKILL its process group then
        {"id": "c", "argv": [...], "kill_after_frac": 0.4, "ref": "a"},  # 40% of a's time
        {"id": "g", "argv": [...], "kill_when_exists": "out", "kill_delay": 0.01},
        {"id": "h", "argv": [...], "kill_after": 1.0, "signal": "INT"},   # Ctrl-C instead
        {"id": "d", "action": "count", "db": "x.duckdb"},   # records in a store
        {"id": "e", "action": "files", "root": "out"},      # files and sizes under a folder
        {"id": "f", "action": "copy", "src": "a", "dst": "b"}]}  # copy a folder's files

Each result holds ``id``, ``code`` (exit status; ``None`` when killed), ``signal``,
``seconds``, ``stdout``, ``stderr``, ``killed`` (the kill arrived before the command ended),
or the action's ``value``.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path


def _child(step: dict, out_path: str, err_path: str) -> None:
    """In the forked child: become a process group, redirect stdio, run the command."""
    try:
        os.setpgid(0, 0)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, out_path), (2, err_path)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        if step.get("cwd"):
            os.chdir(step["cwd"])
        for k, v in (step.get("env") or {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        from speechqe.cli.common import run
        from speechqe.cli.main import app

        argv = [str(a) for a in step["argv"]]
        sys.argv = ["speechqe", *argv]
        code = run(app, argv)
    except BaseException:  # noqa: BLE001 - the driver itself failed: say so loudly
        import traceback

        traceback.print_exc()
        code = 99
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code if isinstance(code, int) else 1)


class _Running:
    """A forked command: its process (group) id, when it started, where its output goes."""

    def __init__(self, step: dict, durations: dict[str, float], tmp: str, n: int):
        self.step = step
        self.out_path = os.path.join(tmp, f"{n}.out")
        self.err_path = os.path.join(tmp, f"{n}.err")
        self.kill_after = step.get("kill_after")
        if step.get("kill_after_frac") is not None:
            self.kill_after = float(step["kill_after_frac"]) * durations[step["ref"]]
        self.timeout = float(step.get("timeout", 300))
        self.kill_when_exists = step.get("kill_when_exists")  # a path: kill once it appears
        self.kill_delay = float(step.get("kill_delay", 0.0))  # ... this many seconds later
        self.seen_at: float | None = None
        # "INT": at the kill time send SIGINT (Ctrl-C) instead, once, and let the command end
        self.signal = signal.SIGINT if step.get("signal") == "INT" else signal.SIGKILL
        self.interrupted_at: float | None = None
        sys.stdout.flush()
        sys.stderr.flush()
        self.t0 = time.monotonic()
        self.pid = os.fork()
        if self.pid == 0:
            _child(step, self.out_path, self.err_path)
        self.killed = False

    def poll(self) -> dict | None:
        """The result once the command has ended (or been killed), else ``None``."""
        done, status = os.waitpid(self.pid, os.WNOHANG)
        if not done:
            now = time.monotonic()
            elapsed = now - self.t0
            due = self.kill_after is not None and elapsed >= self.kill_after
            if self.kill_when_exists is not None:
                if self.seen_at is None and os.path.exists(self.kill_when_exists):
                    self.seen_at = now
                due = due or (self.seen_at is not None and now - self.seen_at >= self.kill_delay)
            if due and self.signal == signal.SIGINT:
                if self.interrupted_at is None:
                    self.interrupted_at = now
                    os.kill(self.pid, signal.SIGINT)  # the command's process, as a terminal would
                due = False
            if not due and elapsed < self.timeout:
                return None
            self.killed = due
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                os.kill(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
        seconds = time.monotonic() - self.t0
        try:  # workers the command started (its process group) go with it
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        code = os.waitstatus_to_exitcode(status)
        return {
            "id": self.step["id"],
            "code": code if code >= 0 else None,
            "signal": -code if code < 0 else None,
            "killed": self.killed and code < 0,
            "interrupted": self.interrupted_at is not None,
            "timed_out": code < 0 and not self.killed,
            "seconds": round(seconds, 3),
            "stdout": Path(self.out_path).read_text(errors="replace"),
            "stderr": Path(self.err_path).read_text(errors="replace"),
        }


def _wait(running: _Running) -> dict:
    while True:
        res = running.poll()
        if res is not None:
            return res
        time.sleep(0.005)


def _count(db: str) -> list[int]:
    import duckdb

    if not Path(db).exists():  # killed before the store was created
        return [0, 0]
    con = duckdb.connect(db, read_only=True)
    try:
        if not con.execute("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_name = 'scores'").fetchone()[0]:
            return [0, 0]  # killed after the file was created, before its tables were
        n, distinct = con.execute(
            "SELECT count(*), count(DISTINCT (input_key, scorer, metric)) FROM scores").fetchone()
        return [int(n), int(distinct)]
    finally:
        con.close()


def _files(root: str) -> dict[str, int]:
    base = Path(root)
    if not base.exists():
        return {}
    return {str(p.relative_to(base)): p.stat().st_size for p in sorted(base.rglob("*")) if p.is_file()}


def main(job_path: str, results_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    for name in job.get("warm", []):
        try:
            importlib.import_module(name)
        except ImportError:  # an extra that is not installed: the commands say so themselves
            pass
    from speechqe import plugins
    from speechqe.cli.main import app  # noqa: F401  (imported once, before any fork)

    plugins.available()
    results, durations = [], {}
    parallel = max(1, int(job.get("parallel", 1)))
    running: list[_Running] = []

    def finish(res: dict) -> None:
        durations[res["id"]] = res["seconds"]
        results.append(res)
        Path(results_path).write_text(json.dumps(results))  # what ran, if the job is stopped

    with tempfile.TemporaryDirectory(prefix="speechqe-driver-") as tmp:
        for n, step in enumerate(job["steps"]):
            action = step.get("action", "command")
            if action == "command" and step.get("parallel") and parallel > 1:
                while len(running) >= parallel:  # independent commands, `parallel` at a time
                    for r in list(running):
                        res = r.poll()
                        if res is not None:
                            running.remove(r)
                            finish(res)
                    time.sleep(0.005)
                running.append(_Running(step, durations, tmp, n))
                continue
            for r in running:  # a sequential step waits for everything before it
                finish(_wait(r))
            running.clear()
            if action == "command":
                finish(_wait(_Running(step, durations, tmp, n)))
            elif action == "count":
                finish({"id": step["id"], "value": _count(step["db"]), "seconds": 0.0})
            elif action == "files":
                finish({"id": step["id"], "value": _files(step["root"]), "seconds": 0.0})
            elif action == "copy":  # a folder's files, e.g. out of a mount that goes away
                import shutil

                shutil.copytree(step["src"], step["dst"], dirs_exist_ok=True)
                finish({"id": step["id"], "value": _files(step["dst"]), "seconds": 0.0})
            else:
                raise SystemExit(f"unknown action {action!r}")
        for r in running:
            finish(_wait(r))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
