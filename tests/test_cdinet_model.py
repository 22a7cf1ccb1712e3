"""CDINet model: parity with the authors' computation, architecture details, input checks, ONNX."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from cdinet_reference import OFFICIAL_KEYS_FILE, official_keys, random_state_dict, reference_forward
from torch import nn

from edge_mm.cdinet import VARIANTS, CDINet, build
from edge_mm.cdinet.model import SIZE_MULTIPLE, scaled_channels
from edge_mm.errors import InputError, UsageError

torch.set_num_threads(2)


def _inputs(n: int, h: int, w: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=gen), torch.randn(n, 1, h, w, generator=gen)


def _randomized(model: CDINet, seed: int = 0) -> CDINet:
    """The model with He-scaled random weights (any width), in eval mode."""
    keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    model.load_state_dict(random_state_dict(keys, seed), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def official_random():
    """Full-width CDINet with a random state dict made from the official checkpoint's key file."""
    state = random_state_dict(official_keys(), seed=0)
    model = CDINet()
    model.load_state_dict(state, strict=True)
    return model.eval(), state


@pytest.fixture(scope="module")
def small_random():
    model = _randomized(build("cdinet-s"), seed=3)
    return model, model.state_dict()


# ---------------------------------------------------------------------------------------------
# Parameters


def test_parameter_names_and_shapes_match_official_checkpoint():
    data = json.loads(OFFICIAL_KEYS_FILE.read_text())
    ours = [(k, tuple(v.shape)) for k, v in CDINet().state_dict().items()]
    assert ours == official_keys()
    assert sum(int(np.prod(s)) for _, s in ours) == data["num_params"] == 54_369_369


def test_variants_scale_channels_to_multiples_of_8_with_valid_fc_ratio():
    for name, width in VARIANTS.items():
        model = build(name)
        assert model.width == width
        assert all(c % 8 == 0 for c in model.channels)
        for level in (3, 4, 5):
            c = model.channels[level - 1]
            assert getattr(model, f"dse_layer{level}").ca1.fc[0].out_features == c // 4
    assert build("cdinet").channels == (64, 128, 256, 512, 512)
    n_small = sum(p.numel() for p in build("cdinet-s").parameters())
    assert 1_000_000 <= n_small <= 2_000_000
    assert build(0.5).channels == scaled_channels(0.5) == (32, 64, 128, 256, 256)


def test_build_rejects_unknown_names_and_bad_widths():
    with pytest.raises(UsageError, match="cdinet-s") as info:
        build("cdinet-large")
    assert "cdinet-large" in str(info.value)
    for bad in (0, -1.0, float("nan"), True):
        with pytest.raises(UsageError):
            build(bad)


# ---------------------------------------------------------------------------------------------
# Parity with the authors' forward pass (tests/cdinet_reference.py)


def test_full_width_matches_authors_computation_at_256(official_random):
    model, state = official_random
    rgb, depth = _inputs(1, 256, 256)
    with torch.no_grad():
        ours = model(rgb, depth)
    theirs = reference_forward(state, rgb, depth)
    assert ours.shape == (1, 1, 256, 256)
    assert ours.std() > 0.5  # a non-degenerate output, so the tolerance below means something
    assert (ours - theirs).abs().max().item() < 1e-5


def test_small_width_matches_reference_at_non_square_batch(small_random):
    model, state = small_random
    rgb, depth = _inputs(2, 64, 96)
    with torch.no_grad():
        ours = model(rgb, depth)
    assert ours.shape == (2, 1, 64, 96)
    assert (ours - reference_forward(state, rgb, depth)).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    "changed",
    [{"pool": "max"}, {"semantic_mode": "bilinear"}, {"decoder_mode": "nearest"}],
    ids=["maxpool", "bilinear-semantic-blocks", "nearest-decoder"],
)
def test_parity_check_sees_each_layer_choice(small_random, changed):
    """The reference with one choice flipped disagrees with the model, so parity pins that choice."""
    model, state = small_random
    rgb, depth = _inputs(1, 64, 64)
    with torch.no_grad():
        ours = model(rgb, depth)
    assert (ours - reference_forward(state, rgb, depth, **changed)).abs().max().item() > 1e-2


def test_vgg_streams_pool_with_avgpool(small_random):
    model, state = small_random
    for stream in (model.vgg_r, model.vgg_d):
        pools = [m for m in stream.modules() if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d))]
        assert len(pools) == 4 and all(isinstance(p, nn.AvgPool2d) for p in pools)
    # swapping the pools for MaxPool changes the output, and the swapped model is what the reference
    # computes with max pooling: the pool modules sit exactly where the authors have them
    swapped = copy.deepcopy(model)
    for stream in (swapped.vgg_r, swapped.vgg_d):
        for level in range(2, 6):
            setattr(getattr(stream, f"conv{level}"), f"pool{level - 1}", nn.MaxPool2d(2, 2))
    rgb, depth = _inputs(1, 64, 64)
    with torch.no_grad():
        avg, mx = model(rgb, depth), swapped(rgb, depth)
    assert (avg - mx).abs().max().item() > 1e-2
    assert (mx - reference_forward(state, rgb, depth, pool="max")).abs().max().item() < 1e-5


