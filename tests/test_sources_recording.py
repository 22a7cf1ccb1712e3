"""recording:FILE playback: the real D435 .bag and .db3 files written by the SDK's own recorder."""

import datetime

import numpy as np
import pytest
from data_gen import write_rs_recording
from support import pyrealsense2_or_skip

from edge_mm.errors import SourceError, UsageError
from runtime.sources import open_source
from runtime.sources.recording import RecordingSource


@pytest.fixture(autouse=True)
def rs():
    return pyrealsense2_or_skip()


def _raw_sdk_colour(rs, path):
    """The file's first colour frame exactly as the SDK stores it, read without our code."""
    pipe, cfg = rs.pipeline(), rs.config()
    cfg.enable_device_from_file(str(path), repeat_playback=False)
    cfg.enable_stream(rs.stream.color)
    profile = pipe.start(cfg)
    playback = profile.get_device().as_playback()
    playback.pause()
    playback.set_real_time(False)
    playback.seek(datetime.timedelta(0))
    playback.resume()
    try:
        frame = pipe.wait_for_frames(2000).get_color_frame()
        return np.asanyarray(frame.get_data()).copy(), str(frame.get_profile().format())
    finally:
        pipe.stop()


# --- the real D435 recording ------------------------------------------------------------------


def _read_all(uri, **options):
    with open_source(uri, **options) as source:
        return source, list(source)


def test_d435_bag_plays_its_one_frame_with_plausible_depth(d435_bag):
    source, frames = _read_all(f"recording:{d435_bag}")
    # The file holds one colour frame (and two depth frames): one Frame, delivered once.
    assert len(frames) == 1
    frame = frames[0]
    assert frame.index == 0
    assert frame.color.shape == (480, 640, 3) and frame.color.dtype == np.uint8 and frame.color.flags.c_contiguous
    assert frame.depth_m.shape == (480, 640) and frame.depth_m.dtype == np.float32
    assert frame.color.flags.owndata and frame.depth_m.flags.owndata  # copies, not views into SDK frames
    # Depth scale comes from the file's depth sensor: 1 mm on a D435.
    assert frame.meta["depth_scale"] == pytest.approx(0.001, rel=1e-6)
    assert frame.meta["serial"] == "728612070259"
    depth = frame.depth_m
    valid = depth > 0
    stats = {
        "valid_fraction": float(valid.mean()),
        "min_m": float(depth[valid].min()),
        "median_m": float(np.median(depth[valid])),
        "max_m": float(depth[valid].max()),
        "centre_m": float(depth[240, 320]),
    }
    print("D435 frame depth:", stats)
    assert stats["valid_fraction"] > 0.9  # a D435 indoor frame after alignment
    assert 0.2 < stats["min_m"] < stats["median_m"] < stats["max_m"] < 10.0
    assert stats["centre_m"] == pytest.approx(1.563, abs=0.002)  # the research sheet's reading
    # Depth is a multiple of the depth scale (z16 units), never anything in between.
    units = depth[valid] / frame.meta["depth_scale"]
    assert np.abs(units - np.rint(units)).max() < 1e-3


def test_d435_bag_colour_is_converted_from_rgb8_to_bgr(rs, d435_bag):
    raw, fmt = _raw_sdk_colour(rs, d435_bag)
    assert fmt == "format.rgb8"  # what the file says it holds
    _, frames = _read_all(f"recording:{d435_bag}")
    assert frames[0].meta["color_format"] == "rgb8"
    np.testing.assert_array_equal(frames[0].color, raw[..., ::-1])
    assert not np.array_equal(frames[0].color, raw)  # the channels really differ in this scene


def test_d435_bag_is_deterministic_and_ends_cleanly(d435_bag):
    runs = []
    for _ in range(2):
        source, frames = _read_all(f"recording:{d435_bag}")
        runs.append(frames)
    (a,), (b,) = runs
    np.testing.assert_array_equal(a.color, b.color)
    np.testing.assert_array_equal(a.depth_m, b.depth_m)
    assert a.timestamp_ms == b.timestamp_ms == pytest.approx(360713.523)


def test_reading_past_the_end_keeps_returning_none(d435_bag):
    with RecordingSource(str(d435_bag)) as source:
        assert source.read() is not None
        assert source.read() is None
        assert source.read() is None


# --- generated .db3 recordings ------------------------------------------------------------------


@pytest.fixture(scope="module")
def db3_recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "plane.db3"
    written = write_rs_recording(path, frames=12, size=(48, 64), color_format="bgr8")
    return path, written


def test_db3_every_frame_once_in_order_with_values(db3_recording):
    path, written = db3_recording
    _, frames = _read_all(f"recording:{path}")
    assert [f.index for f in frames] == list(range(len(written)))
    assert [f.meta["color_frame_number"] for f in frames] == [w.frame_number for w in written]
    assert [f.meta["depth_frame_number"] for f in frames] == [w.frame_number for w in written]
    for frame, truth in zip(frames, written):
        assert frame.timestamp_ms == pytest.approx(truth.timestamp_ms, abs=1e-3)
        np.testing.assert_array_equal(frame.color, truth.bgr)
        valid = frame.depth_m > 0
        # rs.align leaves a few rounding holes even for identical intrinsics; the rest is exact.
        assert valid.mean() > 0.85
        assert np.abs(frame.depth_m[valid] - truth.depth_m).max() <= 0.0005 + 1e-6  # half a z16 step
        np.testing.assert_allclose(frame.depth_m[valid], truth.depth_units[valid] * 0.001, rtol=1e-6)
    assert frames[-1].timestamp_ms > frames[0].timestamp_ms


