"""The dashboard server, against a real server on 127.0.0.1: its routes, a clear 503 while a
run holds the store, the loopback-only default, and no file reachable through its URLs but the
audio a stored run scored (issue 12). Every request is bounded in time."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

from .hostile import build, payload
from .test_compare import make_two_runs

TIMEOUT = 30


def _get(url, host=None):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def raw(base: str, target: bytes, host: bytes | None = b"127.0.0.1") -> tuple[int, bytes]:
    """Send ``GET <target>`` byte for byte (no client-side quoting or checks); the status and
    body of the answer."""
    hostname, port = base.split("//")[1].split(":")
    with socket.create_connection((hostname, int(port)), timeout=TIMEOUT) as s:
        head = b"GET " + target + b" HTTP/1.1\r\n" + (b"Host: " + host + b"\r\n" if host else b"")
        s.sendall(head + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _serve(dashboard, **kw):
    from speechqe.engine.report.server import make_server

    server = make_server(dashboard, port=0, **kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def served(tmp_path, toy_metrics):
    from speechqe.engine.report.server import Dashboard

    db, ids = make_two_runs(tmp_path, toy_metrics)
    server, base = _serve(Dashboard(db))
    yield base, tmp_path, db, ids
    server.shutdown()
    server.server_close()


def test_routes(served):
    base, tmp, db, (a, b) = served
    assert base.startswith("http://127.0.0.1:")
    status, ctype, body = _get(base + "/")
    assert status == 200 and ctype.startswith("text/html") and b.encode() in body and b"nightly" in body
    status, _, body = _get(f"{base}/run/{b}")
    assert status == 200 and b'src="/static/plotly.min.js"' in body and b"regression" in body
    status, _, body = _get(f"{base}/compare?a={a}&b={b}")
    assert status == 200 and b"1 regression(s)" in body
    status, ctype, body = _get(f"{base}/audio?run={b}&item={quote('sys_b/u1', safe='')}&which=ref")
    assert status == 200 and ctype == "audio/wav" and body == (tmp / "ref" / "u1.wav").read_bytes()
    status, ctype, body = _get(f"{base}/audio?run={b}&item={quote('sys_b/u1', safe='')}")
    assert status == 200 and body == (tmp / "b" / "sys_b" / "u1.wav").read_bytes()
    status, ctype, body = _get(base + "/static/plotly.min.js")
    assert status == 200 and ctype.startswith("text/javascript") and len(body) > 1_000_000
    with urllib.request.urlopen(base + "/", timeout=TIMEOUT) as r:
        assert r.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"] == "no-referrer"
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


# ------------------------------------------------------------------------------------------
# No file but a stored run's audio
# ------------------------------------------------------------------------------------------
SECRET = "the-secret-token-4f1c"


@pytest.fixture
def hostile_served(tmp_path, toy_metrics):
    from speechqe.engine.report.server import Dashboard

    h = build(tmp_path / "h")
    (tmp_path / "secret.txt").write_text(SECRET)
    server, base = _serve(Dashboard(h.db))
    yield base, tmp_path, h
    server.shutdown()
    server.server_close()


def _item(h, k):
    return next(i for i in h.files if i.endswith(f"#{k}"))


def test_hostile_ids_round_trip_through_urls(hostile_served):
    base, tmp, h = hostile_served
    status, _, body = _get(f"{base}/?name={quote(payload('run_name'), safe='')}")
    assert status == 200
    # follow every link of the front page: each answers 200
    hrefs = [x.replace("&amp;", "&") for x in re.findall(r'href="([^"]*)"', body.decode())]
    assert any(hr.startswith("/run/") and "%3Cscript%3E" in hr for hr in hrefs)  # the hostile run id
    for hr in set(hrefs):
        assert _get(base + hr)[0] == 200, hr
    # the audio of an item with a hostile id and file name
    item = _item(h, 0)
    status, ctype, body = _get(f"{base}/audio?run={quote(h.run_b, safe='')}&item={quote(item, safe='')}")
    assert status == 200 and ctype == "audio/wav" and body == h.files[item].read_bytes()


TRAVERSALS = [
    b"/../../../../etc/passwd",
    b"/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    b"/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    b"/run/..%2F..%2F..%2Fetc%2Fpasswd",
    b"/run/%252e%252e%252fetc%252fpasswd",
    b"/run/..\\..\\..\\etc\\passwd",
    b"/run/%5C..%5C..%5Cetc%5Cpasswd",
    b"/run/%2Fetc%2Fpasswd",
    b"/run//etc/passwd",
    b"/static/../../../etc/passwd",
    b"/static/..%2f..%2f..%2fetc%2fpasswd",
    b"/static/plotly.min.js/../../../../etc/passwd",
    b"/static/%2Fetc%2Fpasswd",
    b"//etc/passwd",
    b"http://127.0.0.1/etc/passwd",
    b"/etc/passwd",
    b"/audio?run=latest&item=%2Fetc%2Fpasswd",
    b"/audio?run=latest&item=..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    b"/audio?run=latest&item=%252e%252e%252fetc%252fpasswd",
    b"/audio?run=latest&item=..\\..\\etc\\passwd",
    b"/audio?run=latest&item=/etc/passwd&which=item",
    b"/audio?run=%2Fetc%2Fpasswd&item=x",
    b"/audio?run=latest&item=x&which=..%2F..%2Fetc%2Fpasswd",
    b"/audio?run=latest&item=x%00.wav",
    b"/audio?run=latest%00&item=x",
    b"/audio?run=latest&item=\x00",
    b"/run/latest%00",
    b"/run/\x00",
    b"/?name=%00",
    b"/?name=%ff%fe",
    b"/audio?run=latest&item=x&item=y",
    b"/audio?run=latest&item=x&path=/etc/passwd",
    b"/audio?item=x",
    b"/compare?a=latest",
    b"/audio?run=latest&item=SECRET",
]


#: What each request of TRAVERSALS must get: malformed ones 400, the rest 404.
BAD_REQUESTS = {t for t in TRAVERSALS if re.search(rb"%00|\x00|%ff|item=x&item|&path=|\?item=|a=latest$|which=\.\.", t)}


def test_no_path_traversal_through_urls(hostile_served):
    base, tmp, h = hostile_served
    answers = {}
    for target in TRAVERSALS:
        sent = target.replace(b"SECRET", quote(str(tmp / "secret.txt"), safe="").encode())
        status, body = raw(base, sent)
        assert b"root:" not in body and SECRET.encode() not in body, target
        answers[target] = status
    assert answers == {t: 400 if t in BAD_REQUESTS else 404 for t in TRAVERSALS}


def test_only_the_bytes_a_run_scored_are_served(hostile_served):
    """The path an item names may change after the run: a symlink out of the set, an edited
    file, a FIFO, a non-audio file. Only bytes whose sha256 is the stored one are served."""
    base, tmp, h = hostile_served

    def audio(k, which="item"):
        return raw(base, f"/audio?run={quote(h.run_b, safe='')}&item={quote(_item(h, k), safe='')}"
                         f"&which={which}".encode())

    assert audio(0)[0] == 200 and audio(0, "ref")[0] == 200
    # a symlink pointing out of the folder, in place of the scored file
    victim = h.files[_item(h, 0)]
    victim.unlink()
    victim.symlink_to(tmp / "secret.txt")
    status, body = audio(0)
    assert status == 404 and SECRET.encode() not in body and b"no longer the one the run scored" in body
    # the same bytes behind a symlink are the scored audio: served
    moved = tmp / "elsewhere.wav"
    h.files[_item(h, 1)].rename(moved)
    h.files[_item(h, 1)].symlink_to(moved)
    assert audio(1) == (200, moved.read_bytes())
    # an edited file
    path = h.files[_item(h, 2)]
    path.write_bytes(path.read_bytes()[:-2] + b"\x00\x01")
    assert audio(2)[0] == 404
    # a FIFO (would block a naive reader): refused without reading
    path = h.files[_item(h, 3)]
    path.unlink()
    os.mkfifo(path)
    status, body = audio(3)
    assert status == 404 and b"not a regular file" in body
    # a directory, and a file that is gone
    path.unlink()
    path.mkdir()
    assert audio(3)[0] == 404
    assert raw(base, f"/audio?run={quote(h.run_b, safe='')}&item={quote(payload('item_id') + '#gone', safe='')}"
                     .encode())[0] == 404


def test_audio_of_a_non_audio_item_is_refused(tmp_path, toy_metrics):
    """A store may name any file as an item (a manifest line): nothing but browser audio
    types is served, even with a matching hash."""
    from speechqe.engine.report.server import Dashboard
    from speechqe.hashing import sha256_file
    from speechqe.manifest import AudioItem
    from speechqe.store import Store

    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    db = tmp_path / "s.duckdb"
    with Store(db) as st:
        rid = st.start_run(name="n", source="s", suite=None, metrics=[], params={}, code_version="0", n_items=1)
        st.add_items(rid, [AudioItem(id="x", path=str(secret), system="s", sha256=sha256_file(secret))])
        st.finish_run(rid, "finished")
    server, base = _serve(Dashboard(db))
    try:
        status, body = raw(base, b"/audio?run=latest&item=x")
        assert status == 404 and SECRET.encode() not in body and b"not an audio format" in body
    finally:
        server.shutdown()
        server.server_close()


def test_host_header_must_name_this_server(hostile_served):
    base, tmp, h = hostile_served
    for host in (b"evil.example", b"127.0.0.1.evil.example", b"localhost.evil.example:80", b"", None):
        assert raw(base, b"/", host=host)[0] == 403, host
    for host in (b"127.0.0.1", b"localhost", b"LOCALHOST:1234", b"[::1]:80"):
        assert raw(base, b"/", host=host)[0] == 200, host


def test_binds_loopback_unless_told_otherwise(tmp_path, toy_metrics):
    from typer.testing import CliRunner

    from speechqe.cli.main import app
    from speechqe.engine.report.server import (
        DEFAULT_HOST,
        Dashboard,
        accepted_hosts,
        is_loopback,
        make_server,
    )

    assert DEFAULT_HOST == "127.0.0.1"
    server = make_server(Dashboard(tmp_path / "s.duckdb"), port=0)
    assert server.server_address[0] == "127.0.0.1"
    server.server_close()
    help_text = " ".join(CliRunner().invoke(app, ["dashboard", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "--host" in help_text and "127.0.0.1" in help_text and "no login" in help_text
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    assert accepted_hosts("0.0.0.0") == {"127.0.0.1", "localhost", "::1"}
    assert accepted_hosts("192.168.1.4", ["Box.lan:8765"]) == {"127.0.0.1", "localhost", "::1", "192.168.1.4", "box.lan"}


def test_dashboard_command_listens_where_told(served):
    """``speechqe dashboard --host`` for real: a second loopback address, answered there."""
    base, tmp, db, (a, b) = served
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "speechqe.cli", "dashboard", "--db", str(db),
                             "--host", "127.0.0.2", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.2:(\d+)/", line)
        assert m, line
        url = f"http://127.0.0.2:{m.group(1)}"
        assert _get(url + "/")[0] == 200 and _get(url + "/", host="127.0.0.1")[0] == 200
        assert _get(url + "/", host="other.example")[0] == 403
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
    busy = subprocess.run([sys.executable, "-m", "speechqe.cli", "dashboard", "--db", str(db),
                           "--port", base.rsplit(":", 1)[1]], capture_output=True, text=True,
                          timeout=120, env=env)
    assert busy.returncode == 2 and "error:" in busy.stderr and "Traceback" not in busy.stderr
