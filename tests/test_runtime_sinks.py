"""The outputs: video file, events log, window detection and keys, config parsing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
from runtime_support import count_video_frames

from edge_mm.errors import EdgeMMError, UsageError
from runtime.sinks.events import EventsSink
from runtime.sinks.video import VideoSink, partial_path
from runtime.sinks.window import Controls, gui_support, opencv_gui_backend
from runtime.threads import HELPER_NICE


def _image(k, size=(120, 160)):
    img = np.zeros(size + (3,), np.uint8)
    img[..., 1] = 40 * k % 256
    cv2.putText(img, str(k), (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return img


# -- video and events -------------------------------------------------------------------------


@pytest.mark.parametrize("name,background", [("out.mp4", True), ("out.avi", True), ("out.mp4", False)])
def test_video_appears_only_when_complete(tmp_path, name, background):
    path = tmp_path / "sub" / name
    sink = VideoSink(path, fps=15, background=background)
    for k in range(6):
        sink.write_image(_image(k))
        assert not path.exists()  # still being written, under the partial name
    sink.write_image(_image(6, size=(60, 80)))  # another size is resized to the first one's
    assert sink.partial.exists() and sink.partial != partial_path(path)  # unique to each writer
    sink.close()
    assert path.exists() and not sink.partial.exists()
    assert count_video_frames(path) == 7 and sink.frames_written == 7
    sink.close()  # idempotent


class FailingWriter:
    """Wraps the sink's real cv2.VideoWriter: encodes `good` frames, then fails as a full disk would."""

    def __init__(self, real, good: int) -> None:
        self.real, self.good, self.calls, self.nice = real, good, 0, set()

    def write(self, image) -> None:
        self.calls += 1
        self.nice.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if sys.platform == "linux" else None)
        if self.calls > self.good:
            raise OSError("No space left on device")
        self.real.write(image)

    def release(self) -> None:
        self.real.release()


def _failing_after(sink, monkeypatch, good):
    holder = {}

    def open_then_wrap(image):
        VideoSink._open(sink, image)
        sink._writer = holder["writer"] = FailingWriter(sink._writer, good)

    monkeypatch.setattr(sink, "_open", open_then_wrap)
    return holder


def test_an_encoder_error_stops_the_writes_and_keeps_the_frames_before_it(tmp_path, monkeypatch):
    path = tmp_path / "v.avi"
    sink = VideoSink(path, fps=10)
    holder = _failing_after(sink, monkeypatch, good=3)
    with pytest.raises(EdgeMMError, match=r"encoding video .*v\.avi failed: No space left on device"):
        for k in range(100):  # the queue holds a few frames: the error reaches a write soon after
            sink.write_image(_image(k))
    assert k <= 3 + 4 + 1  # the good frames, then at most a full queue and the frame that met the error
    sink.close()  # already reported: close() only finishes the file
    assert count_video_frames(path) == 3 and sink.frames_written == 3
    if sys.platform == "linux":  # encoded on the sink's own thread, at helper priority
        assert holder["writer"].nice == {max(HELPER_NICE, os.getpriority(os.PRIO_PROCESS, 0))}


def test_an_encoder_error_after_the_last_write_is_raised_by_close(tmp_path, monkeypatch):
    path = tmp_path / "v.avi"
    sink = VideoSink(path, fps=10)
    _failing_after(sink, monkeypatch, good=1)
    sink.write_image(_image(0))
    sink.write_image(_image(1))  # its own encoding fails later, on the encoder's thread
    with pytest.raises(EdgeMMError, match="No space left on device"):
        sink.close()
    assert count_video_frames(path) == 1  # the frame encoded before the error is a valid video
    sink.close()  # idempotent, and silent once reported


def test_video_errors_and_empty_runs(tmp_path):
    with pytest.raises(UsageError, match=r"\.mp4"):
        VideoSink(tmp_path / "x.gif")
    with pytest.raises(UsageError, match="folder"):
        VideoSink(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a writer that is gone: its partial file is removed by the next writer
    stale = tmp_path / f".stale.mp4.{dead.pid}.0a1b2c3d.partial.mp4"
    stale.write_bytes(b"left by a killed run")
    live = tmp_path / ".stale.mp4.1.0a1b2c3d.partial.mp4"  # pid 1 runs: a live writer's file stays
    live.write_bytes(b"being written")
    sink = VideoSink(tmp_path / "stale.mp4")
    assert not stale.exists() and live.exists()
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
