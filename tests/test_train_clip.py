"""edge-mm-train clip: the loss, the clamped temperature, checkpoints, exact resume, PAIRS.jsonl errors, CLI."""

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from edge_mm.checkpoint import read_checkpoint_file
from edge_mm.clip.model import build_scratch_model
from edge_mm.clip.tokenizer import tokenize
from edge_mm.clip.weights import save_plain_weights
from edge_mm.errors import DatasetError, UsageError
from edge_mm.synthetic import COLOURS, SHAPES, SceneGenerator
from edge_mm.train.clip import (
    PLAIN_WEIGHTS,
    TrainConfig,
    clamp_logit_scale,
    contrastive_loss,
    encode_text_trimmed,
    lr_factor,
    make_optimizers,
    train,
)
from edge_mm.train.clip_data import (
    CaptionedScenes,
    PairsFile,
    canonical_caption,
    crop_box,
    horizontal_position,
    random_caption,
    split_pairs,
)
from edge_mm.train.clip_eval import chance_recall, recall_at_k, retrieval_metrics
from edge_mm.train.common import BEST, LAST, METRICS

TINY = dict(
    config="tiny",
    data="synthetic",
    train_count=24,
    val_count=12,
    scene_size=[64, 64],
    batch_size=8,
    warmup_steps=2,
    threads=1,
)


def _quiet(*_args, **_kwargs) -> None:
    pass


# --------------------------------------------------------------------------- loss and temperature


def test_symmetric_loss_equals_hand_computation():
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.2, 0.4, 0.9]])

    def mean_nll_of_diagonal(rows):  # softmax over each row; the right class is on the diagonal
        log_softmax = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(log_softmax))

    expected = (mean_nll_of_diagonal(logits) + mean_nll_of_diagonal(logits.T)) / 2
    got = contrastive_loss(torch.tensor(logits)).item()
    assert got == pytest.approx(expected, abs=1e-12)
    # asymmetric logits: the two directions differ, and the loss is their mean
    assert mean_nll_of_diagonal(logits) != pytest.approx(mean_nll_of_diagonal(logits.T))


def test_temperature_starts_at_007_and_is_clamped_at_100_after_a_step():
    model = build_scratch_model("tiny", seed=0)
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-6)

    adamw, _ = make_optimizers(model, TrainConfig(**TINY, lr=0.5))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(99.0))
    # matched pairs that are not yet far apart (off-diagonal cosine 0.95): a larger scale lowers the loss
    features = torch.nn.functional.normalize(torch.eye(4) + 2.0, dim=1)
    contrastive_loss(model.logit_scale.exp() * features @ features.t()).backward()
    assert model.logit_scale.grad.item() < 0
    adamw.step()
    assert model.logit_scale.exp().item() > 100.0  # the step overshoots ...
    clamp_logit_scale(model)
    assert model.logit_scale.exp().item() == pytest.approx(100.0, rel=1e-6)  # ... and the clamp caps it


def test_trimmed_text_tower_equals_full_encode_text():
    model = build_scratch_model("tiny", seed=3).eval()
    ids = torch.from_numpy(tokenize(["a red circle", "a photo of a blue star on the left and a green ring", "x"]))
    with torch.no_grad():
        full = model.encode_text(ids)
        trimmed = encode_text_trimmed(model, ids)
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)


def test_cosine_schedule_with_warmup():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- captions and metrics


def test_captions_name_colours_shapes_and_positions():
    scene = SceneGenerator((128, 128), seed=5).generate(0)
    caption = canonical_caption(scene.objects, 128)
    for obj in scene.objects:
        assert f"{obj['colour']} {obj['shape']} " in caption + " "
        side = horizontal_position(obj["box"], 128)
        assert {"left": "left", "centre": "centre", "right": "right"}[side] in caption
    assert horizontal_position((0, 0, 20, 10), 128) == "left"
    assert horizontal_position((54, 0, 74, 10), 128) == "centre"
    assert horizontal_position((110, 0, 128, 10), 128) == "right"
    objs = [
        {"colour": "orange", "shape": "star", "box": (0, 0, 10, 10)},
        {"colour": "red", "shape": "ring", "box": (100, 0, 120, 10)},
    ]
    assert canonical_caption(objs, 128) == "an orange star on the left and a red ring on the right"
    captions = {random_caption(objs, 128, np.random.default_rng(i)) for i in range(40)}
    assert len(captions) > 5 and all("orange star" in c and "red ring" in c for c in captions)
    assert all(c.index("orange") < c.index("red") for c in captions)  # named left to right


