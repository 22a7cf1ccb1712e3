"""export.import_onnx with a graph exported here from a small PyTorch module (not by edge-mm's exporter).

Another preprocessing than CDINet's: RGB only (no depth input), mean 0.5 / std 0.25 (not ImageNet)
on 0-1 pixels, a fixed 64x64 input, and logits at half resolution out. Calibration comes from the
D435 recording. The runtime's map must equal the hand-written reference (that preprocessing in
numpy/OpenCV, the original file on ONNX Runtime, bilinear resize, then the sigmoid).
"""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from runtime_support import read_events

torch = pytest.importorskip("torch")
# The legacy exporter is chosen on purpose (opset 17, as many authors still export); its notice says nothing here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CARD = """
format = 1
kind = "rgb-saliency"
name = "torch-rgb-only"
description = "a 2-layer RGB-only saliency net, exported with torch.onnx by its author"

[inputs.input]
role = "rgb"
layout = "NCHW"
colour_order = "rgb"
scaling = "0-1"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
antialias = false

[output]
name = "logits"
meaning = "logits"
"""


class TinyRgbSaliency(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = torch.nn.Conv2d(8, 1, 1)

    def forward(self, x):
        return self.head(torch.relu(self.features(x)))


@pytest.fixture(scope="module")
def imported(tmp_path_factory, d435_bag):
    from export.import_onnx import main

    folder = tmp_path_factory.mktemp("torch-rgb")
    torch.manual_seed(3)
    module = TinyRgbSaliency().eval()
    path = folder / "author_export.onnx"
    with torch.no_grad():
        torch.onnx.export(
            module,
            (torch.zeros(1, 3, 64, 64),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            opset_version=17,
            dynamo=False,
        )
    card = folder / "card.toml"
    card.write_text(CARD)
    out = folder / "artifact"
    args = [path, "--card", card, "--out", out, "--calib-source", f"recording:{d435_bag}", "--calib-count", "1"]
    assert main([str(a) for a in args + ["--eval-count", "4", "--threads", "1", "--no-engine"]]) == 0
    return path, out


def reference_probability(onnx_path, bgr: np.ndarray) -> np.ndarray:
    rgb = cv2.resize(bgr, (64, 64), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float64) / 255.0
    x = ((rgb - 0.5) / 0.25).transpose(2, 0, 1)[None].astype(np.float32)
    (logits,) = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})
    assert logits.shape == (1, 1, 32, 32)
    h, w = bgr.shape[:2]
    resized = cv2.resize(logits[0, 0], (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float64)
    return 1.0 / (1.0 + np.exp(-resized))


def _model(artifact, precision="fp32"):
    from edge_mm.artifact import Artifact
    from runtime.backends.select import select_backend
    from runtime.saliency import SaliencyModel

    return SaliencyModel(select_backend(Artifact(artifact), "ort-cpu", precision, threads=1).backend)


def test_spec_is_rgb_only_with_logits(imported):
    from edge_mm.artifact import Artifact

    _, out = imported
    artifact = Artifact(out)
    spec = artifact.spec
    assert spec.kind == "rgb-saliency" and [t.role for t in spec.inputs] == ["rgb"]
    assert spec.inputs[0].shape == ["batch", 3, 64, 64] and spec.postprocess["output"] == "logits"
    assert spec.preprocess["rgb_mean"] == [0.5, 0.5, 0.5] and spec.preprocess["rgb_std"] == [0.25, 0.25, 0.25]
    assert artifact.variants() == ["fp32", "fp16", "int8"]
    calibration = artifact.report()["calibration"]
    assert calibration["source"].startswith("recording:") and calibration["count"] == 1


def test_runtime_equals_the_reference(imported, d435_bag):
    from import_support import recording_frames

    from edge_mm.synthetic import SceneGenerator

    onnx_path, out = imported
    model = _model(out)
    scenes = SceneGenerator(size=(90, 120), seed=2)
    frames = recording_frames(d435_bag) + [(s.bgr, s.depth_m) for s in map(scenes.generate, range(3))]
    for color, depth_m in frames:
        feeds = model.preprocess(color, depth_m)
        assert list(feeds) == ["input"]  # no depth input, whatever the source gives
        got = model.postprocess(model.infer(feeds), color.shape[:2], depth_m).prob
        want = reference_probability(onnx_path, color)
        np.testing.assert_allclose(got, want, atol=2e-5)
        assert want.std() > 1e-4


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_edge_mm_run_on_the_recording(imported, d435_bag, tmp_path, precision):
    from runtime.cli import main

    _, out = imported
    events = tmp_path / "e.jsonl"
    args = ["--model", out, "--camera", f"recording:{d435_bag}", "--headless", "--precision", precision]
    assert main([str(a) for a in args + ["--backend", "ort-cpu", "--threads", "1", "--events", events, "--quiet"]]) == 0
    lines = read_events(events)
    assert lines and all("score" in line for line in lines)
