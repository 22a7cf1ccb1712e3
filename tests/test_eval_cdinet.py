"""edge-mm-eval cdinet and edge_mm.evaluate.metrics: official pipeline, PySODMetrics agreement, CLI errors,
and the shipped demo weights."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import py_sod_metrics
import pytest
import torch

from edge_mm.cdinet.model import build
from edge_mm.checkpoint import make_checkpoint, save_checkpoint
from edge_mm.datasets import write_synthetic_folder
from edge_mm.errors import InputError, WeightsError
from edge_mm.evaluate.cdinet import evaluate_model, load_cdinet
from edge_mm.evaluate.cli import main as eval_main
from edge_mm.evaluate.metrics import QuickMetrics, SodMetrics, mae, s_measure, sod_metrics
from edge_mm.evaluate.samples import FolderSamples, SyntheticSamples, open_folder
from edge_mm.registry import DEMO_WEIGHTS
from edge_mm.rgbd import IMAGENET_MEAN, IMAGENET_STD, RgbdPreprocess

torch.set_num_threads(1)


def _random_pairs(count, seed=0):
    """Blob-shaped GTs with noisy, blurred and degenerate predictions (empty and full GTs included)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(24, 72, 2))
        gt = np.zeros((h, w), np.uint8)
        cv2.circle(gt, (int(rng.integers(4, w - 4)), int(rng.integers(4, h - 4))), int(rng.integers(3, 20)), 255, -1)
        if i % 10 == 0:
            gt[:] = 0
        elif i % 10 == 1:
            gt[:] = 255
        if i % 3 == 0:
            pred = cv2.GaussianBlur(gt, (9, 9), 3)
        else:
            pred = np.clip(gt * rng.random() + rng.normal(0, 60, (h, w)), 0, 255).astype(np.uint8)
        yield pred, gt


def test_numpy_mae_and_s_measure_agree_with_pysodmetrics():
    for pred, gt in _random_pairs(120):
        sm, ma = py_sod_metrics.Smeasure(), py_sod_metrics.MAE()
        sm.step(pred=pred, gt=gt)
        ma.step(pred=pred, gt=gt)
        assert s_measure(pred, gt) == pytest.approx(sm.get_results()["sm"], abs=1e-12)
        assert mae(pred, gt) == pytest.approx(ma.get_results()["mae"], abs=1e-12)


def test_sod_metrics_matches_pysodmetrics_and_hand_values():
    pairs = list(_random_pairs(20, seed=1))
    ours = sod_metrics((p for p, _ in pairs), (g for _, g in pairs))
    sm, em, fm = (
        py_sod_metrics.Smeasure(),
        py_sod_metrics.Emeasure(),
        py_sod_metrics.FmeasureV2(
            metric_handlers={"fm": py_sod_metrics.FmeasureHandler(with_dynamic=True, with_adaptive=True, beta=0.3)}
        ),
    )
    for pred, gt in pairs:
        for metric in (sm, em, fm):
            metric.step(pred=pred, gt=gt)
    assert ours["count"] == 20
    assert ours["s_measure"] == pytest.approx(sm.get_results()["sm"])
    assert ours["max_e"] == pytest.approx(em.get_results()["em"]["curve"].max())
    assert ours["max_f"] == pytest.approx(fm.get_results()["fm"]["dynamic"].max())

    # a binary prediction: F at every threshold in 1..255 is the F of that one mask
    gt = np.zeros((40, 40), np.uint8)
    gt[10:30, 10:30] = 255
    pred = np.zeros_like(gt)
    pred[10:30, 15:35] = 255  # tp 300, fp 100, fn 100
    p = r = 300 / 400
    f = 1.3 * p * r / (0.3 * p + r)
    result = sod_metrics([pred], [gt])
    assert result["max_f"] == pytest.approx(f)
    assert result["mae"] == pytest.approx(200 / 1600)


