"""Third-party-style ONNX graphs and cards for the export.import_onnx tests (no edge-mm exporter involved)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (a) built with onnx.helper: colour "image_nhwc" and depth "dmap" in NHWC, 0-255 colour, probability out.
NHWC_CARD = """
format = 1
kind = "rgbd-saliency"
name = "helper-nhwc"

[inputs.image_nhwc]
role = "rgb"
layout = "NHWC"
colour_order = "rgb"
size = [48, 64]
max_size = [96, 128]
scaling = "0-255"
mean = [120.0, 115.0, 100.0]
std = [60.0, 58.0, 57.0]
antialias = false

[inputs.dmap]
role = "depth"
layout = "NHWC"
scaling = "0-1"
mean = 0.5
std = 0.25
range_m = [0.3, 4.0]
normalise = "range"
near_is_bright = false
quantize_8bit = false
hole_value = 1.0

[output]
name = "prob"
meaning = "probability"
layout = "NHWC"
"""


def nhwc_two_input_net(path: Path, seed: int = 0, opset: int = 17) -> Path:
    """transpose -> conv(rgb) + conv(depth) -> relu -> 1x1 conv -> sigmoid -> transpose back (NHWC)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32), "w_rgb"),
        numpy_helper.from_array(rng.normal(0, 0.3, (6, 1, 3, 3)).astype(np.float32), "w_depth"),
        numpy_helper.from_array(rng.normal(0, 0.1, (6,)).astype(np.float32), "b_rgb"),
        numpy_helper.from_array(rng.normal(0, 0.5, (1, 6, 1, 1)).astype(np.float32), "w_head"),
        numpy_helper.from_array(np.array([0.1], np.float32), "b_head"),
    ]
    nodes = [
        helper.make_node("Transpose", ["image_nhwc"], ["rgb_nchw"], perm=[0, 3, 1, 2], name="to_nchw_rgb"),
        helper.make_node("Transpose", ["dmap"], ["d_nchw"], perm=[0, 3, 1, 2], name="to_nchw_d"),
        helper.make_node("Conv", ["rgb_nchw", "w_rgb", "b_rgb"], ["f_rgb"], pads=[1, 1, 1, 1], name="conv_rgb"),
        helper.make_node("Conv", ["d_nchw", "w_depth"], ["f_d"], pads=[1, 1, 1, 1], name="conv_depth"),
        helper.make_node("Add", ["f_rgb", "f_d"], ["f"], name="fuse"),
        helper.make_node("Relu", ["f"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w_head", "b_head"], ["logit"], name="head"),
        helper.make_node("Sigmoid", ["logit"], ["p_nchw"], name="sigmoid"),
        helper.make_node("Transpose", ["p_nchw"], ["prob"], perm=[0, 2, 3, 1], name="to_nhwc"),
    ]
    graph = helper.make_graph(
        nodes,
        "third_party_rgbd",
        [
            helper.make_tensor_value_info("image_nhwc", TensorProto.FLOAT, ["n", "h", "w", 3]),
            helper.make_tensor_value_info("dmap", TensorProto.FLOAT, ["n", "h", "w", 1]),
        ],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["n", "h", "w", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="somebody-else")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def recording_frames(bag: Path) -> list:
    """(colour, depth metres) of every frame of a recording, read by the runtime's own source."""
    from runtime.sources import open_source

    with open_source(f"recording:{bag}") as source:
        return [(f.color, f.depth_m) for f in source]