def test_db3_rgb8_recording_is_converted_to_bgr(tmp_path):
    path = tmp_path / "rgb.db3"
    written = write_rs_recording(path, frames=3, color_format="rgb8")
    _, frames = _read_all(f"recording:{path}")
    assert len(frames) == 3
    for frame, truth in zip(frames, written):
        assert frame.meta["color_format"] == "rgb8"
        np.testing.assert_array_equal(frame.color, truth.bgr)


def test_db3_depth_scale_is_read_from_the_file(tmp_path):
    path = tmp_path / "units.db3"
    written = write_rs_recording(path, frames=2, depth_units=0.0001)  # 0.1 mm units
    _, frames = _read_all(f"recording:{path}")
    assert frames[0].meta["depth_scale"] == pytest.approx(0.0001, rel=1e-5)
    valid = frames[0].depth_m > 0
    assert np.abs(frames[0].depth_m[valid] - written[0].depth_m).max() <= 0.00005 + 1e-6


def test_db3_playback_is_deterministic(db3_recording):
    path, _ = db3_recording
    first = [(f.meta["color_frame_number"], f.depth_m.copy()) for f in _read_all(f"recording:{path}")[1]]
    second = [(f.meta["color_frame_number"], f.depth_m.copy()) for f in _read_all(f"recording:{path}")[1]]
    assert [n for n, _ in first] == [n for n, _ in second]
    for (_, a), (_, b) in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_db3_loop_replays_with_continuing_index(db3_recording):
    path, written = db3_recording
    n = len(written)
    with open_source(f"recording:{path}", loop=True) as source:
        frames = [source.read() for _ in range(2 * n + 3)]
    assert [f.index for f in frames] == list(range(2 * n + 3))
    assert [f.meta["color_frame_number"] for f in frames] == [i % n for i in range(2 * n + 3)]
    assert [f.meta["loop"] for f in frames] == [i // n for i in range(2 * n + 3)]


def test_db3_filters_run_in_order_and_fill_holes(db3_recording):
    path, _ = db3_recording
    _, raw = _read_all(f"recording:{path}")
    _, filtered = _read_all(f"recording:{path}", filters=["hole_filling", "spatial", "temporal"])
    assert len(filtered) == len(raw)
    for a, b in zip(raw, filtered):
        assert b.depth_m.shape == a.depth_m.shape
        # Hole filling before alignment cannot fill alignment's own holes, but must not lose pixels.
        assert (b.depth_m > 0).mean() >= (a.depth_m > 0).mean() - 0.02
        # A flat plane stays (nearly) where it was through disparity-domain smoothing.
        valid = (a.depth_m > 0) & (b.depth_m > 0)
        assert np.median(np.abs(b.depth_m[valid] - a.depth_m[valid])) < 0.01


def test_decimation_keeps_depth_on_the_colour_grid(db3_recording):
    path, _ = db3_recording
    _, frames = _read_all(f"recording:{path}", filters=["decimation"])
    assert frames and all(f.depth_m.shape == f.color.shape[:2] for f in frames)


# --- bad inputs -------------------------------------------------------------------------------


def test_missing_recording_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"recording:{tmp_path / 'nope.db3'}")


def test_recording_without_depth_names_what_it_has(tmp_path):
    path = tmp_path / "colour_only.db3"
    write_rs_recording(path, frames=2, with_depth=False)
    with pytest.raises(SourceError, match=r"no depth stream \(it has: color 64x48 bgr8 @30\)"):
        open_source(f"recording:{path}")


def test_recording_without_colour_names_what_it_has(tmp_path):
    path = tmp_path / "depth_only.db3"
    write_rs_recording(path, frames=2, with_color=False)
    with pytest.raises(SourceError, match=r"no colour stream \(it has: depth 64x48 z16 @30\)"):
        open_source(f"recording:{path}")


def test_corrupt_recording_is_a_source_error(tmp_path):
    path = tmp_path / "junk.db3"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(SourceError, match="cannot read recording"):
        open_source(f"recording:{path}")


def test_unknown_option_and_filter_are_usage_errors(db3_recording):
    path, _ = db3_recording
    with pytest.raises(UsageError, match="no option"):
        open_source(f"recording:{path}", colour_space="lab")
    with pytest.raises(UsageError, match="unknown RealSense filter"):
        open_source(f"recording:{path}", filters=["sharpen"])


def test_the_sdk_recorder_refuses_bag_output(tmp_path):
    """Why --record insists on .db3: librealsense 2.58+ writes ROS2 .db3 only."""
    with pytest.raises(RuntimeError, match="must have .db3 extension"):
        write_rs_recording(tmp_path / "x.bag", frames=1)
