import json
import warnings

import cv2
import numpy as np
import pytest

from edge_mm.errors import ArtifactError, InputError, UsageError
from edge_mm.rgbd import (
    RgbdPreprocess,
    depth_png_to_unit,
    depth_to_unit,
    postprocess_saliency,
    postprocess_saliency_official,
    preprocess_depth,
    preprocess_gt,
    preprocess_rgb,
    preprocess_rgbd,
    preprocess_rgbd_batch,
    resize,
)

SPEC = RgbdPreprocess()
RAW = RgbdPreprocess(depth_range_m=None, quantize_depth_8bit=False)


# ---------------------------------------------------------------- spec


def test_spec_json_round_trip_and_defaults():
    back = RgbdPreprocess.from_dict(json.loads(json.dumps(SPEC.to_dict())))
    assert back == SPEC and hash(back) == hash(SPEC)
    assert SPEC.size == (256, 256) and SPEC.near_is_bright and SPEC.quantize_depth_8bit
    assert (SPEC.depth_mean, SPEC.depth_std) == (0.485, 0.229)
    custom = RgbdPreprocess(size=(320, 240), depth_range_m=None, near_is_bright=False, colour_order="bgr")
    assert RgbdPreprocess.from_dict(json.loads(json.dumps(custom.to_dict()))) == custom


def test_spec_rejects_bad_values_and_unknown_keys():
    with pytest.raises(UsageError, match="depth_range_m"):
        RgbdPreprocess(depth_range_m=(3.0, 1.0))
    with pytest.raises(UsageError, match="interpolation"):
        RgbdPreprocess(interpolation="lanczos9")
    with pytest.raises(UsageError, match="depth_scaling"):
        RgbdPreprocess(depth_range_m=None, depth_scaling="range")
    with pytest.raises(ArtifactError, match="unknown keys"):
        RgbdPreprocess.from_dict({**SPEC.to_dict(), "gamma": 2.2})
    with pytest.raises(ArtifactError, match="invalid"):
        RgbdPreprocess.from_dict({**SPEC.to_dict(), "size": [0, 256]})
    with pytest.raises(ArtifactError, match="JSON object"):
        RgbdPreprocess.from_dict([256, 256])
    with pytest.raises(UsageError, match="fractions"):
        RgbdPreprocess(size=(255.5, 256))


# ---------------------------------------------------------------- colour


def test_preprocess_rgb_values_channel_order_and_layout():
    bgr = np.empty((40, 60, 3), np.uint8)
    bgr[:] = (10, 20, 30)  # B, G, R
    out = preprocess_rgb(bgr, RgbdPreprocess(size=(32, 48)))
    assert out.shape == (3, 32, 48) and out.dtype == np.float32 and out.flags.c_contiguous
    expected = [(v / 255 - m) / s for v, m, s in zip((30, 20, 10), SPEC.rgb_mean, SPEC.rgb_std)]
    np.testing.assert_allclose(out.reshape(3, -1).mean(axis=1), expected, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 0, atol=1e-5)
    as_bgr = preprocess_rgb(bgr, RgbdPreprocess(size=(32, 48), colour_order="bgr"))
    assert as_bgr[0, 0, 0] == pytest.approx((10 / 255 - SPEC.rgb_mean[0]) / SPEC.rgb_std[0], abs=1e-5)


def test_antialiased_resize_is_close_to_pil_bilinear():
    # The official loaders resize with PIL bilinear, which antialiases when shrinking.
    image_module = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
    image = np.clip(base.astype(np.int16) + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8)
    pil = np.asarray(image_module.fromarray(image).resize((256, 256), image_module.BILINEAR)).astype(np.float64)
    ours = np.abs(resize(image, (256, 256), "bilinear", antialias=True) - pil).mean()
    plain = np.abs(resize(image, (256, 256), "bilinear", antialias=False) - pil).mean()
    assert ours < 1.5 and plain > 2 * ours, (ours, plain)


