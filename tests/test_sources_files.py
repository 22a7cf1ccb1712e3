"""folder:DIR and synthetic[:SEED] sources, and URI parsing."""

import time

import cv2
import numpy as np
import pytest

from edge_mm.datasets import write_synthetic_folder
from edge_mm.errors import DatasetError, SourceError, UsageError
from edge_mm.synthetic import SceneGenerator
from runtime.sources import open_source, parse_source_uri

SIZE = (48, 64)


# --- URIs -------------------------------------------------------------------------------------


def test_uris_parse_to_sources_and_options(tmp_path):
    assert parse_source_uri("realsense") == ("realsense", {})
    assert parse_source_uri("realsense:0123") == ("realsense", {"serial": "0123"})
    assert parse_source_uri("recording:a/b.db3") == ("recording", {"path": "a/b.db3"})
    assert parse_source_uri("x/y.BAG") == ("recording", {"path": "x/y.BAG"})
    assert parse_source_uri("folder:data") == ("folder", {"root": "data"})
    assert parse_source_uri(str(tmp_path)) == ("folder", {"root": str(tmp_path)})
    assert parse_source_uri("synthetic") == ("synthetic", {})
    assert parse_source_uri("synthetic:7") == ("synthetic", {"seed": 7})
    for bad in ("webcam", "synthetic:x", "recording:", "folder:"):
        with pytest.raises(UsageError):
            parse_source_uri(bad)


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_frames_are_the_generator_scenes_with_ground_truth():
    generator = SceneGenerator(size=SIZE, seed=5)
    with open_source("synthetic:5", size=SIZE, count=4) as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2, 3]
    for i, frame in enumerate(frames):
        scene = generator.generate(i)
        np.testing.assert_array_equal(frame.color, scene.bgr)
        np.testing.assert_array_equal(frame.depth_m, scene.depth_m)
        np.testing.assert_array_equal(frame.meta["mask"], scene.mask)
        assert frame.meta["objects"] == scene.objects and frame.meta["objects"]
        assert frame.depth_m.dtype == np.float32 and frame.color.flags.c_contiguous
        assert (frame.depth_m == 0).any() and (frame.depth_m > 0).mean() > 0.5  # sensor-like holes
    assert frames[1].timestamp_ms > frames[0].timestamp_ms
    assert not source.live


def test_synthetic_seed_changes_the_scenes():
    with open_source("synthetic:1", size=SIZE, count=1) as a, open_source("synthetic:2", size=SIZE, count=1) as b:
        assert not np.array_equal(a.read().color, b.read().color)


def test_synthetic_fps_paces_frames_and_makes_the_source_live():
    with open_source("synthetic", size=SIZE, count=6, fps=50.0) as source:
        assert source.live
        start = time.perf_counter()
        frames = list(source)
        elapsed = time.perf_counter() - start
    assert len(frames) == 6
    assert elapsed >= 5 / 50.0  # at least 5 periods between 6 frames (upper bound not asserted)


def test_synthetic_bad_options_are_usage_errors():
    with pytest.raises(UsageError):
        open_source("synthetic", count=-1)
    with pytest.raises(UsageError, match="generator option"):
        open_source("synthetic", generator_options={"sky": True})


# --- folder -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder") / "synth"
    write_synthetic_folder(root, count=3, seed=4, size=SIZE)
    return root


def test_folder_of_16bit_millimetres_gives_metres_and_gt(synthetic_folder):
    generator = SceneGenerator(size=SIZE, seed=4)
    with open_source(f"folder:{synthetic_folder}") as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2]
    for i, frame in enumerate(frames):
        scene = generator.generate(i)
        assert frame.meta["name"] == scene.name and frame.meta["depth_kind"] == "metric"
        np.testing.assert_array_equal(frame.color, scene.bgr)  # PNG is lossless
        np.testing.assert_allclose(frame.depth_m, scene.depth_m, atol=1e-6)  # same millimetres
        assert ((frame.depth_m == 0) == (scene.depth_m == 0)).all()  # holes stay holes
        np.testing.assert_array_equal(frame.meta["mask"], scene.mask)


def test_folder_of_8bit_relative_depth_keeps_order_and_polarity(tmp_path):
    (tmp_path / "RGB").mkdir()
    (tmp_path / "depth").mkdir()
    depth8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (SIZE[0], 1))  # brighter to the right
    for name in ("b", "a"):
        cv2.imwrite(str(tmp_path / "RGB" / f"{name}.jpg"), np.full(SIZE + (3,), 90, np.uint8))
        cv2.imwrite(str(tmp_path / "depth" / f"{name}.png"), depth8)
    with open_source(f"folder:{tmp_path}") as source:
        frames = list(source)
    assert [f.meta["name"] for f in frames] == ["a", "b"]  # name order
    depth = frames[0].depth_m
    assert frames[0].meta["depth_kind"] == "relative"
    np.testing.assert_array_equal(frames[0].meta["depth_png"], depth8)
    assert (depth > 0).all() and depth.max() <= 1.0  # no value is mistaken for a hole
    assert (np.diff(depth[0]) < 0).all()  # near is bright in the file -> bright = smaller distance
    with open_source(f"folder:{tmp_path}", png_near_is_bright=False) as source:
        assert (np.diff(source.read().depth_m[0]) > 0).all()


def test_folder_loop_continues_the_index(synthetic_folder):
    with open_source(f"folder:{synthetic_folder}", loop=True) as source:
        frames = [source.read() for _ in range(7)]
    assert [f.index for f in frames] == list(range(7))
    assert [f.meta["name"] for f in frames][3:6] == [f.meta["name"] for f in frames][:3]


def test_folder_with_unpaired_files_names_them(tmp_path):
    (tmp_path / "RGB").mkdir()
    (tmp_path / "depth").mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(tmp_path / "RGB" / f"{name}.png"), np.zeros(SIZE + (3,), np.uint8))
    for name in ("a", "d"):
        cv2.imwrite(str(tmp_path / "depth" / f"{name}.png"), np.zeros(SIZE, np.uint16))
    with pytest.raises(
        DatasetError, match=r"depth missing for 2 RGB image\(s\): b, c.*1 depth file\(s\) without an RGB image: d"
    ):
        open_source(f"folder:{tmp_path}")


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "RGB").mkdir()
    with pytest.raises(DatasetError, match="no depth subfolder"):
        open_source(f"folder:{tmp_path}")
    (tmp_path / "depth").mkdir()
    (tmp_path / "RGB" / "x.png").write_bytes(b"not a png")
    cv2.imwrite(str(tmp_path / "depth" / "x.png"), np.zeros(SIZE, np.uint16))
    with open_source(f"folder:{tmp_path}") as source:
        with pytest.raises(DatasetError, match="not a valid image"):
            source.read()


def test_closed_source_cannot_be_read(synthetic_folder):
    source = open_source(f"folder:{synthetic_folder}")
    source.close()
    with pytest.raises(SourceError, match="was closed"):
        source.read()
