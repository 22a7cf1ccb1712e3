"""The outputs: MJPEG server, video file, events log, window detection and keys, config parsing."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest
from runtime_support import count_video_frames

from edge_mm.errors import UsageError
from runtime.sinks.events import EventsSink
from runtime.sinks.mjpeg import MjpegServer, parse_host_port
from runtime.sinks.video import VideoSink, partial_path
from runtime.sinks.window import Controls, gui_support, opencv_gui_backend


def _image(k, size=(120, 160)):
    img = np.zeros(size + (3,), np.uint8)
    img[..., 1] = 40 * k % 256
    cv2.putText(img, str(k), (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return img


# -- MJPEG ------------------------------------------------------------------------------------


def _read_one_part(port, timeout=10.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", "/stream")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type").startswith("multipart/x-mixed-replace; boundary=")
    boundary = resp.getheader("Content-Type").split("boundary=")[1]
    assert resp.fp.readline().strip() == f"--{boundary}".encode()
    headers = {}
    while True:
        line = resp.fp.readline().strip()
        if not line:
            break
        key, value = line.decode().split(":", 1)
        headers[key.strip().lower()] = value.strip()
    assert headers["content-type"] == "image/jpeg"
    jpeg = resp.fp.read(int(headers["content-length"]))
    conn.close()
    return jpeg


def test_mjpeg_server_status_page_stats_and_stream():
    server = MjpegServer("127.0.0.1", 0, stats=lambda: {"frames": 7, "fps": 12.5}, title="test <run>")
    stop = threading.Event()

    def feed():
        k = 0
        while not stop.is_set():
            server.publish(_image(k))
            k += 1
            time.sleep(0.02)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        page = urllib.request.urlopen(server.url, timeout=10).read().decode()
        assert '<img src="/stream"' in page and "test &lt;run&gt;" in page
        stats = json.loads(urllib.request.urlopen(server.url + "stats", timeout=10).read())
        assert stats == {"frames": 7, "fps": 12.5}
        jpeg = _read_one_part(server.port)
        frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert frame.shape == (120, 160, 3)
        still = urllib.request.urlopen(server.url + "frame.jpg", timeout=10)
        assert still.headers["Content-Type"] == "image/jpeg"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.url + "nope", timeout=10)
    finally:
        stop.set()
        feeder.join()
        server.close()
    with pytest.raises(OSError):  # the port is closed after close()
        urllib.request.urlopen(server.url, timeout=2)


def test_mjpeg_encodes_only_while_watched_and_rejects_bad_addresses():
    server = MjpegServer("127.0.0.1", 0)
    try:
        server.publish(_image(0))
        first = server.latest.seq
        server.publish(_image(1))  # nobody watching and < 1 s later: not encoded
        assert server.latest.seq == first == 1
        with pytest.raises(UsageError):
            MjpegServer("127.0.0.1", server.port)  # port taken
    finally:
        server.close()
    assert parse_host_port("8080") == ("127.0.0.1", 8080)
    assert parse_host_port(":0") == ("127.0.0.1", 0)
    assert parse_host_port("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_host_port("[::1]:9000") == ("::1", 9000)
    for bad in ("localhost:http", "1.2.3.4:70000", "abc"):
        with pytest.raises(UsageError):
            parse_host_port(bad)


# -- video and events -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["out.mp4", "out.avi"])
def test_video_appears_only_when_complete(tmp_path, name):
    path = tmp_path / "sub" / name
    sink = VideoSink(path, fps=15)
    for k in range(6):
        sink.write_image(_image(k))
        assert not path.exists()  # still being written, under the partial name
    sink.write_image(_image(6, size=(60, 80)))  # another size is resized to the first one's
    assert partial_path(path).exists()
    sink.close()
    assert path.exists() and not partial_path(path).exists()
    assert count_video_frames(path) == 7 and sink.frames_written == 7
    sink.close()  # idempotent


def test_video_errors_and_empty_runs(tmp_path):
    with pytest.raises(UsageError, match=r"\.mp4"):
        VideoSink(tmp_path / "x.gif")
    with pytest.raises(UsageError, match="folder"):
        VideoSink(tmp_path)
    (tmp_path / ".stale.partial.mp4").write_bytes(b"left by a killed run")
    sink = VideoSink(tmp_path / "stale.mp4")
    assert not (tmp_path / ".stale.partial.mp4").exists()
    sink.close()
    assert not (tmp_path / "stale.mp4").exists()  # no frame, no file


def test_events_lines_are_complete_json_and_flushed(tmp_path):
    from runtime.saliency import SaliencyResult
    from runtime.sources import Frame
    from runtime.stages.base import FrameResult
    from runtime.stages.saliency import SaliencyStage

    stage = SaliencyStage.__new__(SaliencyStage)  # its event fields need no model
    sink = EventsSink(tmp_path / "e.jsonl")
    for k in range(3):
        frame = Frame(_image(k), np.zeros((120, 160), np.float32), 33.0 * k, 0.0, index=k)
        result = FrameResult(frame, wall_time=1000.0 + k)
        result.done_time = 0.02  # captured at 0.0
        result.values["saliency"] = SaliencyResult(
            np.zeros((2, 2), np.float32), box=(1, 2, 3, 4), score=0.9, depth_m=1.25
        )
        if k:
            result.metrics["iou_vs_ground_truth"] = 0.5
        result.fields.update(stage.event_fields(result))  # as the pipeline does after each stage's finish
        sink.write(result)
        lines = (tmp_path / "e.jsonl").read_text().splitlines()  # readable while still open
        assert len(lines) == k + 1
    sink.close()
    rows = [json.loads(line) for line in lines]
    assert rows[1] == {
        "index": 1,
        "time": 1001.0,
        "timestamp_ms": 33.0,
        "latency_ms": 20.0,
        "box": [1, 2, 3, 4],
        "score": 0.9,
        "depth_m": 1.25,
        "area_frac": 0.0,
        "iou": 0.5,
    }
    assert "iou" not in rows[0]


# -- window -----------------------------------------------------------------------------------


def test_gui_detection():
    headless = "General configuration\n  GUI:                           NONE\n  Media I/O:\n"
    gtk = "  GUI:                           GTK3\n    GTK+:                        YES (ver 3.24.33)\n"
    old = (
        "  GUI: \n    QT:                          NO\n    GTK+ 3.x:                    YES (ver 3.22)\n  Media I/O:\n"
    )
    assert opencv_gui_backend(headless) == "NONE"
    assert opencv_gui_backend(gtk) == "GTK3"
    assert opencv_gui_backend(old) == "GTK+ 3.X"
    assert gui_support({}, headless, "linux")[0] is False
    assert gui_support({}, gtk, "linux") == (False, "there is no display (DISPLAY and WAYLAND_DISPLAY are unset)")
    assert gui_support({"DISPLAY": ":0"}, gtk, "linux") == (True, "")
    assert gui_support({"WAYLAND_DISPLAY": "wayland-0"}, gtk, "linux")[0] is True
    assert gui_support({}, "  GUI: COCOA\n", "darwin") == (True, "")
    ok, why = gui_support()  # this machine: the pip headless wheel
    if opencv_gui_backend() == "NONE":
        assert not ok and "opencv-python-headless" in why


def test_keys():
    c = Controls()
    assert c.handle_key(-1) is None
    assert c.handle_key(ord(" ")) == "pause" and c.paused
    assert c.handle_key(ord(" ")) == "resume" and not c.paused
    assert c.handle_key(ord("o")) == "overlay off" and not c.show_heatmap
    assert c.handle_key(ord("s")) == "snapshot" and c.snapshot_requested
    assert c.handle_key(ord("r")) == "record" and c.record_toggle_requested
    assert c.handle_key(ord("x")) is None
    assert c.handle_key(0x100000 | ord("q")) == "quit" and c.quit  # modifier bits from some backends
    assert Controls().handle_key(27) == "quit"
