"""`rosbag:PATH`: rosbag2 (sqlite3, mcap) and rosbag1 bags written with `rosbags` under realsense-ros
topic names and encodings, from synthetic scenes and from the repository's D435 recording, read back
through the rosbag source and compared with the same frames read through the other sources; the
pairing by stamp; calibration and indexing from a bag; and bad bags, each with its one-line error.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_support import COLOR, DEPTH, INFO, BagWriter, encode_color, encode_depth, image, write_bag

from edge_mm.errors import SourceError, UsageError
from runtime.sources import open_source, parse_source_uri
from runtime.sources.rosbag import RosbagSource

ROOT = Path(__file__).resolve().parents[1]
SIZE = (48, 64)  # (H, W): small bags, fast tests
INTRINSICS = {"width": 64, "height": 48, "fx": 52.5, "fy": 53.0, "ppx": 31.5, "ppy": 23.75, "coeffs": [0.1, 0, 0, 0, 0]}
T0 = 1_700_000_000_000_000_000


def _bag_path(tmp_path: Path, storage: str, name: str = "bag") -> Path:
    return tmp_path / (f"{name}.bag" if storage == "ros1" else name)


def _synthetic(count: int, seed: int = 3):
    """The synthetic source's own frames (the other source the rosbag is compared with)."""
    with open_source(f"synthetic:{seed}", size=SIZE, count=count) as source:
        return list(source)


def _expected_color(bgr: np.ndarray, encoding: str) -> np.ndarray:
    return np.repeat(bgr[:, :, 1:2], 3, axis=2) if encoding == "mono8" else bgr


# --- the same scenes through two sources ------------------------------------------------------


@pytest.mark.parametrize(
    "storage, color_encoding, depth_encoding",
    [("sqlite3", "rgb8", "16UC1"), ("mcap", "bgr8", "32FC1"), ("ros1", "mono8", "16UC1"), ("mcap", "rgb8", "16UC1")],
)
def test_synthetic_scenes_equal_the_synthetic_source(tmp_path, storage, color_encoding, depth_encoding):
    frames = _synthetic(5)
    stamps = [T0 + i * 33_333_333 for i in range(len(frames))]
    # Depth 1 ms after colour, as two sensors of one frameset are: well inside the default tolerance.
    rows = [(f.color, f.depth_m, s, s + 1_000_000) for f, s in zip(frames, stamps)]
    bag = write_bag(
        _bag_path(tmp_path, storage),
        rows,
        storage,
        color_encoding=color_encoding,
        depth_encoding=depth_encoding,
        intrinsics=INTRINSICS,
    )
    with open_source(f"rosbag:{bag}") as source:
        got = list(source)
        assert source.pairing == {
            "pairs": 5,
            "colour_without_depth": 0,
            "depth_unused": 0,
            "tolerance_ms": 20.0,
            "max_skew_ms": 1.0,
        }
        assert "within 20 ms" in source.summary
    assert [f.index for f in got] == list(range(5))
    for frame, want, stamp in zip(got, frames, stamps):
        np.testing.assert_array_equal(frame.color, _expected_color(want.color, color_encoding))
        # 16UC1 rounds to whole millimetres (the synthetic scenes are already millimetre-quantised).
        atol = 0.0 if depth_encoding == "32FC1" else 0.0005 + 1e-6
        np.testing.assert_allclose(frame.depth_m, want.depth_m, rtol=0, atol=atol)
        assert frame.meta["stamp_ns"] == stamp and frame.timestamp_ms == stamp / 1e6
        assert frame.meta["frame_id"] == "camera_color_optical_frame"
        assert frame.meta["depth_skew_ms"] == pytest.approx(1.0)
        assert frame.meta["intrinsics"]["fx"] == 52.5 and frame.meta["intrinsics"]["coeffs"][0] == 0.1
        assert (frame.depth_m == 0).sum() == (want.depth_m == 0).sum()  # holes stay holes