def test_crop_box_is_square_and_padded_at_borders():
    image = np.arange(50 * 60 * 3, dtype=np.uint32).reshape(50, 60, 3).astype(np.uint8)
    crop = crop_box(image, (0, 0, 10, 20))  # touches the top-left corner
    assert crop.shape == (30, 30, 3)
    np.testing.assert_array_equal(crop_box(image, (20, 20, 30, 30), pad=0.0), image[20:30, 20:30])


def test_recall_counts_twins_and_chance_is_exact():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.7, 0.6]])
    groups = np.array([0, 1, 2])
    assert recall_at_k(scores, groups, groups, (1, 2)) == {1: pytest.approx(1 / 3), 2: pytest.approx(1.0)}
    # query 1 and 2 are twins: query 1's top answer (gallery 2) now counts
    twins = np.array([0, 1, 1])
    assert recall_at_k(scores, twins, twins, (1,))[1] == pytest.approx(1.0)
    assert chance_recall(np.arange(10), np.arange(10), (1, 5)) == {1: pytest.approx(0.1), 5: pytest.approx(0.5)}
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    perfect = retrieval_metrics(emb, emb, np.arange(6))
    assert perfect["t2i_r1"] == 1.0 and perfect["i2t_r1"] == 1.0


# --------------------------------------------------------------------------- training runs


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip2")
    summary = train(TrainConfig(**TINY, epochs=2), out, progress=False, log=_quiet)
    return out, summary


def test_two_epochs_write_checkpoints_metrics_and_plain_weights(two_epoch_run):
    from edge_mm.clip.weights import load

    out, summary = two_epoch_run
    for name in (LAST, BEST, METRICS, PLAIN_WEIGHTS):
        assert (out / name).is_file()
    history = summary["history"]
    assert [e["epoch"] for e in history] == [1, 2] and history[-1]["steps"] == 6  # 24 // 8 steps per epoch
    for entry in history:
        assert math.isfinite(entry["train_loss"]) and entry["train_loss"] > 0
        assert 1.0 <= entry["logit_scale"] <= 100.0
        for key in ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5"):
            assert 0.0 <= entry[key] <= 1.0
        assert entry["t2i_r1"] <= entry["t2i_r5"]
    on_disk = json.loads((out / METRICS).read_text())
    assert on_disk["train_data"]["seed"] == 1 and on_disk["val_data"]["seed"] == 2
    assert on_disk["preprocess"]["image_size"] == 32 and on_disk["model"]["context_length"] == 77

    last = read_checkpoint_file(out / LAST)  # weights_only=True
    assert set(last) >= {"model", "optimizer", "sparse_optimizer", "rng", "step", "meta_json"}
    best = read_checkpoint_file(out / BEST)
    model, preprocess = load(out / PLAIN_WEIGHTS)  # strict, through the runtime's loader
    assert preprocess.image_size == 32
    for key, value in best["model"].items():
        torch.testing.assert_close(model.state_dict()[key], value, atol=0, rtol=0)


def test_resume_after_an_interruption_matches_an_uninterrupted_run(two_epoch_run, tmp_path):
    straight_out, _ = two_epoch_run

    class Interrupted(Exception):
        pass

    def stop_after_first_epoch(line, *_):
        if line.startswith("epoch 1/2"):
            raise Interrupted

    with pytest.raises(Interrupted):
        train(TrainConfig(**TINY, epochs=2), tmp_path, progress=False, log=stop_after_first_epoch)
    assert read_checkpoint_file(tmp_path / LAST)["epoch"] == 1
    with pytest.raises(UsageError, match="--resume"):
        train(TrainConfig(**TINY, epochs=2), tmp_path, progress=False, log=_quiet)
    with pytest.raises(UsageError, match="other settings"):
        train(TrainConfig(**TINY, epochs=2, lr=5e-4), tmp_path, resume=True, progress=False, log=_quiet)

    resumed = train(TrainConfig(**TINY, epochs=2), tmp_path, resume=True, progress=False, log=_quiet)
    straight = read_checkpoint_file(straight_out / LAST)["model"]
    again = read_checkpoint_file(tmp_path / LAST)["model"]
    for key in straight:  # same data order, captions, optimizer state: the same weights, bit for bit
        assert torch.equal(straight[key], again[key]), key
    assert [e["epoch"] for e in resumed["history"]] == [1, 2]


