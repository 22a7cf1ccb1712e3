import json
import os
import random

import cv2
import numpy as np
import pytest

import edge_mm.datasets as datasets_module
from edge_mm.datasets import SCENES_FILE, RgbdFolderDataset, depth_m_to_png16, write_synthetic_folder
from edge_mm.errors import DatasetError
from edge_mm.rgbd import RgbdPreprocess, depth_png_to_unit, preprocess_depth
from edge_mm.synthetic import SceneGenerator, as_sample

SPEC = RgbdPreprocess(size=(128, 128))


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image), path


def _layout(root, rgb_names, depth_names, gt_names, size=(8, 8)):
    """Tiny placeholder images under the given file names."""
    for folder, names in (("RGB", rgb_names), ("depth", depth_names), ("GT", gt_names)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            image = np.zeros(size + ((3,) if folder == "RGB" else ()), np.uint8)
            _write(root / folder / name, image)


def test_round_trip_of_written_folder_equals_preprocessing_the_scene(tmp_path):
    root = write_synthetic_folder(tmp_path / "synth", count=4, seed=5, start=10)
    dataset = RgbdFolderDataset(root, SPEC)
    generator = SceneGenerator(seed=5)
    assert len(dataset) == 4
    for item, index in zip(dataset, range(10, 14)):
        expected = as_sample(generator.generate(index), SPEC)
        assert item["name"] == expected["name"] and item["gt_size"] == (256, 256)
        # PNG colour is lossless and z16 millimetres are exactly the scene's depth grid.
        for key in ("rgb", "depth", "gt"):
            np.testing.assert_array_equal(item[key], expected[key], err_msg=key)
    manifest = [json.loads(line) for line in (root / SCENES_FILE).read_text().splitlines()]
    assert [m["index"] for m in manifest] == [10, 11, 12, 13]
    assert manifest[0]["objects"][0]["colour"] == generator.generate(10).objects[0]["colour"]
    raw_depth = cv2.imread(str(root / "depth" / f"{expected['name']}.png"), cv2.IMREAD_UNCHANGED)
    assert raw_depth.dtype == np.uint16


def test_jpeg_colour_round_trip_is_close(tmp_path):
    root = write_synthetic_folder(tmp_path / "jpg", count=1, seed=2, rgb_format="jpg")
    item = RgbdFolderDataset(root, SPEC)[0]
    expected = as_sample(SceneGenerator(seed=2).generate(0), SPEC)
    assert np.abs(item["rgb"] - expected["rgb"]).mean() < 0.05  # JPEG loss, in normalised units
    np.testing.assert_array_equal(item["depth"], expected["depth"])


def test_pairs_by_name_whatever_the_listing_or_sort_order(tmp_path, monkeypatch):
    # Sorted file names pair these wrongly ("a.c.png" < "a.png" but "a.bmp" < "a.c.png"),
    # which is how the official loaders misalign; pairing by name does not.
    generator = SceneGenerator(seed=9)
    scenes = {"a": generator.generate(0), "a.c": generator.generate(1)}
    depth8 = {}
    for name, scene in scenes.items():
        depth8[name] = (255 - np.clip(depth_m_to_png16(scene.depth_m) // 25, 0, 255)).astype(np.uint8)
        _write(tmp_path / "RGB" / f"{name}.png", scene.bgr)
        _write(tmp_path / "depth" / f"{name}.{'bmp' if name == 'a' else 'png'}", depth8[name])
        _write(tmp_path / "GT" / f"{name}.png", scene.mask)
    by_sort = [sorted(os.listdir(tmp_path / sub)) for sub in ("RGB", "depth")]
    assert [n.rsplit(".", 1)[0] for n in by_sort[0]] != [n.rsplit(".", 1)[0] for n in by_sort[1]]

    real_scandir = os.scandir

    class ShuffledScandir:
        def __init__(self, path):
            with real_scandir(path) as entries:
                self.entries = list(entries)
            random.Random(0).shuffle(self.entries)

        def __enter__(self):
            return iter(self.entries)

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(datasets_module.os, "scandir", ShuffledScandir)
    dataset = RgbdFolderDataset(tmp_path, SPEC)
    assert dataset.names == ["a", "a.c"]
    for index, name in enumerate(dataset.names):
        item = dataset[index]
        np.testing.assert_array_equal(item["rgb"], as_sample(scenes[name], SPEC)["rgb"])
        np.testing.assert_array_equal(item["gt"], as_sample(scenes[name], SPEC)["gt"])
        np.testing.assert_array_equal(item["depth"], preprocess_depth(depth_png_to_unit(depth8[name], SPEC), SPEC))
        assert dataset.paths(index)["depth"].stem == name


def test_missing_and_extra_files_are_listed_in_one_line(tmp_path):
    _layout(tmp_path, ["s1.jpg", "s2.jpg", "s3.jpg"], ["s1.png", "s3.png", "zz.png"], ["s1.png", "s2.png", "s3.png"])
    with pytest.raises(DatasetError) as info:
        RgbdFolderDataset(tmp_path, SPEC)
    message = str(info.value)
    assert "\n" not in message
    assert "depth missing for 1 RGB image(s): s2" in message
    assert "1 depth file(s) without an RGB image: zz" in message


def test_long_lists_are_cut_with_a_count(tmp_path):
    names = [f"img{i:02d}" for i in range(13)]
    _layout(tmp_path, [f"{n}.jpg" for n in names], [], [f"{n}.png" for n in names])
    with pytest.raises(DatasetError, match=r"depth missing for 13 RGB image\(s\): img00, .*img09 and 3 more"):
        RgbdFolderDataset(tmp_path, SPEC)


def test_corrupt_or_empty_image_names_the_file(tmp_path):
    root = write_synthetic_folder(tmp_path / "synth", count=2, seed=1)
    dataset = RgbdFolderDataset(root, SPEC)
    rgb_path = dataset.paths(1)["RGB"]
    rgb_path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(DatasetError, match=f"cannot read .*{rgb_path.name}: not a valid image"):
        dataset[1]
    dataset.paths(0)["GT"].write_bytes(b"")
    with pytest.raises(DatasetError, match=dataset.paths(0)["GT"].name):
        dataset[0]


def test_inference_only_folder_and_missing_subfolders(tmp_path):
    _layout(tmp_path, ["x.jpg"], ["x.png"], [], size=(20, 30))
    (tmp_path / "GT").rmdir()
    with pytest.raises(DatasetError, match="no GT subfolder"):
        RgbdFolderDataset(tmp_path, SPEC)
    item = RgbdFolderDataset(tmp_path, SPEC, with_gt=False)[0]
    assert item["gt"] is None and item["gt_size"] == (20, 30) and item["rgb"].shape == (3, 128, 128)
    with pytest.raises(DatasetError, match="does not exist"):
        RgbdFolderDataset(tmp_path / "nope", SPEC)


def test_eight_bit_depth_polarity_flag(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1))
    _write(tmp_path / "RGB" / "r.png", np.zeros((32, 64, 3), np.uint8))
    _write(tmp_path / "depth" / "r.jpg", cv2.cvtColor(ramp, cv2.COLOR_GRAY2BGR))  # colour JPEG depth, as some sets ship
    _write(tmp_path / "GT" / "r.png", np.zeros((32, 64), np.uint8))
    bright = RgbdFolderDataset(tmp_path, SPEC, depth_near_is_bright=True).read_raw(0)[1]
    dark = RgbdFolderDataset(tmp_path, SPEC, depth_near_is_bright=False).read_raw(0)[1]
    assert bright.shape == (32, 64)
    np.testing.assert_allclose(bright, 1.0 - dark, atol=1e-6)
    assert bright[:, -1].mean() > 0.9 and bright[:, 0].mean() < 0.1


def test_gt_of_another_size_and_duplicate_names_are_errors(tmp_path):
    _layout(tmp_path / "a", ["x.jpg"], ["x.png"], [], size=(20, 30))
    _write(tmp_path / "a" / "GT" / "x.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match="GT must have the RGB image's size"):
        RgbdFolderDataset(tmp_path / "a", SPEC)[0]
    _layout(tmp_path / "b", ["x.jpg", "x.png"], ["x.png"], ["x.png"])
    with pytest.raises(DatasetError, match="several images with the same name"):
        RgbdFolderDataset(tmp_path / "b", SPEC)


def test_write_synthetic_folder_refuses_to_clobber(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        write_synthetic_folder(tmp_path, count=1)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    out = write_synthetic_folder(tmp_path / "new", count=1)
    write_synthetic_folder(out, count=2, overwrite=True)
    assert len(RgbdFolderDataset(out, SPEC)) == 2