def test_perfect_predictions_score_perfectly_and_bad_pairs_are_refused():
    # F and E are undefined on all-background or all-foreground GTs (PySODMetrics scores them 0)
    gts = [gt for _, gt in _random_pairs(12, seed=2) if 0 < gt.mean() < 255]
    assert len(gts) == 8
    perfect = sod_metrics(gts, gts, weighted_f=True)
    assert perfect["mae"] == 0.0
    assert perfect["s_measure"] == pytest.approx(1.0, abs=1e-9)
    assert perfect["max_f"] == pytest.approx(1.0) and perfect["weighted_f"] == pytest.approx(1.0)
    assert perfect["max_e"] >= 0.999  # PySODMetrics' E divides by (W*H - 1): slightly above 1
    with pytest.raises(InputError, match="resize the prediction"):
        sod_metrics([np.zeros((4, 5), np.uint8)], [np.zeros((4, 4), np.uint8)])
    with pytest.raises(InputError, match="uint8"):
        sod_metrics([np.zeros((4, 4), np.float32)], [np.zeros((4, 4), np.uint8)])
    with pytest.raises(InputError, match="number"):
        sod_metrics([gts[0], gts[1]], [gts[0]])
    with pytest.raises(InputError, match="no images"):
        QuickMetrics().results()


class GrayIsSaliency(torch.nn.Module):
    """A 'model' whose logits are +-10 where the (grey) colour input is white/black: on a folder
    whose RGB images are the GT masks it predicts the GT exactly."""

    def forward(self, rgb, depth):
        grey = rgb[:, :1] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        return (grey - 0.5) * 20.0


