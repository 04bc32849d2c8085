"""`speechqe evaluate` when the flow itself fails: Prefect logs the traceback of every failed
task and flow on the console; the command shows one ``error:`` line, and the traceback only
with ``--debug``. Needs a Prefect API (a test server: seconds to start), hence slow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

from .helpers import driver_env, error_lines, tone_set


@pytest.fixture(scope="module")
def prefect_url(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ.setdefault("PREFECT_HOME", str(home))
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.mark.slow
@pytest.mark.parametrize("debug", [False, True])
def test_a_failing_flow_prints_one_error_line(tmp_path, prefect_url, debug):
    gen = tone_set(tmp_path / "gen")
    env = driver_env(tmp_path, PREFECT_API_URL=prefect_url)
    cmd = [sys.executable, "-m", "speechqe.cli", *(["--debug"] if debug else []), "evaluate",
           str(gen), "--metrics", "nope", "--no-report", "--db", str(tmp_path / "s.duckdb")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 2, out
    result = {"stdout": p.stdout, "stderr": p.stderr}
    assert len(error_lines(result)) == 1 and "unknown metric 'nope'" in error_lines(result)[0], out
    assert ("Traceback" in out) == debug, out
