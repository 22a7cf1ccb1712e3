import hashlib
import subprocess
import sys

import numpy as np
import pytest

from calib.build import main as calib_main
from calib.build import resolve_spec
from calib.readers import OrtCalibrationReader, TrtCalibrationBatches
from calib.sampling import sample
from calib.store import read_set, write_set
from edge_mm.errors import CalibrationError, UsageError
from edge_mm.registry import cdinet_spec, clip_image_spec, clip_text_spec
from edge_mm.rgbd import RgbdPreprocess, preprocess_rgbd
from edge_mm.synthetic import SceneGenerator

SMALL = RgbdPreprocess(size=(64, 64))


def _build(tmp_path, name, *extra):
    out = tmp_path / name
    assert calib_main(["--model", "cdinet-s", "--count", "4", "--seed", "3", "--out", str(out), "--quiet", *extra]) == 0
    return out


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = _build(tmp_path, "a.calib")
    b = _build(tmp_path, "b.calib")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    out = tmp_path / "c.calib"
    calib_main(["--model", "cdinet-s", "--count", "4", "--seed", "4", "--out", str(out), "--quiet"])
    assert out.read_bytes() != a.read_bytes()


def test_set_holds_the_runtime_preprocessing(tmp_path):
    spec = cdinet_spec("cdinet-s", SMALL)
    arrays = sample(spec, "synthetic", count=3, seed=7, progress=False)
    scene = SceneGenerator(size=(64, 64), seed=7).generate(2)
    rgb, depth = preprocess_rgbd(scene.bgr, scene.depth_m, SMALL)
    path = write_set(tmp_path / "s.calib", arrays, {"model": spec.name, "spec_digest": spec.digest()})
    loaded = read_set(path)
    assert loaded.manifest["count"] == 3 and loaded.manifest["arrays"]["rgb"]["shape"] == [3, 64, 64]
    batch = list(loaded.batches(8))[0]
    assert batch["rgb"].dtype == np.float32
    # Stored as float16: equal to the runtime's preprocessing within half-precision rounding.
    np.testing.assert_allclose(batch["rgb"][2], rgb, atol=1e-2, rtol=1e-3)
    np.testing.assert_allclose(batch["depth"][2], depth, atol=1e-2, rtol=1e-3)


def test_spec_mismatch_is_refused(tmp_path):
    path = _build(tmp_path, "a.calib")
    calib_set = read_set(path)
    calib_set.check_spec(resolve_spec("cdinet-s", "image"))
    with pytest.raises(CalibrationError, match="rebuild it"):
        calib_set.check_spec(cdinet_spec("cdinet-s", RgbdPreprocess(size=(320, 320))))
    with pytest.raises(CalibrationError, match="not for"):
        OrtCalibrationReader(calib_set, clip_image_spec("clip:ViT-B/32", 224))


def test_readers_walk_the_whole_set(tmp_path):
    calib_set = read_set(_build(tmp_path, "a.calib"))
    reader = OrtCalibrationReader(calib_set, resolve_spec("cdinet-s", "image"))
    feeds = []
    while (feed := reader.get_next()) is not None:
        feeds.append(feed)
    side = read_set(_build(tmp_path, "b.calib")).manifest["arrays"]["rgb"]["shape"][1]
    assert len(feeds) == 4 and feeds[0]["rgb"].shape == (1, 3, side, side)
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["depth"], feeds[0]["depth"])
    batches = list(TrtCalibrationBatches(calib_set, batch_size=3))
    assert len(batches) == 1 and batches[0]["rgb"].shape == (3, 3, side, side)  # the short tail is dropped


def test_clip_text_set_from_synthetic_captions(tmp_path):
    spec = clip_text_spec("clip:ViT-B/32")
    arrays = sample(spec, "synthetic", count=5, seed=0, progress=False)
    ids = arrays["input_ids"]
    assert ids.shape == (5, 77) and ids.dtype == np.int64
    assert (ids[:, 0] == 49406).all() and ((ids == 49407).sum(axis=1) == 1).all()


def test_clip_image_set_from_folder(tmp_path):
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), np.full((40, 60, 3), 40 * i, np.uint8))
    arrays = sample(clip_image_spec("clip:ViT-B/32", 32), f"folder:{tmp_path}", count=2, seed=0, progress=False)
    assert arrays["image"].shape == (2, 3, 32, 32)


def test_recording_source(tmp_path, d435_bag):
    spec = cdinet_spec("cdinet-s", SMALL)
    arrays = sample(spec, f"recording:{d435_bag}", count=1, seed=0, progress=False)
    assert arrays["rgb"].shape == (1, 3, 64, 64) and np.isfinite(arrays["depth"]).all()
    assert arrays["depth"].std() > 0.1  # real depth varies across the frame
    with pytest.raises(CalibrationError, match="has 1 samples but --count 2"):
        sample(spec, f"recording:{d435_bag}", count=2, seed=0, progress=False)


def test_bad_inputs(tmp_path, capsys):
    with pytest.raises(UsageError, match="unknown model"):
        calib_main(["--model", "yolo", "--out", str(tmp_path / "x.calib")])
    with pytest.raises(UsageError, match="not a calibration source"):
        calib_main(["--model", "cdinet-s", "--source", "webcam", "--out", str(tmp_path / "x.calib")])
    corrupt = tmp_path / "bad.calib"
    corrupt.write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match="corrupt"):
        read_set(corrupt)
    with pytest.raises(CalibrationError, match="no calibration set"):
        read_set(tmp_path / "missing.calib")
    assert not list(tmp_path.glob("x.calib*"))


def test_cli_error_exit_code(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "calib.build",
            "--model",
            "cdinet-s",
            "--count",
            "0",
            "--out",
            str(tmp_path / "x.calib"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and out.stderr.strip().startswith("error: --count 0")
    assert not (tmp_path / "x.calib").exists()


def test_cdinet_set_from_dataset_folder(tmp_path):
    from edge_mm.datasets import RgbdFolderDataset, write_synthetic_folder

    write_synthetic_folder(tmp_path / "ds", count=5, seed=2, size=(64, 64))
    spec = cdinet_spec("cdinet-s", SMALL)
    arrays = sample(spec, f"folder:{tmp_path / 'ds'}", count=2, seed=0, progress=False)
    dataset = RgbdFolderDataset(tmp_path / "ds", SMALL, with_gt=False)
    first = sorted(np.random.default_rng(0).choice(5, size=2, replace=False).tolist())[0]
    np.testing.assert_array_equal(arrays["depth"][0], dataset[first]["depth"])
    with pytest.raises(CalibrationError, match="has 5 samples but --count 9"):
        sample(spec, f"folder:{tmp_path / 'ds'}", count=9, seed=0, progress=False)


def test_a_set_built_by_name_matches_the_demo_weights_preprocessing():
    import json

    from edge_mm.registry import DEMO_WEIGHTS

    trained = json.loads(DEMO_WEIGHTS["cdinet-s"].with_suffix(".json").read_text())["preprocess"]
    spec = resolve_spec("cdinet-s", "image")
    assert RgbdPreprocess.from_dict(spec.preprocess) == RgbdPreprocess.from_dict(trained)
    # The full-size model has no demo weights: the default preprocessing.
    assert RgbdPreprocess.from_dict(resolve_spec("cdinet", "image").preprocess) == RgbdPreprocess()