def test_the_d435_recording_through_a_rosbag_equals_the_recording_source(tmp_path, d435_bag):
    """The real D435 frame, written as realsense-ros would (rgb8 colour, 16UC1 aligned depth with
    the depth sensor's own stamp, camera_info), reads back equal to the librealsense source."""
    with open_source(f"recording:{d435_bag}") as source:
        frames = list(source)
    assert len(frames) == 1
    frame = frames[0]
    stamp = int(round(frame.timestamp_ms * 1e6))
    depth_stamp = int(round(frame.meta["depth_timestamp_ms"] * 1e6))
    skew_ms = (depth_stamp - stamp) / 1e6
    assert skew_ms > 20  # this recording's depth frame is ~100 ms after its colour frame
    for storage in ("sqlite3", "mcap", "ros1"):
        bag = write_bag(
            _bag_path(tmp_path, storage, f"d435-{storage}"),
            [(frame.color, frame.depth_m, stamp, depth_stamp)],
            storage,
            intrinsics=frame.meta["intrinsics"],
        )
        with pytest.raises(SourceError, match=r"within 20 ms \(nearest: 101\.6 ms\); raise tolerance_ms"):
            open_source(f"rosbag:{bag}")
        with open_source(f"rosbag:{bag}", tolerance_ms=150) as source:
            (got,) = list(source)
        np.testing.assert_array_equal(got.color, frame.color)
        z16 = np.round(frame.depth_m / frame.meta["depth_scale"])  # the recorded units
        np.testing.assert_allclose(got.depth_m, z16 * np.float32(0.001), rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.depth_m, frame.depth_m, rtol=1e-6, atol=0)
        assert got.meta["stamp_ns"] == stamp and got.meta["depth_skew_ms"] == pytest.approx(skew_ms)
        assert got.meta["intrinsics"]["fx"] == pytest.approx(frame.meta["intrinsics"]["fx"])
        assert got.meta["intrinsics"]["ppy"] == pytest.approx(frame.meta["intrinsics"]["ppy"])


# --- pairing, topics, determinism ------------------------------------------------------------


def test_pairing_by_stamp_every_pair_once_in_colour_order(tmp_path):
    """Depth written out of step with colour: a dropped depth, jitter, a depth too late for any colour.
    Each colour takes the nearest unused depth within the tolerance; the rest are counted, not played."""
    frames = _synthetic(6)
    bag = BagWriter(tmp_path / "b", "mcap")
    bag.topic(COLOR, "sensor_msgs/msg/Image")
    bag.topic(DEPTH, "sensor_msgs/msg/Image")
    h, w = SIZE
    colour_stamps = [T0 + i * 100_000_000 for i in range(6)]
    # depth for colour 0, 1 (+7 ms), none for 2, 3 (-4 ms), 4 (+12 ms), and one 60 ms after colour 5
    depth_plan = {0: 0, 1: 7, 3: -4, 4: 12, 5: 60}
    for i, (f, stamp) in enumerate(zip(frames, colour_stamps)):
        data, step = encode_color(f.color, "bgr8")
        bag.write(COLOR, stamp, image(bag.types, "mcap", stamp, "cam", i, data, step, h, w, "bgr8"))
        if i in depth_plan:
            ds = stamp + depth_plan[i] * 1_000_000
            # the depth of frame i carries frame i's depth values, so a wrong pairing shows in the arrays
            data, step = encode_depth(f.depth_m, "16UC1")
            bag.write(DEPTH, ds, image(bag.types, "mcap", ds, "cam", i, data, step, h, w, "16UC1"))
    bag.close()
    reads = []
    for _ in range(2):
        with open_source(f"rosbag:{tmp_path / 'b'}") as source:
            reads.append(list(source))
            pairing = source.pairing
    assert pairing == {
        "pairs": 4,
        "colour_without_depth": 2,
        "depth_unused": 1,
        "tolerance_ms": 20.0,
        "max_skew_ms": 12.0,
    }
    first, second = reads
    assert [f.meta["color_message"] for f in first] == [0, 1, 3, 4]
    for a, b in zip(first, second):  # deterministic: the same frames, the same order
        np.testing.assert_array_equal(a.color, b.color)
        np.testing.assert_array_equal(a.depth_m, b.depth_m)
    for got in first:
        want = frames[got.meta["color_message"]]
        np.testing.assert_array_equal(got.color, want.color)
        np.testing.assert_allclose(got.depth_m, want.depth_m, atol=0.0005 + 1e-6)
    with open_source(f"rosbag:{tmp_path / 'b'}", tolerance_ms=70) as source:
        assert [f.meta["color_message"] for f in source] == [0, 1, 3, 4, 5]


