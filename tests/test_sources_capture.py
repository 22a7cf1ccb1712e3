"""CaptureThread: newest-frame slot for live sources, blocking queue for files, errors, stopping."""

import queue
import threading
import time

import pytest

from edge_mm.datasets import write_synthetic_folder
from edge_mm.errors import DatasetError, SourceError
from runtime.sources import CaptureThread, NewestFrameSlot, open_source

SIZE = (32, 48)


def test_slot_keeps_only_the_newest_item_and_counts_drops():
    slot = NewestFrameSlot()
    for i in range(5):
        slot.put(i)
        assert len(slot) == 1
    assert slot.get(timeout=0.1) == 4
    assert slot.dropped == 4 and len(slot) == 0
    with pytest.raises(queue.Empty):
        slot.get(timeout=0.05)


def test_slot_end_marker_waits_for_the_last_frame_to_be_taken():
    slot = NewestFrameSlot()
    slot.put("frame")
    done = threading.Event()
    threading.Thread(target=lambda: (slot.put_last("end"), done.set()), daemon=True).start()
    assert not done.wait(0.2)  # the marker does not overwrite the untaken frame
    assert slot.get(timeout=1) == "frame"
    assert slot.get(timeout=1) == "end"
    assert slot.dropped == 0


def test_live_mode_drops_stale_frames_for_a_slow_consumer():
    source = open_source("synthetic", size=SIZE, count=None, fps=200.0)  # a 200 fps "camera"
    seen, occupancy = [], []
    with CaptureThread(source) as capture:
        assert capture.live
        for _ in range(8):
            frame = capture.get(timeout=5)
            seen.append(frame.index)
            time.sleep(0.05)  # a 20 fps consumer
            occupancy.append(len(capture._slot))
    assert not capture._thread.is_alive()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # newest first, never an old one again
    assert seen[-1] - seen[0] > len(seen)  # frames were skipped ...
    assert capture.dropped > 0  # ... and counted
    assert max(occupancy) <= 1  # the slot never holds more than one frame
    # Every frame the source produced was either taken or counted as dropped.
    assert capture._slot.put_count == len(seen) + capture.dropped


def test_file_mode_processes_every_frame_once_in_order(tmp_path):
    root = write_synthetic_folder(tmp_path / "f", count=6, seed=1, size=SIZE)
    source = open_source(f"folder:{root}")
    got = []
    with CaptureThread(source, queue_size=2) as capture:
        assert not capture.live
        for frame in capture:
            time.sleep(0.03)  # slower than reading: the reader must wait, not drop
            got.append((frame.index, frame.meta["name"]))
    assert [i for i, _ in got] == list(range(6))
    assert len({name for _, name in got}) == 6
    assert capture.dropped == 0 and capture.frames_read == 6
    assert capture.get() is None  # stays at the end


def test_recording_through_the_capture_thread_is_complete(tmp_path):
    pytest.importorskip("pyrealsense2", reason="pyrealsense2 does not import here")
    from data_gen import write_rs_recording

    path = tmp_path / "r.db3"
    written = write_rs_recording(path, frames=8)
    with CaptureThread(open_source(f"recording:{path}")) as capture:
        numbers = []
        for frame in capture:
            time.sleep(0.02)
            numbers.append(frame.meta["color_frame_number"])
    assert numbers == [w.frame_number for w in written]


def test_source_errors_reach_the_consumer_after_the_good_frames(tmp_path):
    root = write_synthetic_folder(tmp_path / "f", count=4, seed=2, size=SIZE)
    third = sorted((root / "RGB").iterdir())[2]
    third.write_bytes(b"broken")
    with CaptureThread(open_source(f"folder:{root}")) as capture:
        assert capture.get(timeout=5).index == 0
        assert capture.get(timeout=5).index == 1
        with pytest.raises(DatasetError, match="not a valid image"):
            capture.get(timeout=5)
        assert capture.get() is None
    assert source_closed(capture)


def test_open_errors_also_reach_the_consumer(tmp_path):
    from runtime.sources.folder import FolderSource

    capture = CaptureThread(FolderSource(str(tmp_path / "missing"))).start()
    with pytest.raises(SourceError, match="does not exist"):
        capture.get(timeout=5)
    capture.stop()


def test_stop_ends_a_thread_blocked_on_a_full_queue(tmp_path):
    root = write_synthetic_folder(tmp_path / "f", count=10, seed=3, size=SIZE)
    source = open_source(f"folder:{root}")
    reads = []
    real_read = source.read
    source.read = lambda: reads.append(1) or real_read()
    # A generous join bound: a stop that failed to wake the reader would leave it alive afterwards.
    capture = CaptureThread(source, queue_size=1, join_timeout_s=60.0).start()
    capture.get(timeout=5)
    while len(reads) < 3:  # one frame taken, one queued, the third blocked on the full queue
        time.sleep(0.01)
    capture.stop()
    assert not capture._thread.is_alive() and source_closed(capture)
    assert len(reads) == 3  # the blocked put was abandoned: no frame read after the stop


def test_stop_ends_an_endless_live_source():
    capture = CaptureThread(open_source("synthetic", size=SIZE, fps=100.0)).start()
    assert capture.get(timeout=5) is not None
    capture.stop()
    assert not capture._thread.is_alive()
    assert capture.get() is None


def test_get_times_out_with_a_source_error():
    capture = CaptureThread(open_source("synthetic", size=SIZE, fps=0.2)).start()  # one frame per 5 s
    try:
        with pytest.raises(SourceError, match="no frame within"):
            capture.get(timeout=0.3)
    finally:
        capture.stop()


def source_closed(capture: CaptureThread) -> bool:
    return capture.source._closed and not capture.source._opened


def test_get_starts_the_thread_itself():
    capture = CaptureThread(open_source("synthetic", size=SIZE, count=3))
    try:
        assert [f.index for f in capture] == [0, 1, 2]
    finally:
        capture.stop()
