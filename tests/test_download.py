"""edge_mm.download: verified, cached, atomic downloads from a local HTTP server (no network)."""

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from edge_mm.download import cache_dir, download_verified
from edge_mm.errors import DownloadError
from edge_mm.hashing import sha256_file

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, so the download takes several chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class FileServer:
    """Serves {path: bytes} on 127.0.0.1 in a thread and counts the requests it gets."""

    def __init__(self, files, truncate=False):
        self.files = files
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # A truncating server promises the whole body but sends half and hangs up.
                self.wfile.write(body[: len(body) // 2] if truncate else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_good_checksum_is_cached_and_not_fetched_again(tmp_path):
    with FileServer({"/models/abc/weights.bin": PAYLOAD}) as server:
        url = server.url + "/models/abc/weights.bin"
        path = download_verified(url, PAYLOAD_SHA, dest_dir=tmp_path, progress=False)
        assert path == tmp_path / "weights.bin" and path.read_bytes() == PAYLOAD
        again = download_verified(url, PAYLOAD_SHA.upper(), dest_dir=tmp_path, progress=False)
    assert again == path
    assert server.requests == ["/models/abc/weights.bin"]  # the second call used the cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_bad_checksum_leaves_nothing_in_the_cache(tmp_path):
    wrong = "0" * 64
    with FileServer({"/w.bin": PAYLOAD}) as server:
        with pytest.raises(DownloadError) as info:
            download_verified(server.url + "/w.bin", wrong, dest_dir=tmp_path, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"expected sha256 {wrong}" in message and f"got {PAYLOAD_SHA}" in message
    assert "nothing was cached" in message
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part


def test_cached_file_with_wrong_content_is_replaced(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"stale")
    with FileServer({"/w.bin": PAYLOAD}) as server:
        path = download_verified(server.url + "/w.bin", PAYLOAD_SHA, dest_dir=tmp_path, progress=False)
    assert server.requests == ["/w.bin"] and path.read_bytes() == PAYLOAD


def test_server_gone_is_a_clear_error(tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match=r"^cannot reach http://127\.0\.0\.1:\d+/w\.bin: .*refused") as info:
        download_verified(f"http://127.0.0.1:{port}/w.bin", PAYLOAD_SHA, dest_dir=tmp_path, progress=False, timeout=5)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_http_error_names_the_status(tmp_path):
    with FileServer({}) as server:
        with pytest.raises(DownloadError, match="HTTP 404"):
            download_verified(server.url + "/missing.bin", PAYLOAD_SHA, dest_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_truncated_download_leaves_nothing(tmp_path):
    with FileServer({"/w.bin": PAYLOAD}, truncate=True) as server:
        with pytest.raises(DownloadError, match=f"cut short: got {len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes"):
            download_verified(server.url + "/w.bin", PAYLOAD_SHA, dest_dir=tmp_path, progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_rejects_a_malformed_checksum(tmp_path):
    with pytest.raises(DownloadError, match="not a SHA-256"):
        download_verified("http://127.0.0.1:1/w.bin", "abc", dest_dir=tmp_path)


def test_default_destination_is_the_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_MM_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    with FileServer({"/a/b/file.dat": PAYLOAD}) as server:
        path = download_verified(server.url + "/a/b/file.dat", PAYLOAD_SHA, progress=False)
    assert path == tmp_path / "cache" / "file.dat" and sha256_file(path) == PAYLOAD_SHA
    monkeypatch.delenv("EDGE_MM_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "edge_mm"
