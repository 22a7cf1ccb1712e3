"""Artifacts for the runtime tests (tests/test_runtime_*.py).

- `cdinet_artifact`: a real cdinet-s artifact made by `python -m export.build_engine` (random
  weights, 64x64 input so ONNX Runtime runs it in milliseconds), built once per test session.
- `demo_artifact`: the same from the demo weights edge_mm/weights/cdinet-s.pth, when they exist.
- `depth_oracle_artifact`: a three-node ONNX graph with a CDINet spec whose saliency is "near is
  salient" (a sigmoid of the preprocessed depth). Its maps differ from frame to frame and follow the
  scene, so a pipeline result can be checked against the same graph run directly on the same frame.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO_WEIGHTS = ROOT / "edge_mm" / "weights" / "cdinet-s.pth"
ORACLE_GAIN, ORACLE_CUT = 40.0, 0.9  # sigmoid(40 * (unit depth - 0.9)): the nearest tenth is salient


def build_artifact(out: Path, weights: str = "random", size: int = 64) -> Path:
    """python -m export.build_engine ... --no-engine (fp32 only); reused if it already exists."""
    if (out / "model.onnx").is_file():
        return out
    cmd = [
        sys.executable,
        "-m",
        "export.build_engine",
        "--model",
        "cdinet-s",
        "--out",
        str(out),
        "--no-engine",
        "--precision",
        "fp32",
        "--eval-count",
        "2",
        "--calib-count",
        "2",
        "--threads",
        "2",
    ]
    if weights:
        cmd += ["--weights", weights]
    if size:
        cmd += ["--size", str(size)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"build_engine failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return out


def depth_oracle_artifact(out: Path, size: int = 64) -> Path:
    import onnx
    from onnx import TensorProto, helper

    from edge_mm.registry import cdinet_spec
    from edge_mm.rgbd import RgbdPreprocess

    pre = RgbdPreprocess(size=(size, size))
    spec = cdinet_spec("depth-oracle", pre)
    # unit = depth * std + mean undoes the normalisation; saliency = sigmoid(gain * (unit - cut)).
    scale = ORACLE_GAIN * pre.depth_std
    shift = ORACLE_GAIN * (pre.depth_mean - ORACLE_CUT)
    consts = [
        helper.make_tensor("scale", TensorProto.FLOAT, [], [scale]),
        helper.make_tensor("shift", TensorProto.FLOAT, [], [shift]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
    ]
    nodes = [
        helper.make_node("Mul", ["depth", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "shift"], ["logits"]),
        # The colour input takes part with weight 0 so the graph has CDINet's two inputs.
        helper.make_node("ReduceMean", ["rgb"], ["rgb_mean"], keepdims=1, axes=[1]),
        helper.make_node("Mul", ["rgb_mean", "zero"], ["rgb_zero"]),
        helper.make_node("Add", ["logits", "rgb_zero"], ["sum"]),
        helper.make_node("Sigmoid", ["sum"], ["saliency"]),
    ]
    dims = ["batch", "height", "width"]
    graph = helper.make_graph(
        nodes,
        "depth_oracle",
        [
            helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [dims[0], 3, dims[1], dims[2]]),
            helper.make_tensor_value_info("depth", TensorProto.FLOAT, [dims[0], 1, dims[1], dims[2]]),
        ],
        [helper.make_tensor_value_info("saliency", TensorProto.FLOAT, [dims[0], 1, dims[1], dims[2]])],
        initializer=consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.metadata_props.add(key="edge_mm", value=spec.to_json())
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "model.onnx"))
    return out


def oracle_saliency(bgr: np.ndarray, depth_m: np.ndarray, size: int = 64) -> np.ndarray:
    """What the depth oracle computes, in numpy (1, 1, size, size)."""
    from edge_mm.rgbd import RgbdPreprocess, preprocess_rgbd

    pre = RgbdPreprocess(size=(size, size))
    _, depth = preprocess_rgbd(bgr, depth_m, pre)
    unit = depth * pre.depth_std + pre.depth_mean
    return (1.0 / (1.0 + np.exp(-ORACLE_GAIN * (unit - ORACLE_CUT))))[None].astype(np.float32)


def count_video_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open as a video"
    n = 0
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    cap.release()
    return n


def read_events(path: Path) -> list:
    import json

    lines = Path(path).read_text().splitlines()
    return [json.loads(line) for line in lines]