def test_feature_map_sizes_per_level_at_256():
    model = build("cdinet-xs").eval()
    shapes = {}
    for stream in ("vgg_r", "vgg_d"):
        for level in range(1, 6):
            block = getattr(getattr(model, stream), f"conv{level}")
            block.register_forward_hook(lambda m, i, o, key=(stream, level): shapes.__setitem__(key, tuple(o.shape)))
    rgb, depth = _inputs(1, 256, 256)
    with torch.no_grad():
        features = model.encode(rgb, depth)
        model(rgb, depth)
    for level in range(1, 6):
        expected = (1, model.channels[level - 1], 256 >> (level - 1), 256 >> (level - 1))
        assert shapes[("vgg_r", level)] == shapes[("vgg_d", level)] == expected
        assert tuple(features[level - 1].shape) == expected


def test_output_is_the_final_conv_without_sigmoid(small_random):
    model, _ = small_random
    captured = {}
    handle = model.ddr.conv_map.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    rgb, depth = _inputs(1, 64, 64)
    try:
        with torch.no_grad():
            logits = model(rgb, depth)
    finally:
        handle.remove()
    assert torch.equal(logits, captured["out"])
    assert logits.min() < 0 or logits.max() > 1  # not squashed into [0, 1]


# ---------------------------------------------------------------------------------------------
# Input validation


@pytest.fixture(scope="module")
def tiny():
    return build("cdinet-xs").eval()


def test_size_not_multiple_of_16_names_size_and_nearest_valid_sizes(tiny):
    rgb, depth = _inputs(1, 250, 300)
    with pytest.raises(InputError) as info:
        tiny(rgb, depth)
    message = str(info.value)
    assert "250x300" in message and "240x288" in message and "256x304" in message
    assert "\n" not in message
    with pytest.raises(InputError, match="16x16"):
        tiny(*_inputs(1, 8, 16))
    assert SIZE_MULTIPLE == 16


@pytest.mark.parametrize(
    "rgb_shape, depth_shape, dtype, match",
    [
        ((1, 3, 64, 64), (1, 3, 64, 64), torch.float32, "depth must have shape"),
        ((1, 3, 64, 64), (1, 64, 64), torch.float32, "depth must have shape"),
        ((3, 64, 64), (1, 1, 64, 64), torch.float32, "rgb must have shape"),
        ((1, 1, 64, 64), (1, 1, 64, 64), torch.float32, "rgb must have shape"),
        ((1, 3, 64, 64), (1, 1, 64, 64), torch.float64, "dtype"),
        ((1, 3, 64, 64), (2, 1, 64, 64), torch.float32, "differ"),
        ((1, 3, 64, 64), (1, 1, 64, 80), torch.float32, "differ"),
    ],
)
def test_bad_inputs_raise_input_error(tiny, rgb_shape, depth_shape, dtype, match):
    rgb = torch.zeros(rgb_shape)
    depth = torch.zeros(depth_shape, dtype=dtype)
    with pytest.raises(InputError, match=match) as info:
        tiny(rgb, depth)
    assert "\n" not in str(info.value)


def test_integer_depth_and_numpy_inputs_are_rejected(tiny):
    rgb, _ = _inputs(1, 32, 32)
    with pytest.raises(InputError, match="torch.uint8"):
        tiny(rgb, torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(InputError, match="ndarray"):
        tiny(rgb, np.zeros((1, 1, 32, 32), np.float32))


# ---------------------------------------------------------------------------------------------
# ONNX


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter announces its successor
def test_onnx_export_opset17_dynamic_batch_and_size_matches_torch(tmp_path, small_random):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model, _ = small_random
    path = tmp_path / "cdinet-s.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    # the legacy TorchScript exporter: the dynamo exporter needs onnxscript, which is not a dependency
    torch.onnx.export(
        model,
        _inputs(1, 64, 64),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["rgb", "depth"],
        output_names=["logits"],
        dynamic_axes={"rgb": axes, "depth": axes, "logits": axes},
    )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) == 17
    dims = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for n, h, w in [(2, 96, 128), (1, 128, 80)]:  # neither is the export size
        rgb, depth = _inputs(n, h, w, seed=h + w)
        with torch.no_grad():
            expected = model(rgb, depth).numpy()
        (got,) = session.run(["logits"], {"rgb": rgb.numpy(), "depth": depth.numpy()})
        assert got.shape == (n, 1, h, w)
        assert np.abs(got - expected).max() < 1e-4
        assert expected.std() > 1e-2