def test_older_realsense_ros_names_other_topics_and_loop(tmp_path):
    frames = [(f.color, f.depth_m, T0 + i * 33_000_000) for i, f in enumerate(_synthetic(3))]
    old = write_bag(
        tmp_path / "old",
        frames,
        "sqlite3",
        color_topic="/camera/color/image_raw",
        depth_topic="/camera/aligned_depth_to_color/image_raw",
        info_topic="/camera/color/camera_info",
        intrinsics=INTRINSICS,
    )
    with open_source(f"rosbag:{old}") as source:
        assert (source.color_topic, source.depth_topic) == (
            "/camera/color/image_raw",
            "/camera/aligned_depth_to_color/image_raw",
        )
        assert source.info_topic == "/camera/color/camera_info" and len(list(source)) == 3
    named = write_bag(tmp_path / "named", frames, "mcap", color_topic="/rgb", depth_topic="/d", info_topic=None)
    with open_source(f"rosbag:{named}", color_topic="/rgb", depth_topic="/d") as source:
        got = list(source)
    assert len(got) == 3 and "intrinsics" not in got[0].meta
    with RosbagSource(str(named), color_topic="/rgb", depth_topic="/d", loop=True) as source:
        looped = [source.read() for _ in range(7)]
    assert [f.index for f in looped] == list(range(7))
    assert [f.meta["loop"] for f in looped] == [0, 0, 0, 1, 1, 1, 2]
    np.testing.assert_array_equal(looped[3].color, looped[0].color)


def test_uri_forms():
    assert parse_source_uri("rosbag:runs/b") == ("rosbag", {"path": "runs/b"})
    assert parse_source_uri("x.mcap") == ("rosbag", {"path": "x.mcap"})
    with pytest.raises(UsageError, match="give a path"):
        parse_source_uri("rosbag:")


# --- calibration and indexing read bags through the same source ------------------------------


def test_calibration_samples_from_a_rosbag(tmp_path):
    from calib.sampling import sample
    from edge_mm.registry import cdinet_spec
    from edge_mm.rgbd import RgbdPreprocess, preprocess_rgbd

    frames = _synthetic(4)
    bag = write_bag(tmp_path / "b", [(f.color, f.depth_m, T0 + i * 33_000_000) for i, f in enumerate(frames)], "mcap")
    pre = RgbdPreprocess(size=(32, 32))
    arrays = sample(cdinet_spec("cdinet-s", pre), f"rosbag:{bag}", count=4, seed=0, progress=False)
    for i, f in enumerate(frames):
        rgb, depth = preprocess_rgbd(f.color, f.depth_m, pre)
        np.testing.assert_allclose(arrays["rgb"][i], rgb, atol=1e-6)
        np.testing.assert_allclose(arrays["depth"][i], depth, atol=1e-4)


def test_index_add_reads_a_rosbag(tmp_path, capsys):
    import json

    from retrieval_support import tiny_clip_artifact

    from runtime.retrieval.cli import main

    clip = tiny_clip_artifact(tmp_path)
    frames = _synthetic(3)
    bag = write_bag(tmp_path / "b", [(f.color, f.depth_m, T0 + i * 33_000_000) for i, f in enumerate(frames)], "mcap")
    argv = ["add", "--model", str(clip), "--index", str(tmp_path / "idx"), f"rosbag:{bag}", "--json"]
    for added, skipped in ((3, 0), (0, 3)):
        assert main(argv) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (report["added"], report["skipped"]) == (added, skipped)


# --- bad bags ------------------------------------------------------------------------------


def _good(tmp_path: Path, storage: str = "mcap", **options) -> Path:
    frames = [(f.color, f.depth_m, T0 + i * 33_000_000) for i, f in enumerate(_synthetic(3))]
    return write_bag(_bag_path(tmp_path, storage, "good"), frames, storage, intrinsics=INTRINSICS, **options)


def _frames(n=2, size=SIZE, period_ns=33_000_000):
    return [(np.full((*size, 3), 100, np.uint8), np.full(size, 1.0, np.float32), T0 + i * period_ns) for i in range(n)]