def test_views_with_odd_strides_are_accepted():
    rng = np.random.default_rng(6)
    bgr = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 3.0, (40, 120)).astype(np.float64)[:, ::2]  # float64, strided
    spec = RgbdPreprocess(size=(32, 32), depth_range_m=None)
    rgb, dep = preprocess_rgbd(bgr[:, ::-1], depth[:, ::-1], spec)
    rgb_ref, dep_ref = preprocess_rgbd(bgr[:, ::-1].copy(), depth[:, ::-1].astype(np.float32).copy(), spec)
    np.testing.assert_array_equal(rgb, rgb_ref)
    np.testing.assert_array_equal(dep, dep_ref)


def test_bad_colour_inputs_are_input_errors():
    for bad in (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), [1, 2]):
        with pytest.raises(InputError, match="BGR uint8"):
            preprocess_rgb(bad, SPEC)


# ---------------------------------------------------------------- depth


def test_depth_to_unit_min_max_polarity_and_holes():
    depth = np.array([[0.5, 1.0, 2.0, 0.0, np.nan, np.inf]], np.float32)
    near_bright = depth_to_unit(depth, RAW)
    np.testing.assert_allclose(near_bright, [[1.0, 1 - 0.5 / 1.5, 0.0, 0.0, 0.0, 0.0]], atol=1e-6)
    near_dark = depth_to_unit(depth, RgbdPreprocess(depth_range_m=None, near_is_bright=False, hole_value=0.25))
    np.testing.assert_allclose(near_dark, [[0.0, 0.5 / 1.5, 1.0, 0.25, 0.25, 0.25]], atol=1e-6)


def test_depth_to_unit_clips_to_range_and_range_scaling():
    depth = np.array([[0.1, 1.0, 3.0, 9.0]], np.float32)
    clipped = depth_to_unit(depth, RgbdPreprocess(depth_range_m=(0.5, 5.0), near_is_bright=False))
    # Clipped to [0.5, 5], then min-max over the frame: 0.5 -> 0, 5 -> 1.
    np.testing.assert_allclose(clipped, [[0.0, 0.5 / 4.5, 2.5 / 4.5, 1.0]], atol=1e-6)
    fixed = depth_to_unit(
        np.array([[1.0, 2.0]], np.float32),
        RgbdPreprocess(depth_range_m=(0.0, 4.0), depth_scaling="range", near_is_bright=False),
    )
    np.testing.assert_allclose(fixed, [[0.25, 0.5]], atol=1e-6)


def test_depth_to_unit_degenerate_frames_do_not_warn_or_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        holes = depth_to_unit(np.zeros((5, 7), np.float32), RgbdPreprocess(hole_value=0.3))
        flat = np.full((5, 7), 2.0, np.float32)
        flat[0, 0] = 0.0
        constant = depth_to_unit(flat, SPEC)
    np.testing.assert_array_equal(holes, np.full((5, 7), 0.3, np.float32))
    assert constant[0, 0] == 0.0 and np.all(constant.ravel()[1:] == 1.0)  # the near end when near_is_bright
    assert not np.isnan(preprocess_depth(holes, SPEC)).any()


def test_depth_input_checks():
    with pytest.raises(InputError, match="negative"):
        depth_to_unit(np.array([[1.0, -0.1]], np.float32), SPEC)
    with pytest.raises(InputError, match="depth_scale"):
        depth_to_unit(np.ones((4, 4), np.uint16), SPEC)
    with pytest.raises(InputError, match=r"\(H, W\)"):
        depth_to_unit(np.ones((4, 4, 1), np.float32), SPEC)


def test_depth_png_16bit_matches_metres_and_8bit_polarity():
    millimetres = np.array([[0, 500, 1000, 2500]], np.uint16)
    np.testing.assert_array_equal(
        depth_png_to_unit(millimetres, SPEC), depth_to_unit(millimetres.astype(np.float32) * np.float32(0.001), SPEC)
    )
    relative = np.array([[0, 51, 255]], np.uint8)
    np.testing.assert_allclose(depth_png_to_unit(relative, SPEC, png_near_is_bright=True), [[0.0, 0.2, 1.0]], atol=1e-6)
    np.testing.assert_allclose(
        depth_png_to_unit(relative, SPEC, png_near_is_bright=False), [[1.0, 0.8, 0.0]], atol=1e-6
    )
    with pytest.raises(InputError, match="uint8"):
        depth_png_to_unit(np.zeros((3, 3), np.int32), SPEC)


