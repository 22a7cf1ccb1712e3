"""Every precision variant of the exported artifacts compiles with TensorRT-RTX (ahead of time, SM86).

This is the proof that the graphs are TensorRT-ready: the real TensorRT-RTX parser and builder,
no GPU needed. The demo cdinet-s (its trained size) and CLIP ViT-B/32 (random weights: the graph,
not the numbers, is under test) go through `python -m export.build_engine --target-sm 86`.
"""

import json
from pathlib import Path

import pytest

from export.build_engine import main

rtx = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings are not installed")
PRECISIONS = ("fp32", "fp16", "int8")
# The default profile (native size, the runtime's batch) and workspace: what a user gets.
COMMON = [
    "--target-sm",
    "86",
    "--threads",
    "2",
    "--calib-count",
    "8",
    "--eval-count",
    "4",
]


def engines_of(folder: Path) -> dict:
    found = {}
    for sidecar in sorted(folder.glob("*.engine.json")):
        data = json.loads(sidecar.read_text())
        engine = folder / data["engine"]
        assert engine.is_file() and engine.stat().st_size > 10_000, f"{engine} missing or empty"
        assert data["targets"] == [86] and data["tensorrt"]["flavour"] == "tensorrt_rtx"
        found[data["precision"]] = data
    return found


def test_demo_cdinet_s_every_precision(tmp_path):
    out = tmp_path / "cdinet-s"
    assert main(["--model", "cdinet-s", "--out", str(out), *COMMON]) == 0
    engines = engines_of(out)
    assert sorted(engines) == sorted(PRECISIONS)
    for precision, data in engines.items():
        onnx_name = "model.onnx" if precision == "fp32" else f"model.{precision}.onnx"
        assert data["onnx"]["file"] == onnx_name
        assert {t["name"] for t in data["inputs"]} == {"rgb", "depth"}
        for tensor in data["inputs"]:  # the default profile: one frame at a time, up to the native size
            assert tensor["profile"]["max"][0] == 1 and tensor["profile"]["max"][2:] == tensor["profile"]["opt"][2:]


@pytest.mark.slow  # ~80 s on 2 cores: a full ViT-B/32 export and nine TensorRT-RTX builds
def test_clip_vit_b32_every_precision(tmp_path):
    out = tmp_path / "clip"
    assert main(["--model", "clip:ViT-B/32", "--weights", "random:0", "--out", str(out), *COMMON]) == 0
    for graph, inputs in (("image", {"image"}), ("text", {"input_ids"})):
        engines = engines_of(out / graph)
        assert sorted(engines) == sorted(PRECISIONS), f"{graph}: {sorted(engines)}"
        assert all({t["name"] for t in e["inputs"]} == inputs for e in engines.values())
