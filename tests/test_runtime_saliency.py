"""runtime.saliency, runtime.overlay and runtime.stats on known inputs (no model needed)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_mm.errors import InputError
from edge_mm.synthetic import SceneGenerator
from runtime.overlay import BOX_COLOUR, COLORMAPS, blend_heatmap, render
from runtime.saliency import analyse_saliency, mask_iou
from runtime.stats import PipelineStats, Series, format_summary, measure_model_alone


def _scene(index=0, size=(240, 320)):
    return SceneGenerator(seed=0, size=size).generate(index)


def _pred_from_mask(mask, side=64):
    """A model-sized probability map that is the (blurred) ground truth."""
    small = cv2.resize((mask > 127).astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
    return small[None, None]


def test_box_score_and_depth_of_the_largest_region():
    scene = _scene(2)
    result = analyse_saliency(_pred_from_mask(scene.mask), scene.mask.shape, scene.depth_m)
    biggest = max(scene.objects, key=lambda o: o["area_px"])
    # The box of the largest region is the largest object's box, to within the 64x64 map's resolution.
    assert np.abs(np.subtract(result.box, biggest["box"])).max() <= 6, (result.box, biggest["box"])
    assert 0.5 < result.score <= 1.0
    assert result.depth_m == pytest.approx(biggest["depth_m"], abs=0.1)
    assert result.area_frac == pytest.approx(biggest["area_px"] / scene.mask.size, rel=0.25)
    assert mask_iou(result.mask, scene.mask) > 0.8
    assert result.to_event()["box"] == list(result.box)


def test_depth_ignores_holes_and_is_none_without_valid_depth():
    pred = np.zeros((1, 1, 32, 32), np.float32)
    pred[..., 8:24, 8:24] = 1.0
    depth = np.full((64, 64), 2.0, np.float32)
    depth[16:48, 16:32] = 0.0  # half the object has no depth: it must not pull the mean towards 0
    depth[16:48, 32:48] = 1.0
    result = analyse_saliency(pred, (64, 64), depth)
    assert result.box == (16, 16, 48, 48)
    assert result.depth_m == pytest.approx(1.0)
    holes = analyse_saliency(pred, (64, 64), np.zeros((64, 64), np.float32))
    assert holes.box == (16, 16, 48, 48) and holes.depth_m is None
    no_depth = analyse_saliency(pred, (64, 64), None)
    assert no_depth.depth_m is None


def test_threshold_off_nothing_salient_and_speckle():
    pred = np.full((1, 1, 16, 16), 0.2, np.float32)
    off = analyse_saliency(pred, (32, 32), threshold=None)
    assert off.mask is None and off.box is None and off.prob.shape == (32, 32)
    none = analyse_saliency(pred, (32, 32))
    assert none.mask is not None and not none.mask.any() and none.box is None and none.score == 0.0
    speck = np.zeros((1, 1, 100, 100), np.float32)
    speck[..., 50, 50] = 1.0  # one pixel of 10 000: below the default minimum area
    assert analyse_saliency(speck, (100, 100)).box is None
    with pytest.raises(InputError):
        analyse_saliency(pred, (32, 32), threshold=1.5)


def test_logits_are_squashed_after_resizing():
    logits = np.full((1, 1, 8, 8), 3.0, np.float32)
    result = analyse_saliency(logits, (16, 16), logits=True)
    assert np.allclose(result.prob, 1 / (1 + np.exp(-3.0)), atol=1e-6)


def test_mask_iou():
    a = np.zeros((10, 10), bool)
    a[:5] = True
    gt = np.zeros((10, 10), np.uint8)
    gt[:, :5] = 255
    assert mask_iou(a, gt) == pytest.approx(25 / 75)
    assert mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), np.uint8)) == 1.0
    with pytest.raises(InputError):
        mask_iou(a, gt[:5])


def test_overlay_tints_only_salient_pixels_and_draws_the_box_and_text():
    scene = _scene(3)
    result = analyse_saliency(_pred_from_mask(scene.mask), scene.mask.shape, scene.depth_m)
    image = render(scene.bgr, result, ["12.0 FPS | latency p50 40 / p95 50 ms"])
    assert image.shape == scene.bgr.shape and image.dtype == np.uint8
    assert not np.shares_memory(image, scene.bgr)
    far = cv2.dilate(scene.mask, np.ones((25, 25), np.uint8)) == 0
    far[:60] = False  # the text panel
    x0, y0, x1, y1 = result.box
    far[max(0, y0 - 40) : y1 + 10, max(0, x0 - 10) : x1 + 200] = False  # the box and its label
    assert np.array_equal(image[far], scene.bgr[far])  # probability 0: untouched
    inside = scene.mask > 127
    assert np.abs(image[inside].astype(int) - scene.bgr[inside]).mean() > 20  # salient: tinted
    assert tuple(image[(y0 + y1) // 2, x0]) == BOX_COLOUR  # the box's left edge
    assert (image[5:50, 5:200] != scene.bgr[5:50, 5:200]).any()  # the stats text
    plain = render(scene.bgr, result, [], show_heatmap=False)  # overlay off (key o): box only
    core = cv2.erode(scene.mask, np.ones((15, 15), np.uint8)) > 0
    core[max(0, y0 - 40) : y0 + 5] = False  # the label above the box
    band = np.zeros_like(scene.mask)
    cv2.rectangle(band, (x0, y0), (x1 - 1, y1 - 1), 255, 12)  # the box's lines
    core &= band == 0
    assert core.any() and np.array_equal(plain[core], scene.bgr[core])


@pytest.mark.parametrize("colormap", sorted(COLORMAPS))
@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0])
def test_heatmap_blend_is_the_per_pixel_weighted_mean(colormap, alpha):
    # The definition: image * (1 - alpha * p) + colour(p) * alpha * p, in floats, rounded once.
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    prob = rng.random((48, 64)).astype(np.float32)
    prob[:8] = 0.0  # background rows
    prob[8:16] = 1.0
    colour = cv2.applyColorMap(cv2.convertScaleAbs(prob, alpha=255.0), COLORMAPS[colormap]).astype(np.float64)
    weight = alpha * prob.astype(np.float64)[..., None]
    expected = np.round(image * (1.0 - weight) + colour * weight)
    blended = blend_heatmap(image, prob, alpha, colormap)
    assert np.abs(blended - expected).max() <= 2  # byte tables: rounding steps, nothing more
    assert np.array_equal(blended[:8], image[:8])  # probability 0: the pixel is kept exactly
    if alpha == 1.0:
        assert np.array_equal(blended[8:16], colour[8:16].astype(np.uint8))  # probability 1: the colour itself


def test_model_alone_is_timed_on_its_own():
    calls = []
    alone = measure_model_alone(lambda: calls.append(1), warmup=2, min_runs=5, max_runs=7, budget_s=0.0)
    assert alone["runs"] == 5 and len(calls) == 7 and alone["fps"] > 0  # 2 untimed warm-up calls, 5 timed
    alone = measure_model_alone(lambda: calls.append(1), warmup=0, min_runs=1, max_runs=7, budget_s=1e9)
    assert alone["runs"] == 7  # more runs while within the budget, never past max_runs


def test_series_and_stats_summary():
    series = Series()
    for v in range(1, 101):
        series.add(v / 1000.0)
    s = series.summary()
    assert s["count"] == 100 and s["mean"] == pytest.approx(50.5) and s["max"] == pytest.approx(100.0)
    assert s["p50"] == pytest.approx(50.5) and s["p95"] == pytest.approx(95.05)

    stats = PipelineStats()
    stats.model_alone = {"fps": 16.0, "median_ms": 62.5, "runs": 8}  # as measure_model_alone reports it
    stats.start(now=0.0)
    for i in range(11):  # a result every 0.1 s from t = 1.0, each captured 0.25 s earlier
        stats.add_stage("infer", 0.08, 0.05)
        stats.frame_done(capture_time=0.75 + 0.1 * i, done_time=1.0 + 0.1 * i, metrics={"iou_vs_ground_truth": 0.5})
    summary = stats.summary()
    assert summary["frames"] == 11
    assert summary["fps"] == pytest.approx(10.0)  # steady state: 10 results per second
    assert summary["model_alone_fps"] == 16.0 and summary["pipeline_vs_model"] == pytest.approx(10.0 / 16.0)
    assert summary["infer_in_pipeline_fps"] == pytest.approx(12.5)  # 1 / 80 ms, named for what it is
    assert summary["latency_ms"]["p50"] == pytest.approx(250.0) and summary["latency_ms"]["p95"] == pytest.approx(250.0)
    assert summary["iou_vs_ground_truth"]["mean"] == pytest.approx(0.5)
    assert summary["stages_cpu_ms"]["infer"] == pytest.approx(50.0)  # the thread's CPU time, beside the wall time
    text = format_summary(summary)
    assert "10.0 FPS" in text and "p50 250.0 ms" in text and "IoU" in text
    assert "model alone 16.0 FPS, measured alone over 8 runs" in text and "inside the pipeline 12.5 FPS" in text
    current = stats.current(now=2.0)
    assert current["fps"] == pytest.approx(10 / 2.0, rel=0.15) and current["latency_p95_ms"] == pytest.approx(250.0)
