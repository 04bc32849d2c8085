"""A served deployment (``speechqe serve``) runs once when triggered through the API of a
loopback Prefect server; the serve process is stopped by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from speechqe.store import Store

from .conftest import make_set


def _wait(predicate, timeout: float, what: str, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"serve exited early while waiting for {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.slow
def test_served_deployment_runs_through_the_api(tmp_path, prefect_api, toy_metrics):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    s = make_set(tmp_path, n=3)
    db = tmp_path / "served.duckdb"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "speechqe.cli.main", "serve", "--source", str(s["gen"]), "--name", "served",
         "--cron", "0 2 * * *", "--timezone", "Europe/Berlin", "--metrics", "toy_level",
         "--db", str(db)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        with get_client(sync_client=True) as c:
            def deployment():
                try:
                    return c.read_deployment_by_name("evaluate-speech-set/served")
                except ObjectNotFound:
                    return None

            dep = _wait(deployment, 120, "the deployment", proc)
            (sched,) = dep.schedules
            assert sched.schedule.cron == "0 2 * * *" and sched.schedule.timezone == "Europe/Berlin"
            assert dep.parameters["skip_unchanged"] is True and dep.parameters["store"] == str(db)
            run = c.create_flow_run_from_deployment(dep.id)
            final = _wait(lambda: (fr := c.read_flow_run(run.id)).state.is_final() and fr, 180,
                          "the flow run", proc)
        assert final.state.is_completed(), final.state
        with Store(db, read_only=True) as st:
            (stored,) = st.runs()
        assert stored["name"] == "served" and stored["flow_run_id"] == str(run.id)
        assert stored["status"] == "finished" and stored["n_items"] == 6
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def test_serve_needs_a_server_and_valid_watches(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from speechqe.cli.main import app

    runner = CliRunner()
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        res = runner.invoke(app, ["serve", "--source", str(tmp_path), "--cron", "0 2 * * *"])
    assert res.exit_code == 2 and "prefect server start" in res.output
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        res = runner.invoke(app, ["serve", "--source", str(tmp_path)])
        assert res.exit_code == 2 and "exactly one of cron or interval_minutes" in res.output
        res = runner.invoke(app, ["serve", "--source", str(tmp_path), "--cron", "99 * * * *"])
        assert res.exit_code == 2 and "bad schedule" in res.output
