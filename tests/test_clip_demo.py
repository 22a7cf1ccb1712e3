"""The shipped demo CLIP (edge_mm/weights/clip-demo.pt): strict loading and what it has learned.

The set here is 64 synthetic scenes of seed 11: neither the demo's training scenes (seed 1), its
validation scenes (seed 2) nor the 500-scene report set (seed 3). The thresholds are the values
measured on exactly this set (clip-demo.json, "test_set") minus a safety margin, and every one is
several times chance.
"""

import json

import pytest

from edge_mm.clip.weights import load
from edge_mm.registry import DEMO_WEIGHTS
from edge_mm.train.clip_eval import evaluate_model

DEMO = DEMO_WEIGHTS["clip-demo"]
CARD = DEMO.with_suffix(".json")
TEST_SEED, TEST_COUNT = 11, 64

# Measured with the shipped weights on this set (clip-demo.json "test_set"): text->image R@5 0.953
# (chance 0.080), colour 0.991 (chance 0.125), shape 0.398 (chance 0.167), colour+shape 0.509
# (chance 0.021). The margins absorb float differences between CPUs, not a worse model.
MIN_T2I_R5 = 0.80
MIN_COLOUR_TOP1 = 0.90
MIN_SHAPE_TOP1 = 0.25
MIN_OBJECT_TOP1 = 0.35


@pytest.fixture(scope="module")
def demo():
    if not DEMO.is_file():
        pytest.fail(f"the demo CLIP weights {DEMO} are missing; they ship with the repository (docs/clip_training.md)")
    model, preprocess = load(DEMO)
    return model, preprocess, json.loads(CARD.read_text())


@pytest.fixture(scope="module")
def measured(demo):
    model, _, _ = demo
    return evaluate_model(model, TEST_SEED, TEST_COUNT)


def test_demo_loads_strictly_and_matches_its_card(demo):
    from edge_mm.clip.model import clip_config_from_state_dict

    model, preprocess, card = demo
    assert model.source_sha256 == card["weights"]["sha256"]
    assert clip_config_from_state_dict(model.state_dict()) == card["model"]
    assert preprocess.image_size == card["image_size"] == model.image_resolution
    assert model.context_length == 77 and model.vocab_size == 49408
    assert DEMO.stat().st_size < 40 * 2**20
    assert 1.0 <= float(model.logit_scale.detach().exp()) <= 100.0


def test_text_to_image_recall_beats_chance(measured, demo):
    r = measured["retrieval"]
    recorded = demo[2]["test_set"]["retrieval"]
    assert r["t2i_r5"] == pytest.approx(recorded["t2i_r5"], abs=0.05)  # the same numbers as when it was shipped
    assert r["t2i_r5"] >= MIN_T2I_R5, r
    assert MIN_T2I_R5 >= 4 * r["t2i_r5_chance"]
    assert r["i2t_r5"] >= 4 * r["i2t_r5_chance"], r


def test_zero_shot_colour_of_object_crops_beats_chance(measured, demo):
    z = measured["zero_shot"]
    recorded = demo[2]["test_set"]["zero_shot"]
    assert z["colour_top1"] == pytest.approx(recorded["colour_top1"], abs=0.05)
    assert z["colour_top1"] >= MIN_COLOUR_TOP1, z
    assert MIN_COLOUR_TOP1 >= 4 * z["colour_chance"]


def test_zero_shot_shape_and_colour_plus_shape_beat_chance(measured):
    z = measured["zero_shot"]
    assert z["shape_top1"] >= MIN_SHAPE_TOP1 > z["shape_chance"], z
    assert z["object_top1"] >= MIN_OBJECT_TOP1, z
    assert MIN_OBJECT_TOP1 >= 10 * z["object_chance"]
