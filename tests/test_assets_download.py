"""URL assets against a local HTTP server on 127.0.0.1: download and verify, checksum mismatch,
an interrupted download resumed from the ``.part`` file, servers that ignore Range, and cache
hits that need no network."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading

import pytest

from speechqe import assets
from speechqe.errors import AssetError, ChecksumMismatchError

PAYLOAD = os.urandom(300_000) + b"speechqe" * 1000


class _Server:
    """A tiny HTTP/1.1 file server with Range support and fault injection.

    ``files``: path -> bytes. ``cut_after``: close the connection after this many body bytes of
    the next response (an interrupted transfer). ``honour_range``: answer Range requests with
    206 (else 200 with the whole file, as some servers do).
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut_after: int | None = None
        self.honour_range = True
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                m = re.match(r"bytes=(\d+)-$", rng or "")
                if m and server.honour_range:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(part[: server.cut_after])
                    self.wfile.flush()
                    server.cut_after = None
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with _Server() as s:
        s.files["/m/model.bin"] = PAYLOAD
        yield s


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHQE_CACHE", str(tmp_path / "cache"))
    assets._hash_memo.clear()
    return tmp_path / "cache"


def _asset(server, sha=None, name="test-url-asset"):
    return assets._parse_asset(
        {
            "name": name, "source": "url", "format": "test",
            "files": {"model.bin": {"sha256": sha or hashlib.sha256(PAYLOAD).hexdigest(),
                                    "url": server.url("/m/model.bin")}},
        },
        "test",
    )


def test_download_verifies_and_lands_in_the_cache(server, cache):
    a = _asset(server)
    root = a.path()
    assert root == cache / a.name
    assert (root / "model.bin").read_bytes() == PAYLOAD
    assert not (root / "model.bin.part").exists()
    assert server.requests == [("/m/model.bin", None)]


def test_cache_hit_needs_no_network(server, cache):
    a = _asset(server)
    a.path()
    server.httpd.shutdown()  # the network is gone
    server.requests.clear()
    assets._hash_memo.clear()
    assert (a.path() / "model.bin").read_bytes() == PAYLOAD  # re-verified from disk
    assert server.requests == []


def test_checksum_mismatch_is_refused_and_nothing_is_kept(server, cache):
    a = _asset(server, sha="0" * 64)
    with pytest.raises(ChecksumMismatchError, match="expected 0000"):
        a.path()
    d = cache / a.name
    assert not (d / "model.bin").exists() and not (d / "model.bin.part").exists()


def test_corrupted_cached_file_is_refused(server, cache):
    a = _asset(server)
    root = a.path()
    with open(root / "model.bin", "r+b") as fh:
        fh.seek(10)
        fh.write(b"XX")
    assets._hash_memo.clear()
    with pytest.raises(ChecksumMismatchError, match="delete it to download it again"):
        a.path()


def test_interrupted_download_resumes_from_the_part_file(server, cache):
    a = _asset(server)
    server.cut_after = 100_000
    with pytest.raises(AssetError, match="bytes kept .* the next try resumes"):
        a.path()
    part = cache / a.name / "model.bin.part"
    assert part.stat().st_size == 100_000
    assert not (cache / a.name / "model.bin").exists()
    root = a.path()  # second try: a Range request for the rest
    assert (root / "model.bin").read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/m/model.bin", "bytes=100000-")
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(server, cache):
    a = _asset(server)
    server.cut_after = 50_000
    with pytest.raises(AssetError):
        a.path()
    server.honour_range = False  # answers 200 with the whole file
    root = a.path()
    assert (root / "model.bin").read_bytes() == PAYLOAD  # not the 50 kB prefix twice


def test_complete_part_file_is_finished_on_416(server, cache):
    a = _asset(server)
    d = cache / a.name
    d.mkdir(parents=True)
    (d / "model.bin.part").write_bytes(PAYLOAD)
    assert (a.path() / "model.bin").read_bytes() == PAYLOAD
    assert server.requests[-1][1] == f"bytes={len(PAYLOAD)}-"


def test_http_error_says_how_to_provide_the_file(server, cache):
    a = assets._parse_asset(
        {"name": "gone", "source": "url", "format": "test",
         "files": {"x.bin": {"sha256": "1" * 64, "url": server.url("/nope")}}},
        "test",
    )
    with pytest.raises(AssetError, match="HTTP 404"):
        a.path()
    msg = a.missing_message(None)
    assert server.url("/nope") in msg and "SPEECHQE_ASSET_GONE" in msg and "--asset gone=" in msg
    with pytest.raises(AssetError, match="copy them there"):
        a.path(download=False)
