"""One Prefect API for every flow test of the session.

Prefect's ephemeral API costs seconds per start, so the flow tests share one
``prefect_test_harness`` (a temporary SQLite database behind a loopback server on 127.0.0.1),
started on first use. Prefect keeps its files in a temporary PREFECT_HOME and sends no
analytics; both are set here, before Prefect is imported, so other tests are unaffected.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="speechqe-prefect-home-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ.setdefault("PREFECT_HOME", _HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def prefect_api():
    """The session's Prefect API URL (a loopback test server with a throw-away database)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings(updates={PREFECT_HOME: _HOME}):
        with prefect_test_harness(server_startup_timeout=90):
            url = PREFECT_API_URL.value()
            assert url.startswith("http://127.0.0.1:"), url
            yield url


def make_set(root: Path, n: int = 6, systems=("sys_a", "sys_b")) -> dict[str, Path]:
    """A small speech set: ``n`` tones per system, references, transcripts."""
    from conftest import write_tone

    for k in range(n):
        for s_i, system in enumerate(systems):
            write_tone(root / "gen" / system / f"u{k}.wav", seconds=0.25 + 0.05 * k,
                       freq=200 + 40 * k, seed=100 * s_i + k)
        write_tone(root / "ref" / f"u{k}.wav", seconds=0.25 + 0.05 * k, freq=200 + 40 * k, seed=k)
    (root / "t.tsv").write_text("".join(f"u{k}\tsay word number {k}\n" for k in range(n)))
    return {"gen": root / "gen", "ref": root / "ref", "text": root / "t.tsv"}
