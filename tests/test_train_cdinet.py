"""edge-mm-train cdinet: checkpoints, exact resume, gradient clamp, augmentation, schedule, CLI errors."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from edge_mm.checkpoint import read_checkpoint_file
from edge_mm.errors import UsageError
from edge_mm.train.cdinet import TrainConfig, official_lr_factor, train
from edge_mm.train.cli import main as train_main
from edge_mm.train.common import BEST, LAST, METRICS, clamp_gradients
from edge_mm.train.data import official_augment

TINY = dict(
    variant="cdinet-s",
    data="synthetic",
    size=64,
    scene_size=[64, 64],
    train_count=8,
    val_count=4,
    batch_size=4,
    threads=1,
    workers=0,
)


def _config(**changes) -> TrainConfig:
    return TrainConfig(**dict(TINY, **changes))


def _quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run2")
    summary = train(_config(epochs=2), out, progress=False, log=_quiet)
    return out, summary


def test_two_epochs_write_checkpoints_and_metrics(two_epoch_run):
    out, summary = two_epoch_run
    assert (out / LAST).is_file() and (out / BEST).is_file() and (out / METRICS).is_file()
    history = summary["history"]
    assert [e["epoch"] for e in history] == [1, 2]
    losses = [e["train_loss"] for e in history]
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert losses[1] < losses[0]  # on 8 scenes the second epoch fits better
    for entry in history:
        assert 0.0 <= entry["val_mae"] <= 1.0 and 0.0 <= entry["val_s_measure"] <= 1.0

    on_disk = json.loads((out / METRICS).read_text())
    assert on_disk["history"] == json.loads(json.dumps(history))
    assert on_disk["train_data"]["seed"] == 1 and on_disk["val_data"]["seed"] == 2
    assert on_disk["preprocess"]["size"] == [64, 64] and on_disk["preprocess"]["type"] == "rgbd"
    assert on_disk["best"]["epoch"] in (1, 2)

    # weights_only loading: no pickled objects anywhere, RNG state as a tensor, metadata as JSON text
    last = read_checkpoint_file(out / LAST)
    assert last["epoch"] == 2 and isinstance(last["rng"]["torch"], torch.Tensor)
    assert set(last) >= {"model", "optimizer", "scheduler", "meta_json"}
    assert json.loads(last["meta_json"])["variant"] == "cdinet-s"
    best = read_checkpoint_file(out / BEST)
    assert "optimizer" not in best and best["epoch"] == on_disk["best"]["epoch"]


def test_resume_from_epoch_one_equals_uninterrupted_run(two_epoch_run, tmp_path):
    out_full, _ = two_epoch_run
    out = tmp_path / "resumed"
    train(_config(epochs=1), out, progress=False, log=_quiet)
    assert read_checkpoint_file(out / LAST)["epoch"] == 1
    summary = train(_config(epochs=2), out, resume=True, progress=False, log=_quiet)

    full, resumed = read_checkpoint_file(out_full / LAST), read_checkpoint_file(out / LAST)
    assert resumed["epoch"] == 2 and [e["epoch"] for e in summary["history"]] == [1, 2]
    # bit-identical: same init, data order, augmentation, optimizer state and schedule
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    for key, state in full["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, resumed["optimizer"]["state"][key][name])
    assert full["scheduler"]["last_epoch"] == resumed["scheduler"]["last_epoch"] == 2
    assert [e["train_loss"] for e in summary["history"]] == [
        e["train_loss"] for e in json.loads(full["meta_json"])["history"]
    ]


def test_resume_refuses_other_settings_and_fresh_run_refuses_existing_out(two_epoch_run):
    out, _ = two_epoch_run
    with pytest.raises(UsageError, match="other settings.*lr"):
        train(_config(epochs=3, lr=1e-3), out, resume=True, progress=False, log=_quiet)
    with pytest.raises(UsageError, match="--resume"):
        train(_config(epochs=2), out, progress=False, log=_quiet)


def test_same_train_and_val_seed_is_refused(tmp_path):
    with pytest.raises(UsageError, match="different seeds"):
        train(_config(epochs=1, val_seed=1), tmp_path, progress=False, log=_quiet)


def test_gradient_clamp_is_elementwise_at_half():
    param = torch.nn.Parameter(torch.zeros(7))
    param.grad = torch.tensor([-2.0, -0.5, -0.1, 0.0, 0.3, 0.7, 5.0])
    clamp_gradients([param], 0.5)
    # value clamping keeps small elements untouched (norm clipping would have scaled 0.3 and -0.1)
    assert param.grad.tolist() == pytest.approx([-0.5, -0.5, -0.1, 0.0, 0.3, 0.5, 0.5])


def test_learning_rate_schedule_follows_the_official_adjust_lr():
    factor = official_lr_factor(40, 0.2)
    # 0-based scheduler epoch e is the authors' epoch e + 1: decay at their epochs 40, 80 and 120
    assert [factor(e) for e in (0, 38, 39, 78, 79, 119)] == pytest.approx([1, 1, 0.2, 0.2, 0.04, 0.008])


def test_augmentation_moves_colour_depth_and_gt_together():
    h, w = 48, 64
    gt = np.zeros((h, w), np.uint8)
    gt[8:20, 5:25] = 255  # an off-centre box, so every flip and rotation moves it
    bgr = np.repeat(gt[:, :, None], 3, axis=2)
    depth = gt.astype(np.float32) / 255.0
    flips, rotations = [0, 0, 0], 0
    for seed in range(300):
        a_bgr, a_depth, a_gt = official_augment(bgr, depth, gt, np.random.default_rng(seed))
        assert a_bgr.shape == (h, w, 3) and a_depth.shape == (h, w) and a_gt.shape == (h, w)
        assert a_depth.min() >= 0.0 and a_depth.max() <= 1.0
        np.testing.assert_allclose(
            a_bgr[:, :, 0].astype(float), a_gt.astype(float), atol=1
        )  # same warp for every input
        np.testing.assert_allclose(a_depth * 255.0, a_gt.astype(float), atol=1.5)
        if np.array_equal(np.sort(a_gt.ravel()), np.sort(gt.ravel())):
            if np.array_equal(a_gt, gt):
                flips[0] += 1
            elif np.array_equal(a_gt, gt[:, ::-1]):
                flips[1] += 1
            elif np.array_equal(a_gt, gt[::-1]):
                flips[2] += 1
        else:
            rotations += 1
    # about 1/3 each flip and 20% rotations (binomial bounds far from chance failures)
    assert 0.05 * 300 < rotations < 0.35 * 300
    assert all(0.15 * 300 < n for n in flips)


def _cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "edge_mm.train.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_cli_bad_inputs_give_one_line_errors(tmp_path, capsys):
    missing = _cli("cdinet", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--variant", "cdinet-s")
    assert missing.returncode == 2, missing.stderr
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "does not exist" in lines[0]

    # the same main() the console script calls, in-process
    for argv, words in (
        (["cdinet", "--data", "synthetic", "--out", str(tmp_path / "o"), "--size", "100"], "multiple of 16"),
        (["cdinet", "--data", "synthetic", "--out", str(tmp_path / "o"), "--resume"], "does not exist"),
        (["cdinet", "--data", "synthetic", "--out", str(tmp_path / "o"), "--variant", "huge"], "unknown --variant"),
        ([], "required"),
    ):
        assert train_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert not (tmp_path / "o" / "last.pth").exists()