def test_preprocess_depth_quantizes_and_normalizes_like_the_official_loader():
    unit = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    out = preprocess_depth(unit, RgbdPreprocess(size=(64, 64)))
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    levels = (out * 0.229 + 0.485) * 255  # back to 8-bit grey levels
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-3)
    np.testing.assert_allclose(levels[0], np.rint(unit * 255), atol=1e-3)
    plain = preprocess_depth(unit, RgbdPreprocess(size=(64, 64), quantize_depth_8bit=False))
    np.testing.assert_allclose(plain[0], (unit - 0.485) / 0.229, atol=1e-5)


def test_preprocess_rgbd_resizes_other_depth_sizes_with_nearest():
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    half = rng.uniform(0.5, 4.0, (48, 64)).astype(np.float32)
    half[10:14, 20:30] = 0.0
    rgb, depth = preprocess_rgbd(bgr, half, RgbdPreprocess(size=(96, 128)))
    full = cv2.resize(half, (128, 96), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(depth, preprocess_depth(depth_to_unit(full, SPEC), RgbdPreprocess(size=(96, 128))))
    assert rgb.shape == (3, 96, 128)
    with pytest.raises(InputError, match="aspect"):
        preprocess_rgbd(bgr, np.ones((96, 96), np.float32), SPEC)


def test_batch_is_contiguous_and_equals_single_frames():
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (60, 80, 3), dtype=np.uint8) for _ in range(3)]
    depths = [rng.uniform(0.3, 5.0, (60, 80)).astype(np.float32) for _ in range(3)]
    spec = RgbdPreprocess(size=(32, 48))
    rgb, depth = preprocess_rgbd_batch(frames, depths, spec)
    assert rgb.shape == (3, 3, 32, 48) and depth.shape == (3, 1, 32, 48)
    assert rgb.flags.c_contiguous and depth.flags.c_contiguous and rgb.dtype == depth.dtype == np.float32
    single = preprocess_rgbd(frames[1], depths[1], spec)
    np.testing.assert_array_equal(rgb[1], single[0])
    np.testing.assert_array_equal(depth[1], single[1])
    with pytest.raises(InputError, match="equally many"):
        preprocess_rgbd_batch(frames, depths[:2], spec)


def test_preprocess_gt_binary_and_soft():
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    hard = preprocess_gt(mask, RgbdPreprocess(size=(24, 24)))
    assert set(np.unique(hard)) == {0.0, 1.0} and hard.shape == (1, 24, 24)
    soft = preprocess_gt(mask, RgbdPreprocess(size=(24, 24)), soft=True)
    assert ((soft > 0) & (soft < 1)).any() and soft.min() >= 0 and soft.max() <= 1


# ---------------------------------------------------------------- output


def test_postprocess_matches_torch_interpolate_then_sigmoid():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    logits = np.random.default_rng(4).normal(0, 3, (1, 1, 64, 64)).astype(np.float32)
    expected = torch.sigmoid(
        torch.nn.functional.interpolate(torch.from_numpy(logits), size=(75, 100), mode="bilinear", align_corners=False)
    )[0, 0].numpy()
    ours = postprocess_saliency(logits, (75, 100), logits=True)
    assert ours.shape == (75, 100) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    official = postprocess_saliency_official(logits, (75, 100))
    ref = (expected - expected.min()) / (expected.max() - expected.min() + 1e-8)
    np.testing.assert_allclose(official, ref, atol=2e-4)


def test_postprocess_probabilities_ranges_and_constant_map():
    prob = np.random.default_rng(5).random((32, 32)).astype(np.float32)
    out = postprocess_saliency(prob, (50, 40))
    assert out.shape == (50, 40) and 0.0 <= out.min() and out.max() <= 1.0
    flat = postprocess_saliency_official(np.full((8, 8), 0.7, np.float32), (16, 16), logits=False)
    np.testing.assert_array_equal(flat, np.zeros((16, 16), np.float32))
    with pytest.raises(InputError, match="one map"):
        postprocess_saliency(np.zeros((2, 1, 8, 8), np.float32), (8, 8))
    with pytest.raises(InputError, match="positive"):
        postprocess_saliency(prob, (0, 8))
