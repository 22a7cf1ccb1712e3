"""An MJPEG stream over HTTP with a small status page (standard library only).

    /          status page: the live stream and the run's numbers (refreshed from /stats)
    /stream    multipart/x-mixed-replace JPEG stream of the annotated frames
    /frame.jpg the latest annotated frame
    /stats     the run's statistics as JSON

It binds to 127.0.0.1 unless told otherwise: the stream shows a camera, so exposing it to the
network is a deliberate choice (`--serve 0.0.0.0:8080`). Each client gets the newest frame when it
is ready for one, so a slow client skips frames instead of holding the pipeline back. JPEG encoding
runs for every frame only while a stream client watches (else once a second, for /frame.jpg).
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from edge_mm.errors import UsageError

from .base import Sink

log = logging.getLogger("edge_mm.runtime.mjpeg")

DEFAULT_HOST = "127.0.0.1"
BOUNDARY = "edgemmframe"
JPEG_QUALITY = 80
IDLE_REFRESH_S = 1.0  # how often /frame.jpg is refreshed while no stream client watches


def parse_host_port(text: str) -> Tuple[str, int]:
    """'HOST:PORT', ':PORT' or 'PORT' -> (host, port); the host defaults to 127.0.0.1, port 0 = any free one."""
    value = str(text).strip()
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = "", value
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"--serve {text!r}: give HOST:PORT or PORT, e.g. 127.0.0.1:8080 or 8080") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--serve {text!r}: the port must be 0-65535")
    return host, port


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edge-mm-run</title>
<style>body{{font-family:sans-serif;background:#111;color:#eee;margin:1em}}img{{max-width:100%;border:1px solid #444}}
td{{padding:0 1em 0 0}}</style></head>
<body><h3>edge-mm-run: {title}</h3>
<img src="/stream" alt="live stream">
<table id="stats"></table>
<p><a href="/stats">/stats</a> (JSON) &middot; <a href="/frame.jpg">/frame.jpg</a></p>
<script>
async function refresh() {{
  try {{
    const s = await (await fetch('/stats')).json();
    const rows = [['frames', s.frames], ['FPS', s.fps], ['latency p50 / p95 ms',
      s.latency_ms ? s.latency_ms.p50 + ' / ' + s.latency_ms.p95 : '-'], ['backend', s.backend], ['model', s.model]];
    document.getElementById('stats').innerHTML = rows.map(r => '<tr><td>' + r[0] + '</td><td>' + r[1] + '</td></tr>').join('');
  }} catch (e) {{}}
}}
setInterval(refresh, 1000); refresh();
</script></body></html>
"""


class _Latest:
    """The newest JPEG and its sequence number; readers wait for a newer one."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jpeg: Optional[bytes] = None
        self.seq = 0
        self.closed = False
        self.clients = 0

    def publish(self, jpeg: bytes) -> None:
        with self.cond:
            self.jpeg, self.seq = jpeg, self.seq + 1
            self.cond.notify_all()

    def wait_newer(self, seen: int, timeout: float) -> Tuple[Optional[bytes], int]:
        with self.cond:
            self.cond.wait_for(lambda: self.seq > seen or self.closed, timeout)
            return (self.jpeg if self.seq > seen else None), self.seq

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def _make_handler(latest: _Latest, stats: Callable[[], Dict[str, Any]], title: str):
    class Handler(BaseHTTPRequestHandler):
        server_version = "edge-mm-run"

        def log_message(self, fmt: str, *args: Any) -> None:  # keep the console for the pipeline's own lines
            log.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, body: bytes, content_type: str, status: int = HTTPStatus.OK) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(_PAGE.format(title=html.escape(title)).encode(), "text/html; charset=utf-8")
            elif path == "/stats":
                self._send(json.dumps(stats(), default=str).encode(), "application/json")
            elif path == "/frame.jpg":
                with latest.cond:
                    jpeg = latest.jpeg
                if jpeg is None:
                    self._send(b"no frame yet\n", "text/plain", HTTPStatus.SERVICE_UNAVAILABLE)
                else:
                    self._send(jpeg, "image/jpeg")
            elif path == "/stream":
                self._stream()
            else:
                self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)

        def _stream(self) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            with latest.cond:
                latest.clients += 1
            seen = 0
            try:
                while True:
                    jpeg, seq = latest.wait_newer(seen, timeout=1.0)
                    if latest.closed:
                        return
                    if jpeg is None:
                        continue
                    seen = seq
                    self.wfile.write(
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                        + jpeg
                        + b"\r\n"
                    )
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                pass  # the client went away
            finally:
                with latest.cond:
                    latest.clients -= 1

    return Handler


class MjpegServer(Sink):
    """Serves the annotated frames at http://HOST:PORT/ in a background thread until close()."""

    name = "mjpeg"

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 8080,
        stats: Optional[Callable[[], Dict[str, Any]]] = None,
        title: str = "saliency",
        quality: int = JPEG_QUALITY,
    ) -> None:
        self.latest = _Latest()
        self.quality = int(quality)
        handler = _make_handler(self.latest, stats or (lambda: {}), title)
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UsageError(
                f"cannot serve on {host}:{port} ({exc.strerror}); choose another --serve port (0 picks a free one)"
            ) from None
        self.server.daemon_threads = True  # streaming clients must not keep the process alive
        self.host, self.port = self.server.server_address[:2]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="mjpeg-server", daemon=True
        )
        self._thread.start()
        self._closed = False
        self._last_publish = float("-inf")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}/"

    @property
    def clients(self) -> int:
        with self.latest.cond:
            return self.latest.clients

    def write(self, result: Any) -> None:
        self.publish(result.image)

    def publish(self, image: np.ndarray, force: bool = False) -> None:
        """Encode and publish `image`: every frame while a stream client watches, else once a second (/frame.jpg)."""
        if self._closed:
            return
        now = time.monotonic()
        if not force and self.clients == 0 and now - self._last_publish < IDLE_REFRESH_S:
            return
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if ok:
            self.latest.publish(buf.tobytes())
            self._last_publish = now

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.latest.close()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def describe(self) -> str:
        return f"MJPEG stream {self.url}"
