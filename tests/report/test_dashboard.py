"""The dashboard server: loopback only, pages and audio from the store only, a clear 503
while a run holds the store."""

from __future__ import annotations

import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from .test_compare import make_two_runs


def _get(url, host=None):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


@pytest.fixture
def served(tmp_path, toy_metrics):
    from speechqe.engine.report.server import Dashboard, make_server

    db, ids = make_two_runs(tmp_path, toy_metrics)
    server = make_server(Dashboard(db), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path, db, ids
    server.shutdown()
    server.server_close()


def test_routes(served):
    from urllib.parse import quote

    base, tmp, db, (a, b) = served
    assert served[0].startswith("http://127.0.0.1:")
    status, ctype, body = _get(base + "/")
    assert status == 200 and ctype.startswith("text/html") and b.encode() in body and b"nightly" in body
    status, _, body = _get(f"{base}/run/{b}")
    assert status == 200 and b'src="/static/plotly.min.js"' in body and b"regression" in body
    status, _, body = _get(f"{base}/compare?a={a}&b={b}")
    assert status == 200 and b"1 regression(s)" in body
    status, ctype, body = _get(f"{base}/audio?run={b}&item={quote('sys_b/u1', safe='')}&which=ref")
    assert status == 200 and ctype == "audio/wav" and body == (tmp / "ref" / "u1.wav").read_bytes()
    status, ctype, body = _get(base + "/static/plotly.min.js")
    assert status == 200 and ctype.startswith("text/javascript") and len(body) > 1_000_000
    # only files a run's items table names are served; other hosts are refused
    assert _get(f"{base}/audio?run={b}&item={quote('../../etc/passwd', safe='')}")[0] == 404
    assert _get(f"{base}/run/nope")[0] == 404
    assert _get(base + "/", host="evil.example:80")[0] == 403


def test_store_held_by_a_writer_gives_503(served):
    base, tmp, db, _ = served
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from speechqe.store import Store\nimport sys\ns = Store({str(db)!r})\n"
         "print('held', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status, _, body = _get(base + "/")
        assert status == 503 and b"in use by another process" in body
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert _get(base + "/")[0] == 200