def _truncated_mcap(tmp_path):
    bag = _good(tmp_path, "mcap")
    storage = next(bag.glob("*.mcap"))
    data = storage.read_bytes()
    storage.write_bytes(data[: len(data) // 2])
    return bag


def _truncated_ros1(tmp_path):
    bag = _good(tmp_path, "ros1")
    data = bag.read_bytes()
    bag.write_bytes(data[: len(data) // 3])
    return bag


def _garbage(tmp_path):
    path = tmp_path / "robot.bag"
    path.write_bytes(b"#ROSBAG V2.0\n" + bytes(range(256)) * 4)
    return path


def _no_images(tmp_path):
    bag = BagWriter(tmp_path / "b", "sqlite3")
    bag.topic("/chatter", "std_msgs/msg/String")
    bag.write("/chatter", T0, bag.types["std_msgs/msg/String"](data="hello"))
    bag.close()
    return tmp_path / "b"


def _colour_only(tmp_path):
    return write_bag(tmp_path / "b", _frames(), "mcap", depth_topic=None)


def _unaligned_depth(tmp_path):
    return write_bag(tmp_path / "b", _frames(), "mcap", depth_topic="/camera/camera/depth/image_rect_raw")


def _size_mismatch(tmp_path):
    rows = [(c, np.full((24, 32), 1.0, np.float32), t) for c, _, t in _frames()]
    return write_bag(tmp_path / "b", rows, "sqlite3")


def _raw_color(encoding):
    def make(tmp_path):
        return write_bag(tmp_path / "b", _frames(), "mcap", color_encoding=encoding)

    return make


def _depth_8uc1(tmp_path):
    return write_bag(tmp_path / "b", _frames(), "mcap", depth_encoding="8UC1")


def _far_apart(tmp_path):
    rows = [(c, d, t, t + 50_000_000) for c, d, t in _frames(period_ns=200_000_000)]
    return write_bag(tmp_path / "b", rows, "mcap")


def _short_data(tmp_path):
    bag = BagWriter(tmp_path / "b", "mcap")
    bag.topic(COLOR, "sensor_msgs/msg/Image")
    bag.topic(DEPTH, "sensor_msgs/msg/Image")
    h, w = SIZE
    data, step = encode_color(np.zeros((*SIZE, 3), np.uint8), "rgb8")
    bag.write(COLOR, T0, image(bag.types, "mcap", T0, "cam", 0, data[: len(data) // 2], step, h, w, "rgb8"))
    data, step = encode_depth(np.ones(SIZE, np.float32), "16UC1")
    bag.write(DEPTH, T0, image(bag.types, "mcap", T0, "cam", 0, data, step, h, w, "16UC1"))
    bag.close()
    return tmp_path / "b"


def _folder_without_metadata(tmp_path):
    (tmp_path / "plain").mkdir()
    return tmp_path / "plain"


def _camera_info_as_colour(tmp_path):
    return _good(tmp_path)


BAD_BAGS = [
    # (make the bag, options, what the one line must say)
    (lambda p: p / "missing", {}, r"does not exist; give a rosbag2 folder or a rosbag1 \.bag file"),
    (_folder_without_metadata, {}, r"without metadata\.yaml, so not a rosbag2 bag"),
    (_garbage, {}, r"cannot read rosbag .*robot\.bag .*truncated or not a rosbag"),
    (_truncated_mcap, {}, r"(cannot read rosbag|is damaged) .*truncated"),
    (_truncated_ros1, {}, r"(cannot read rosbag|is damaged) .*truncated"),
    (_no_images, {}, r"has no sensor_msgs/msg/Image topic \(it has: /chatter \(std_msgs/msg/String, 1 msgs\)\)"),
    (
        _colour_only,
        {},
        r"has no depth topic at /camera/camera/aligned_depth_to_color/image_raw or .*"
        r"image topics: /camera/camera/color/image_raw",
    ),
    (
        _unaligned_depth,
        {},
        r"\(/camera/camera/depth/image_rect_raw is not aligned to colour\); record with realsense-ros "
        r"align_depth\.enable:=true",
    ),
    (_size_mismatch, {}, r"depth on .* is 32x24 but colour on .* is 64x48: depth is not aligned to colour"),
    (_raw_color("yuv422"), {}, r"colour encoding 'yuv422' is not supported; record rgb8, bgr8, mono8"),
    (_raw_color("16UC1"), {}, r"colour encoding '16UC1' is not supported"),
    (_depth_8uc1, {}, r"depth encoding '8UC1' is not supported; depth must be 16UC1, mono16, 32FC1"),
    (_far_apart, {}, r"no colour message on .* has a depth message on .* within 20 ms \(nearest: 50\.0 ms\)"),
    (_short_data, {}, r"image data is 4608 bytes, 64x48 rgb8 needs 9216 \(step 192\); the message is truncated"),
    (_good, {"color_topic": "/nope"}, r"has no topic /nope \(color_topic\); it has: /camera/camera/"),
    (
        _camera_info_as_colour,
        {"color_topic": INFO},
        r"color_topic .*camera_info in rosbag .* holds sensor_msgs/msg/CameraInfo, not sensor_msgs/msg/Image",
    ),
]


@pytest.mark.parametrize("make, options, says", BAD_BAGS, ids=lambda v: getattr(v, "__name__", None))
def test_bad_bags_are_one_line_errors(tmp_path, make, options, says):
    bag = make(tmp_path)
    with pytest.raises(SourceError) as info:
        with open_source(f"rosbag:{bag}", **options) as source:
            list(source)
    message = str(info.value)
    assert "\n" not in message
    assert re.search(says, message), message


def test_a_bad_bag_in_edge_mm_run_is_one_line_and_exit_2(tmp_path, oracle_artifact):
    bag = _colour_only(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "--model", str(oracle_artifact), "--camera", f"rosbag:{bag}"]
        + ["--headless", "--out", str(tmp_path / "r.mcap")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no depth topic" in lines[0] and "/camera/camera/color/image_raw" in lines[0]
    assert not (tmp_path / "r.mcap").exists()


def test_missing_rosbags_is_an_install_hint(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_rosbags(name, *args, **kwargs):
        if name.startswith("rosbags"):
            raise ImportError("No module named 'rosbags'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rosbags)
    with pytest.raises(UsageError, match=r"need the `rosbags` package .*pip install 'edge-mm\[ros\]'"):
        open_source(f"rosbag:{tmp_path}")


@pytest.mark.parametrize("storage, little_endian", [("mcap", True), ("mcap", False), ("ros1", True)])
def test_stamps_read_from_raw_messages_equal_the_decoded_headers(storage, little_endian):
    """Pass 1 reads stamps from the raw bytes (no image decoding); they must equal the decoded header's."""
    from ros_support import _store

    from runtime import rosmsg

    store = _store(storage)
    data, step = encode_color(np.zeros((2, 3, 3), np.uint8), "rgb8")
    stamp = 1_712_345_678_987_654_321
    msg = image(store.types, storage, stamp, "cam", 7, data, step, 2, 3, "rgb8")
    if storage == "ros1":
        raw = store.serialize_ros1(msg, "sensor_msgs/msg/Image")
    else:
        raw = store.serialize_cdr(msg, "sensor_msgs/msg/Image", little_endian=little_endian)
    assert rosmsg.raw_header_stamp_ns(bytes(raw), ros2=storage != "ros1") == stamp
    with pytest.raises(ValueError):
        rosmsg.raw_header_stamp_ns(b"\x07\x00", ros2=True)


def test_edge_mm_run_takes_topic_names_from_the_config_source_table(tmp_path, oracle_artifact, capsys):
    from runtime.cli import main

    frames = [(f.color, f.depth_m, T0 + i * 33_000_000) for i, f in enumerate(_synthetic(3))]
    bag = write_bag(tmp_path / "named", frames, "sqlite3", color_topic="/rgb", depth_topic="/d", info_topic=None)
    config = tmp_path / "run.toml"
    config.write_text(
        f'camera = "rosbag:{bag}"\n\n[source]\ncolor_topic = "/rgb"\ndepth_topic = "/d"\ntolerance_ms = 5\n'
    )
    events = tmp_path / "e.jsonl"
    argv = ["--config", str(config), "--model", str(oracle_artifact), "--headless", "--events", str(events)]
    assert main(argv) == 0
    assert "rosbag: 3 pairs of /rgb + /d (stamps within 5 ms" in capsys.readouterr().out
    assert len(events.read_text().splitlines()) == 3