def _mask_folder(root: Path, sizes):
    for sub in ("RGB", "depth", "GT"):
        (root / sub).mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
        gt = np.zeros((h, w), np.uint8)
        cv2.ellipse(gt, (w // 2 + i, h // 2), (w // 4, h // 5), 15.0 * i, 0, 360, 255, -1)
        cv2.imwrite(str(root / "RGB" / f"img{i}.png"), cv2.cvtColor(gt, cv2.COLOR_GRAY2BGR))
        cv2.imwrite(str(root / "depth" / f"img{i}.png"), gt)
        cv2.imwrite(str(root / "GT" / f"img{i}.png"), gt)
    return root


def test_official_pipeline_with_an_oracle_model_is_perfect_and_writes_gt_sized_pngs(tmp_path):
    spec = RgbdPreprocess(size=(64, 64))
    root = _mask_folder(tmp_path / "masks", [(64, 64), (64, 64), (64, 64)])
    source = FolderSamples(open_folder(root, spec))
    results = evaluate_model(GrayIsSaliency(), source, spec, SodMetrics(), batch_size=2, pred_dir=None, progress=False)
    assert results["count"] == 3 and results["mae"] == 0.0 and results["s_measure"] == pytest.approx(1.0)

    # other GT sizes: predictions are resized to each GT, written as PNGs of exactly that size
    root = _mask_folder(tmp_path / "sizes", [(80, 96), (50, 70)])
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    source = FolderSamples(open_folder(root, spec))
    results = evaluate_model(
        GrayIsSaliency(), source, spec, SodMetrics(), batch_size=4, pred_dir=pred_dir, progress=False
    )
    for name, size in (("img0", (80, 96)), ("img1", (50, 70))):
        png = cv2.imread(str(pred_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and png.shape == size
        assert png.min() == 0 and png.max() == 255  # per-image min-max
    assert results["mae"] < 0.02 and results["s_measure"] > 0.95  # only resampled edges differ


def _eval_cli(*args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "edge_mm.evaluate.cli", "cdinet", *args, "--quiet", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("eval") / "synth", count=3, seed=7, size=(48, 80))


def test_cli_evaluates_a_training_checkpoint_and_an_official_state_dict(tiny_folder, tmp_path):
    torch.manual_seed(0)
    model = build("cdinet-s")
    spec = RgbdPreprocess(size=(64, 64))
    meta = {"kind": "cdinet", "variant": "cdinet-s", "preprocess": spec.to_dict()}
    save_checkpoint(tmp_path / "best.pth", make_checkpoint(model, 1, meta))
    run = _eval_cli("--data", str(tiny_folder), "--weights", str(tmp_path / "best.pth"), "--out", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["model"]["weights_kind"] == "checkpoint" and report["preprocess"]["size"] == [64, 64]
    assert set(report["metrics"]) >= {"s_measure", "max_f", "mean_f", "max_e", "mean_e", "mae"}
    preds = sorted((tmp_path / "out" / "pred").glob("*.png"))
    assert len(preds) == 3 and all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape == (48, 80) for p in preds)

    # the same weights as a plain state dict (the official format) give the same predictions
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    code = eval_main(
        [
            "cdinet",
            "--data",
            str(tiny_folder),
            "--weights",
            str(tmp_path / "plain.pth"),
            "--variant",
            "cdinet-s",
            "--size",
            "64",
            "--out",
            str(tmp_path / "out2"),
            "--quiet",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "out2" / "metrics.json").read_text())["metrics"] == report["metrics"]


def _assert_one_line_error(returncode, stderr, *words):
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_cli_bad_inputs_give_one_line_errors(tiny_folder, tmp_path, capsys):
    # once through a real console-script process ...
    run = _eval_cli("--data", str(tmp_path / "missing"), "--weights", "random")
    _assert_one_line_error(run.returncode, run.stderr, "does not exist")

    # ... and the rest in-process through the same main() the console script calls
    def in_process(*args):
        code = eval_main(["cdinet", *args, "--quiet", "--threads", "1"])
        return code, capsys.readouterr().err

    unpaired = tmp_path / "unpaired"
    for sub in ("RGB", "depth", "GT"):
        (unpaired / sub).mkdir(parents=True)
        for name in ("a", "b") if sub != "depth" else ("a",):
            cv2.imwrite(str(unpaired / sub / f"{name}.png"), np.zeros((16, 16), np.uint8))
    _assert_one_line_error(*in_process("--data", str(unpaired), "--weights", "random"), "not paired", "b")

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    _assert_one_line_error(*in_process("--data", str(tiny_folder), "--weights", str(corrupt)), "cannot load checkpoint")

    torch.save(build("cdinet-xs").state_dict(), tmp_path / "xs.pth")
    _assert_one_line_error(
        *in_process("--data", str(tiny_folder), "--weights", str(tmp_path / "xs.pth"), "--variant", "cdinet-s"),
        "shape mismatch",
    )
    _assert_one_line_error(*in_process("--data", "synthetic:x", "--weights", "random"), "integer")
    _assert_one_line_error(*in_process("--data", str(tiny_folder), "--bogus"), "unrecognized")
    assert not (tmp_path / "out").exists()


def test_demo_weights_load_strictly_and_reproduce_the_recorded_test_mae():
    path = DEMO_WEIGHTS["cdinet-s"]
    record = json.loads(path.with_suffix(".json").read_text())
    loaded = load_cdinet(None, "cdinet-s")  # strict load (from_official) of the shipped file
    assert loaded.kind == "demo" and loaded.spec.to_dict() == record["preprocess"]
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(state) == set(build("cdinet-s").state_dict())

    check = record["regression_check"]
    source = SyntheticSamples(check["seed"], check["count"], loaded.spec, scene_size=tuple(check["scene_size"]))
    results = evaluate_model(loaded.model, source, loaded.spec, SodMetrics(), batch_size=8, progress=False)
    assert results["mae"] == pytest.approx(check["mae"], abs=2e-3)
    assert results["s_measure"] == pytest.approx(check["s_measure"], abs=2e-3)
    # and it is a trained model: far better than the untrained one on the same scenes
    assert results["s_measure"] > record["metrics"]["untrained"]["s_measure"] + 0.2


def test_demo_weights_missing_or_wrong_are_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_cdinet(str(tmp_path / "none.pth"))
