"""The shared flags -> config step (edge_mm.train.loop.config_from_args) for both models."""

import argparse
import dataclasses

import pytest

from edge_mm.train import cdinet, clip


@pytest.mark.parametrize("module", [cdinet, clip], ids=["cdinet", "clip"])
def test_every_config_field_comes_from_its_flag(module):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    args = parser.parse_args(["--out", "run", "--data", "synthetic", "--seed", "7", "--scene-size", "48", "64"])
    config = module.config_from_args(args)
    spelled_differently = {"depth_near_is_bright", "augment"} if module is cdinet else set()
    for field in dataclasses.fields(config):
        if field.name not in spelled_differently:
            assert hasattr(args, field.name), f"{field.name} has no flag of its name"
            expected = getattr(args, field.name)
            assert getattr(config, field.name) == (list(expected) if field.name == "scene_size" else expected)
    assert config.seed == 7 and config.scene_size == [48, 64]


def test_cdinet_flags_spelled_as_negations():
    parser = argparse.ArgumentParser()
    cdinet.add_arguments(parser)
    args = parser.parse_args(["--out", "run", "--data", "synthetic", "--depth-far-is-bright", "--no-augment"])
    config = cdinet.config_from_args(args)
    assert config.depth_near_is_bright is False and config.augment is False