def _write_pairs(folder, count=12):
    folder.mkdir(parents=True, exist_ok=True)
    scenes = SceneGenerator((64, 64), seed=9)
    lines = []
    for i in range(count):
        scene = scenes.generate(i)
        cv2.imwrite(str(folder / f"img{i}.png"), scene.bgr)
        lines.append(json.dumps({"image": f"img{i}.png", "caption": canonical_caption(scene.objects, 64)}))
    return lines


def test_pairs_file_reads_relative_paths_and_trains_from_an_init_file(tmp_path):
    lines = _write_pairs(tmp_path / "pairs")
    path = tmp_path / "pairs" / "pairs.jsonl"
    path.write_text("\n".join(lines[:6] + [""] + lines[6:]) + "\n")  # a blank line is skipped
    pairs = PairsFile(path)
    image, caption = pairs.read(0)
    assert image.shape == (64, 64, 3) and caption == json.loads(lines[0])["caption"]
    train_part, val_part = split_pairs(pairs, 0.25, seed=0)
    assert len(train_part) == 9 and len(val_part) == 3
    assert not set(train_part.indices) & set(val_part.indices)

    init = tmp_path / "init.pt"
    save_plain_weights(build_scratch_model("tiny", seed=1), init)
    summary = train(
        TrainConfig(**dict(TINY, data=str(path), init=str(init), val_fraction=0.25, batch_size=4), epochs=1),
        tmp_path / "run",
        progress=False,
        log=_quiet,
    )
    assert summary["init"] == str(init) and summary["train_data"]["count"] == 9 and summary["val_data"]["count"] == 3


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"image": "missing.png", "caption": "a red circle"}', r"line 3: image .*missing\.png does not exist"),
        ('{"image": "img0.png", "caption": ', r"line 3 is not valid JSON"),
        ('{"image": "img0.png"}', r'line 3 has no non-empty "caption"'),
        ('["img0.png", "a red circle"]', r"line 3 is a list, not an object"),
    ],
)
def test_bad_pairs_line_is_a_one_line_dataset_error(tmp_path, bad_line, message):
    lines = _write_pairs(tmp_path, count=3)
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines[:2] + [bad_line] + lines[2:]) + "\n")
    with pytest.raises(DatasetError, match=message) as info:
        PairsFile(path)
    assert "\n" not in str(info.value)


def test_cli_reports_a_bad_pairs_file_in_one_line_with_exit_2(tmp_path):
    lines = _write_pairs(tmp_path, count=3)
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines + ['{"image": "gone.png", "caption": "a blue star"}']) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_mm.train.cli",
            "clip",
            "--data",
            str(path),
            "--out",
            str(tmp_path / "run"),
            "--config",
            "tiny",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert "\n" not in message and "line 4" in message and "gone.png" in message and "Traceback" not in message


def test_bad_settings_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="different --val-seed"):
        train(TrainConfig(**dict(TINY, val_seed=1)), tmp_path, progress=False, log=_quiet)
    with pytest.raises(UsageError, match="--config"):
        train(TrainConfig(**dict(TINY, config="huge")), tmp_path, progress=False, log=_quiet)
    with pytest.raises(UsageError, match="batch-size"):
        train(TrainConfig(**dict(TINY, batch_size=1)), tmp_path, progress=False, log=_quiet)


def test_synthetic_scenes_have_crops_with_their_own_caption():
    scenes = CaptionedScenes(seed=4, count=6, scene_size=(64, 64), crop_fraction=1.0)
    rng = np.random.default_rng(0)
    image, caption, whole = scenes.draw(0, rng)
    assert not whole and image.shape[0] == image.shape[1]
    assert any(f"{c} {s}" in caption for c in COLOURS for s in SHAPES) and " and " not in caption
    assert scenes.read(0)[1] == scenes.captions[0]  # no rng: the canonical caption
