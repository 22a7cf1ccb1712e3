import cv2
import numpy as np
import pytest

from edge_mm.cli_support import run_cli
from edge_mm.errors import UsageError
from edge_mm.rgbd import RgbdPreprocess, preprocess_gt, preprocess_rgbd
from edge_mm.synthetic import COLOURS, SHAPES, SceneGenerator, as_sample, contact_sheet, main

N_SCENES = 40


@pytest.fixture(scope="module")
def scenes():
    return SceneGenerator(seed=7).generate_batch(range(N_SCENES))


def _same(a, b):
    return (
        a.bgr.tobytes() == b.bgr.tobytes()
        and a.depth_m.tobytes() == b.depth_m.tobytes()
        and a.mask.tobytes() == b.mask.tobytes()
        and a.objects == b.objects
    )


def test_same_seed_and_index_give_identical_bytes_in_any_order():
    first = SceneGenerator(seed=3)
    second = SceneGenerator(seed=3)
    forward = [first.generate(i) for i in (0, 1, 2)]
    backward = [second.generate(i) for i in (2, 1, 0)][::-1]  # reused buffers must not leak between scenes
    assert all(_same(a, b) for a, b in zip(forward, backward))
    assert not _same(forward[0], forward[1])
    other_seed = SceneGenerator(seed=4).generate(0)
    assert other_seed.bgr.tobytes() != forward[0].bgr.tobytes()
    assert other_seed.depth_m.tobytes() != forward[0].depth_m.tobytes()


def test_scene_arrays_have_the_documented_types_and_ranges(scenes):
    for scene in scenes:
        assert scene.bgr.shape == (256, 256, 3) and scene.bgr.dtype == np.uint8
        assert scene.depth_m.shape == (256, 256) and scene.depth_m.dtype == np.float32
        assert scene.mask.shape == (256, 256) and scene.mask.dtype == np.uint8
        assert set(np.unique(scene.mask)) <= {0, 255} and (scene.mask > 0).any()
        assert np.isfinite(scene.depth_m).all() and scene.depth_m.min() >= 0 and scene.depth_m.max() < 10
        millimetres = scene.depth_m * 1000
        np.testing.assert_allclose(millimetres, np.rint(millimetres), atol=2e-3)
        assert scene.bgr.std() > 5  # textured, not a blank frame


def test_objects_use_the_fixed_vocabulary_and_match_the_mask(scenes):
    counts = set()
    for scene in scenes:
        counts.add(len(scene.objects))
        assert 1 <= len(scene.objects) <= 3
        assert len({o["colour"] for o in scene.objects}) == len(scene.objects)  # distinct colours
        covered = np.zeros_like(scene.mask, dtype=bool)
        for obj in scene.objects:
            assert obj["shape"] in SHAPES and obj["colour"] in COLOURS
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
            inside = scene.mask[y0:y1, x0:x1] > 0
            assert obj["area_px"] <= inside.sum() and obj["area_px"] > 0
            assert 0.3 <= obj["depth_m"] < 5.0
            covered[y0:y1, x0:x1] |= inside
        assert covered.sum() == (scene.mask > 0).sum()  # every mask pixel belongs to a described object
    assert counts == {1, 2, 3}


def test_salient_objects_are_nearer_than_their_surroundings(scenes):
    for scene in scenes:
        inside = scene.mask > 0
        valid = scene.depth_m > 0
        assert scene.depth_m[inside & valid].mean() < scene.depth_m[~inside & valid].mean()
        ring = cv2.dilate(scene.mask, np.ones((15, 15), np.uint8)) > 0
        ring &= ~inside & valid
        assert scene.depth_m[inside & valid].mean() < 0.8 * scene.depth_m[ring].mean()


def test_holes_fraction_and_switch(scenes):
    fractions = np.array([(s.depth_m == 0).mean() for s in scenes])
    # Occlusion shadows, dropouts, blobs and out-of-range pixels: a few percent, never most of a frame.
    assert 0.01 < fractions.mean() < 0.08, fractions.mean()
    assert fractions.min() > 0.002 and fractions.max() < 0.3
    clean = SceneGenerator(seed=7, holes=False).generate_batch(range(5))
    assert all((s.depth_m > 0).all() for s in clean)


def test_occlusion_shadows_fall_left_of_objects(scenes):
    left = right = 0
    for scene in scenes:
        obj = (scene.mask > 0).astype(np.uint8)
        band = np.ones((1, 5), np.uint8)
        just_left = (cv2.dilate(obj, band, anchor=(0, 0)) > 0) & (obj == 0)
        just_right = (cv2.dilate(obj, band, anchor=(4, 0)) > 0) & (obj == 0)
        holes = scene.depth_m == 0
        left += (holes & just_left).sum() / max(just_left.sum(), 1)
        right += (holes & just_right).sum() / max(just_right.sum(), 1)
    assert left > 5 * right, (left, right)


def test_depth_noise_grows_with_distance():
    noisy = SceneGenerator(seed=11, holes=False)
    exact = SceneGenerator(seed=11, holes=False, depth_noise=False)
    near_err, far_err = [], []
    for i in range(6):
        truth = exact.generate(i).depth_m
        error = np.abs(noisy.generate(i).depth_m - truth)
        near_err.append(error[truth < 1.5].mean() if (truth < 1.5).any() else np.nan)
        far_err.append(error[truth > 3.0].mean() if (truth > 3.0).any() else np.nan)
    assert np.nanmean(far_err) > 3 * np.nanmean(near_err)


def test_as_sample_goes_through_rgbd_preprocessing(scenes):
    spec = RgbdPreprocess(size=(128, 128))
    sample = as_sample(scenes[0], spec)
    rgb, depth = preprocess_rgbd(scenes[0].bgr, scenes[0].depth_m, spec)
    np.testing.assert_array_equal(sample["rgb"], rgb)
    np.testing.assert_array_equal(sample["depth"], depth)
    np.testing.assert_array_equal(sample["gt"], preprocess_gt(scenes[0].mask, spec))
    assert sample["name"] == scenes[0].name and sample["gt_size"] == (256, 256)


def test_other_sizes_and_bad_arguments():
    scene = SceneGenerator(size=(120, 160), seed=1, max_objects=1).generate(5)
    assert scene.bgr.shape == (120, 160, 3) and len(scene.objects) == 1
    with pytest.raises(UsageError):
        SceneGenerator(size=(16, 16))
    with pytest.raises(UsageError):
        SceneGenerator(max_objects=4)
    with pytest.raises(UsageError):
        SceneGenerator().generate(-1)


def test_contact_sheet_and_cli(tmp_path, scenes):
    sheet = contact_sheet(scenes[:2])
    assert sheet.dtype == np.uint8 and sheet.shape[0] > 2 * 256 and sheet.shape[1] > 4 * 256
    out = tmp_path / "sheet.png"
    assert main(["--out", str(out), "--count", "2"]) == 0
    assert cv2.imread(str(out)).shape[0] > 2 * 256
    assert run_cli(main, ["--out", str(out), "--count", "0"]) == 2
