"""runtime/web over HTTP without a browser: addresses, the guard, bad inputs, limits, slow clients.

The browser tests (test_web_browser.py) show the pages work; these show what the server refuses
and that refusing never stops the run.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib

import cv2
import numpy as np
import pytest
from retrieval_support import tiny_clip_artifact
from web_support import Served, wait_until

from edge_mm.errors import UsageError
from runtime.web.address import bind_socket, parse_host_port
from runtime.web.guard import HostRule, host_of
from runtime.web.upload import UploadError, decode_upload

# -- addresses ----------------------------------------------------------------------------------


def test_serve_addresses_parse_and_bad_ones_say_why():
    assert parse_host_port("8080") == ("127.0.0.1", 8080)
    assert parse_host_port(":0") == ("127.0.0.1", 0)
    assert parse_host_port("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_host_port("[::1]:9000") == ("::1", 9000)
    for bad, words in (("localhost:http", "HOST:PORT"), ("1.2.3.4:70000", "0-65535"), ("::1:80", "brackets")):
        with pytest.raises(UsageError, match=words):
            parse_host_port(bad)
    with pytest.raises(UsageError, match="does not resolve") as caught:
        bind_socket("nohost.invalid", 8080)
    assert "\n" not in str(caught.value)
    with pytest.raises(UsageError, match="not one of this machine's"):
        bind_socket("192.0.2.1", 8080)  # TEST-NET-1: never a local address
    taken = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(UsageError, match="another program uses the port"):
            bind_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_ipv6_loopback_binds_where_the_machine_has_ipv6():
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6")
    try:
        sock = bind_socket("::1", 0)
    except UsageError as exc:
        pytest.skip(f"no IPv6 loopback on this machine: {exc}")
    assert sock.family == socket.AF_INET6 and sock.getsockname()[1] > 0
    sock.close()


def test_host_rule_refuses_other_names():
    loop = HostRule("127.0.0.1")
    assert loop.allows("127.0.0.1:8080") and loop.allows("localhost:1") and loop.allows("[::1]:80")
    assert not loop.allows("evil.example") and not loop.allows("evil.example:8080") and not loop.allows(None)
    wild = HostRule("0.0.0.0", names=["robot.local"])
    assert wild.allows("10.1.2.3:8080") and wild.allows("robot.local") and wild.allows("[fe80::1]:80")
    assert not wild.allows("localhost.evil.example") and not wild.allows("robot.local.evil.example")
    assert host_of("[::1]:8080") == "::1" and host_of("Example.ORG:80") == "example.org"


# -- uploads ------------------------------------------------------------------------------------


def _png_header(width, height):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_uploads_are_checked_before_decoding():
    ok, png = cv2.imencode(".png", np.full((20, 30, 3), 200, np.uint8))
    assert decode_upload(png.tobytes()).shape == (20, 30, 3)
    cases = [
        (b"", 400, "empty"),
        (b"%PDF-1.4 not an image", 415, "not a JPEG or PNG"),
        (_png_header(100_000, 100_000) + b"\0" * 64, 413, "100000x100000"),  # a decompression bomb, refused unread
        (png.tobytes()[:40], 400, "could not be decoded"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 10, 400, "damaged"),
        (png.tobytes() + b"\0" * (9 << 20), 413, "MiB"),
    ]
    for data, status, words in cases:
        with pytest.raises(UploadError, match=words) as caught:
            decode_upload(data)
        assert caught.value.status == status


# -- a live run with its memory, attacked with bad requests ------------------------------------------------


@pytest.fixture(scope="module")
def live_run(oracle_artifact, tmp_path_factory):
    base = tmp_path_factory.mktemp("web-live")
    clip = tiny_clip_artifact(base)
    argv = ["-m", "runtime.cli", "--model", str(oracle_artifact), "--headless", "--stats-interval", "0"]
    argv += ["--camera", "synthetic:2", "--loop", "--fps", "10", "--size", "160x120", "--serve", "127.0.0.1:0"]
    argv += ["--clip", str(clip), "--index", str(base / "memory"), "--index-every", "0", "--clip-rate", "5"]
    with Served(argv) as served:
        yield served


def _request(served, method, path, body=None, headers=None):
    host, port = served.base[len("http://") :].rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        headers = {"Host": f"{host}:{port}", **(headers or {})}
        if body is not None:
            headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        if body is not None:
            conn.send(body)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def _memory_items(served):
    status, _, body = _request(served, "GET", "/api/memory")  # 404 until the CLIP stage is up
    return json.loads(body)["items"] if status == 200 else 0


def _frames(served):
    return json.loads(_request(served, "GET", "/api/info")[2])["frames"]


def test_bad_requests_get_4xx_with_a_message_and_the_run_goes_on(live_run):
    served = live_run
    wait_until(lambda: _memory_items(served) >= 2, what="a remembered crop")
    before = _frames(served)
    ok, png = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
    cases = [
        ("GET", "/?q=" + "x" * 3000, None, {}, 414, "longer than"),
        ("GET", "/static/../../runtime/cli.py", None, {}, 404, "no such page"),
        ("GET", "/static/%2e%2e/%2e%2e/cli.py", None, {}, 404, "no such page"),
        ("GET", "/static/..%2f..%2fweb%2fserver.py", None, {}, 404, "no such page"),
        ("GET", "/etc/passwd", None, {}, 404, "no such page"),
        ("DELETE", "/", None, {}, 405, "Method Not Allowed"),
        ("POST", "/api/search/image", b"\0" * (9 << 20), {}, 413, "over"),
        ("POST", "/api/search/image", b"just some text", {}, 415, "not a JPEG or PNG"),
        ("POST", "/api/search/image?k=0", png.tobytes(), {}, 400, "out of range"),
        ("GET", "/api/search?q=", None, {}, 400, "empty"),
        ("GET", "/api/search?q=%20%20", None, {}, 400, "empty"),
        ("GET", "/api/search?q=red&k=0", None, {}, 400, "out of range"),
        ("GET", "/api/search?q=red&k=101", None, {}, 400, "out of range"),
        ("GET", "/api/search?q=red&k=abc", None, {}, 400, "whole numbers"),
        ("GET", "/api/search?q=red&page=-1", None, {}, 400, "out of range"),
        ("GET", "/api/search?q=red&k=100&page=10", None, {}, 400, "out of range"),
        ("GET", "/api/search?q=" + "word%20" * 200, None, {}, 400, "characters"),
        ("GET", "/thumb/999999.jpg", None, {}, 404, "no item"),
        ("GET", "/thumb/-1.jpg", None, {}, 404, "no such page"),
        ("POST", "/api/control", b"{not json", {}, 400, "JSON"),
        ("POST", "/api/control", b'{"paused": "yes"}', {}, 400, "true or false"),
        ("POST", "/api/control", b"x" * 5000, {}, 413, "over"),
        ("GET", "/stats", None, {"Host": "evil.example"}, 421, "Host"),
    ]
    for method, path, body, headers, status, words in cases:
        got, _, text = _request(served, method, path, body, headers)
        assert got == status and words.encode() in text, (method, path[:60], got, text[:200])
    assert _request(served, "GET", "/", headers={"Host": "localhost:1"})[0] == 200
    # Good requests still work, HEAD is answered (the stream's headers, no body).
    status, headers, body = _request(served, "HEAD", "/stream")
    assert status == 200 and headers["content-type"].startswith("multipart/x-mixed-replace") and body == b""
    status, _, body = _request(served, "HEAD", "/")
    assert status == 200 and body == b""
    status, _, body = _request(served, "GET", "/api/search?q=a%20red%20object&k=2")
    answer = json.loads(body)
    assert status == 200 and 1 <= len(answer["results"]) <= 2 and answer["results"][0]["thumb"]
    status, headers, jpeg = _request(served, "GET", answer["results"][0]["thumb"])
    assert status == 200 and cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
    status, _, body = _request(served, "POST", "/api/search/image?k=3", png.tobytes(), {"Content-Type": "image/png"})
    assert status == 200 and len(json.loads(body)["results"]) >= 1
    # The run went on through all of it.
    wait_until(lambda: _frames(served) > before + 5, what="the run to go on")
    assert served.proc.poll() is None


def test_idle_and_half_sent_connections_are_closed(live_run, monkeypatch):
    from runtime.web import server as web_server

    host, port = live_run.base[len("http://") :].rstrip("/").rsplit(":", 1)
    idle = [socket.create_connection((host, int(port))) for _ in range(30)]
    half = socket.create_connection((host, int(port)))
    half.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its headers
    for sock in idle + [half]:
        sock.settimeout(web_server.HEADER_TIMEOUT_S * 3)
    closed = [sock.recv(1) == b"" for sock in idle + [half]]
    assert all(closed)
    for sock in idle + [half]:
        sock.close()
    assert _request(live_run, "GET", "/health")[0] == 200


# -- tokens -------------------------------------------------------------------------------------


def _server_with_routes(**kwargs):
    from runtime.web.app import base_routes, make_app
    from runtime.web.server import WebServer

    return WebServer(make_app(base_routes("memory.html")), **kwargs)


def test_every_route_but_health_needs_the_token():
    token = "a-token-of-enough-length-123"
    server = _server_with_routes(host="127.0.0.1", port=0, token=token)
    try:
        url = server.url
        for path in ("", "static/web.css", "nope"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(url + path, timeout=10)
            assert refused.value.code == 401, path
        assert urllib.request.urlopen(url + "health", timeout=10).status == 200
        wrong = urllib.request.Request(url, headers={"Authorization": "Bearer " + token[:-1] + "x"})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(wrong, timeout=10)
        good = urllib.request.Request(url + "static/web.css", headers={"Authorization": "Bearer " + token})
        assert urllib.request.urlopen(good, timeout=10).status == 200
        cookie = urllib.request.Request(url + "static/web.css", headers={"Cookie": f"edge_mm_token={token}"})
        assert urllib.request.urlopen(cookie, timeout=10).status == 200
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("GET", f"/?token={token}")
        response = conn.getresponse()
        assert response.status == 303 and response.getheader("Location") == "/"
        assert f"edge_mm_token={token}" in response.getheader("Set-Cookie") and "HttpOnly" in response.getheader(
            "Set-Cookie"
        )
        conn.close()
    finally:
        server.close()
    with pytest.raises(UsageError, match="at least 16"):
        _server_with_routes(host="127.0.0.1", port=0, token="short")


def test_a_bind_beyond_loopback_makes_a_token():
    server = _server_with_routes(host="0.0.0.0", port=0)
    try:
        assert server.token and len(server.token) >= 24 and server.url_with_token.endswith(server.token)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=10)
        assert refused.value.code == 401
        assert urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=10).status == 200
    finally:
        server.close()
    loopback = _server_with_routes(host="127.0.0.1", port=0)
    try:
        assert loopback.token is None and urllib.request.urlopen(loopback.url, timeout=10).status == 200
    finally:
        loopback.close()


# -- slow clients and the client cap ---------------------------------------------------------------


def _pipeline(oracle_artifact, sinks, frames, stats):
    from edge_mm.artifact import Artifact
    from runtime.backends.select import select_backend
    from runtime.pipeline import Pipeline
    from runtime.saliency import SaliencyModel
    from runtime.sources import open_source
    from runtime.stages.saliency import SaliencyStage

    backend = select_backend(Artifact(oracle_artifact), "ort-cpu", "fp32", threads=1).backend
    model = SaliencyModel(backend)
    source = open_source("synthetic:4", size=(120, 160), fps=30.0)
    return Pipeline(source, [SaliencyStage(model, label="load")], sinks, stats, max_frames=frames), source, backend


def test_twenty_viewers_some_stalled_never_hold_the_pipeline(oracle_artifact, monkeypatch):
    """A fixed budget of 150 paced frames with 20 stream clients (10 reading, 10 never reading) and
    /health polled throughout: every frame reaches the pipeline's outputs, readers get frames, and
    every health check is answered. (The FPS cost is measured in bench/bench_web.py.)"""
    from runtime import web
    from runtime.sinks.window import Controls
    from runtime.stats import PipelineStats
    from runtime.web.live import LiveView

    monkeypatch.setattr(web.live, "MAX_STREAM_CLIENTS", 20)
    stats = PipelineStats()
    view = LiveView("127.0.0.1", 0, stats=stats, controls=Controls(), title="load")
    pipeline, source, backend = _pipeline(oracle_artifact, [view], 150, stats)
    received = [0] * 10
    stop = threading.Event()
    health = {"ok": 0, "failed": 0}
    stalled = []

    def reader(slot):
        conn = http.client.HTTPConnection("127.0.0.1", view.server.port, timeout=30)
        conn.request("GET", "/stream")
        response = conn.getresponse()
        while not stop.is_set():
            line = response.fp.readline()
            if not line:
                return
            if line.lower().startswith(b"content-length:"):
                received[slot] += 1

    def poll_health():
        while not stop.is_set():
            try:
                urllib.request.urlopen(view.server.url + "health", timeout=5).read()
                health["ok"] += 1
            except OSError:
                health["failed"] += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(10)]
    threads.append(threading.Thread(target=poll_health, daemon=True))
    try:
        for _ in range(10):  # stalled viewers: ask for the stream, never read it
            sock = socket.create_connection(("127.0.0.1", view.server.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            stalled.append(sock)
        for t in threads:
            t.start()
        wait_until(lambda: view.frames.clients == 20, what="20 viewers")
        # A 21st viewer is told why it is refused.
        status = urllib.request.Request(view.server.url + "stream")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(status, timeout=10)
        assert refused.value.code == 503 and b"viewers" in refused.value.read()
        outcome = pipeline.run()
    finally:
        stop.set()
        view.close()
        source.close()
        backend.deactivate()
        for sock in stalled:
            sock.close()
    assert outcome.reason == "frame limit" and outcome.frames == 150 == stats.frames
    assert view.frames.offered == 150
    assert all(n > 0 for n in received), received
    assert health["ok"] > 0 and health["failed"] == 0, health


# -- the memory's thumbnails ---------------------------------------------------------------------------


def test_thumbnails_come_from_the_source_file_and_a_missing_one_shows_as_missing(tmp_path_factory, tmp_path):
    from retrieval_support import write_video

    from runtime.retrieval.embed import ClipEmbedder
    from runtime.retrieval.store import IndexStore
    from runtime.web.memory import Memory

    clip = tiny_clip_artifact(tmp_path_factory.mktemp("clip"))
    image = np.zeros((60, 80, 3), np.uint8)
    image[20:40, 30:50] = (0, 0, 255)
    kept, gone = tmp_path / "kept.png", tmp_path / "gone.png"
    cv2.imwrite(str(kept), image)
    cv2.imwrite(str(gone), image)
    video = write_video(tmp_path / "clip.avi", frames=10, fps=5.0)
    with ClipEmbedder.open(clip, backend="ort-cpu", threads=1, text="now") as embedder:
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(3, embedder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        items = [
            {"content_hash": "a", "path": str(kept), "source": "image", "box": [30, 20, 50, 40]},
            {"content_hash": "b", "path": str(gone), "source": "image"},
            {"content_hash": "c", "path": str(video), "source": "video", "frame_time": 1.0},
        ]
        with IndexStore(tmp_path / "idx", dim=embedder.dim, model_info=embedder.model_info, mode="a") as store:
            store.add(vectors, items)
        gone.unlink()
        memory = Memory(tmp_path / "idx", embedder)
        try:
            answer = memory.search_text("a red square", 3, 0)
            by_id = {hit["id"]: hit for hit in answer["results"]}
            assert sorted(by_id) == [0, 1, 2] and answer["items"] == 3 and not answer["more"]
            assert by_id[1]["thumb"] is None and by_id[1]["thumb_note"] == "source file missing"
            assert memory.thumbnail(1) == (None, "source file missing")
            crop, _ = memory.thumbnail(0)  # the padded square around the box: the red square in the middle
            decoded = cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_COLOR)
            h, w = decoded.shape[:2]
            assert h == w and decoded[h // 2, w // 2, 2] > 200 and decoded[h // 2, w // 2, 1] < 60
            frame, _ = memory.thumbnail(2)  # the video's frame at 1.0 s: grey 8 * 5 = 40
            decoded = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
            assert abs(int(decoded[-5, -5, 0]) - 40) < 12
            assert memory.thumbnail(7)[0] is None
        finally:
            memory.close()


def test_serve_flags_errors_are_one_line(oracle_artifact, capsys):
    from runtime.cli import main

    common = ["--model", str(oracle_artifact), "--headless", "--camera", "synthetic", "--frames", "2", "--quiet"]
    for argv, words in (
        (["--serve-token", "x" * 20], "add --serve"),
        (["--serve", "nohost.invalid:8080"], "does not resolve"),
        (["--serve", "192.0.2.1:8080"], "not one of this machine's"),
        (["--serve", "127.0.0.1:0", "--serve-token", "short"], "at least 16"),
    ):
        assert main(common + argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and words in err, (argv, err)
