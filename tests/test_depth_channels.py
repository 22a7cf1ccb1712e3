"""A depth image stored with three channels is read one way everywhere: training/evaluation
(edge_mm.datasets) and the runtime's folder source (runtime.sources.folder) both go through
edge_mm.datasets.depth_to_single_channel."""

import cv2
import numpy as np
import pytest

from edge_mm.datasets import RgbdFolderDataset, depth_to_single_channel
from edge_mm.errors import DatasetError
from edge_mm.rgbd import RgbdPreprocess, depth_png_to_unit
from runtime.sources import open_source

SIZE = (24, 32)


def _colour_depth() -> np.ndarray:
    """A 3-channel 8-bit depth image whose channels differ (a re-saved or tinted release)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, SIZE + (3,), dtype=np.uint8)


def test_three_channels_become_luma_and_equal_channels_keep_their_value():
    bgr = _colour_depth()
    np.testing.assert_array_equal(depth_to_single_channel(bgr, "d.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    grey = bgr[..., 1]
    for image in (np.dstack([grey] * 3), np.dstack([grey] * 3 + [np.full(SIZE, 255, np.uint8)])):
        np.testing.assert_array_equal(depth_to_single_channel(image, "d.png"), grey)
    millimetres = np.dstack([np.full(SIZE, 1234, np.uint16)] * 3)
    np.testing.assert_array_equal(depth_to_single_channel(millimetres, "d.png"), millimetres[..., 0])
    assert depth_to_single_channel(grey, "d.png") is grey
    with pytest.raises(DatasetError, match="single-channel"):
        depth_to_single_channel(np.zeros(SIZE + (3, 2), np.uint8), "d.png")


def test_training_and_the_runtime_folder_source_read_the_same_depth(tmp_path):
    for sub in ("RGB", "depth"):
        (tmp_path / sub).mkdir()
    colour_depth = _colour_depth()
    cv2.imwrite(str(tmp_path / "RGB" / "a.png"), np.full(SIZE + (3,), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "depth" / "a.png"), colour_depth)
    expected = cv2.cvtColor(colour_depth, cv2.COLOR_BGR2GRAY)

    spec = RgbdPreprocess(size=(32, 32))
    _, unit, _ = RgbdFolderDataset(tmp_path, spec, with_gt=False).read_raw(0)
    np.testing.assert_array_equal(unit, depth_png_to_unit(expected, spec, True))

    with open_source(f"folder:{tmp_path}") as source:
        frame = source.read()
    np.testing.assert_array_equal(frame.meta["depth_png"], expected)  # not channel 0 any more
    assert not np.array_equal(expected, colour_depth[..., 0])  # the two rules would differ here
