"""export.import_onnx with a graph edge-mm's exporter did not make (built here with onnx.helper).

The graph: colour "image_nhwc" and depth "dmap", both NHWC, colour in 0-255 units, depth with a
fixed metric range and far-is-bright polarity, a probability map out in NHWC. It is imported
(torch unimportable), its variants are made, and the runtime's saliency map on the D435 recording
and on synthetic scenes equals a hand-written reference: the card's preprocessing written out
here in plain numpy/OpenCV, the ORIGINAL file run with ONNX Runtime directly, and a bilinear resize.
Then the bad cards: each is one line naming the problem, exit 2, nothing written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from import_support import NHWC_CARD, nhwc_two_input_net, recording_frames
from runtime_support import read_events
from support import ROOT

from edge_mm.synthetic import SceneGenerator

# Import without torch: a finder that refuses torch, in a fresh interpreter. (sys.modules["torch"] = None
# would do the same for our code, but scipy's array-API helper, reached through PySODMetrics in the
# report, calls getattr() on whatever sys.modules["torch"] holds and crashes on None.)
_IMPORT_WITHOUT_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError("torch is not installed here")
sys.meta_path.insert(0, NoTorch())
from export.import_onnx import cli
code = cli(sys.argv[1:])
assert not [m for m in sys.modules if m.split(".")[0] == "torch"], "torch was imported"
sys.exit(code)
"""


def import_without_torch(*args) -> subprocess.CompletedProcess:
    env_args = [sys.executable, "-c", _IMPORT_WITHOUT_TORCH, *map(str, args)]
    return subprocess.run(env_args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nhwc")
    onnx_path = nhwc_two_input_net(folder / "third_party.onnx")
    card = folder / "card.toml"
    card.write_text(NHWC_CARD)
    out = folder / "artifact"
    done = import_without_torch(
        onnx_path, "--card", card, "--out", out, "--calib-count", "6", "--eval-count", "4", "--threads", "1"
    )
    assert done.returncode == 0, done.stderr
    return onnx_path, out


# ---- the hand-written reference ---------------------------------------------------------------------


def reference_feeds(bgr: np.ndarray, depth_m: np.ndarray) -> dict:
    """NHWC_CARD's preprocessing written out: RGB, 64x48, (x - mean) / std in 0-255 units; depth clipped
    to 0.3-4.0 m, (d - 0.3) / 3.7 (far is bright), holes 1.0, (u - 0.5) / 0.25."""
    rgb = cv2.resize(bgr, (64, 48), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float64)
    rgb = (rgb - np.array([120.0, 115.0, 100.0])) / np.array([60.0, 58.0, 57.0])
    valid = np.isfinite(depth_m) & (depth_m > 0)
    unit = (np.clip(np.nan_to_num(depth_m), 0.3, 4.0) - 0.3) / 3.7
    unit = np.where(valid, unit, 1.0).astype(np.float32)
    unit = np.clip(cv2.resize(unit, (64, 48), interpolation=cv2.INTER_LINEAR), 0.0, 1.0).astype(np.float64)
    depth = (unit - 0.5) / 0.25
    return {"image_nhwc": rgb[None].astype(np.float32), "dmap": depth[None, :, :, None].astype(np.float32)}


def reference_probability(onnx_path: Path, bgr: np.ndarray, depth_m: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (prob,) = session.run(["prob"], reference_feeds(bgr, depth_m))
    h, w = bgr.shape[:2]
    return np.clip(cv2.resize(prob[0, :, :, 0], (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def synthetic_frames(count: int = 3):
    generator = SceneGenerator(size=(120, 160), seed=5)
    scenes = [generator.generate(i) for i in range(count)]
    for scene in scenes:  # holes, as a camera gives them
        scene.depth_m[:10, :20] = 0.0
    return [(s.bgr, s.depth_m) for s in scenes]


def runtime_model(artifact: Path, precision: str = "fp32"):
    from edge_mm.artifact import Artifact
    from runtime.backends.select import select_backend
    from runtime.saliency import SaliencyModel

    return SaliencyModel(select_backend(Artifact(artifact), "ort-cpu", precision, threads=1).backend)


# ---- the artifact ---------------------------------------------------------------------------------


def test_artifact_has_every_file_and_the_spec(imported):
    from edge_mm.artifact import Artifact

    _, out = imported
    artifact = Artifact(out)
    assert artifact.variants() == ["fp32", "fp16", "int8"]
    spec = artifact.spec
    assert spec.kind == "rgbd-saliency" and spec.name == "helper-nhwc"
    assert [(t.name, t.role, t.layout) for t in spec.inputs] == [
        ("image_nhwc", "rgb", "NHWC"),
        ("dmap", "depth", "NHWC"),
    ]
    assert spec.inputs[0].shape == ["batch", "height", "width", 3]
    assert spec.profile == {"batch": [1, 1, 8], "height": [48, 48, 96], "width": [64, 64, 128]}
    assert spec.postprocess["output"] == "probability" and spec.postprocess["output_name"] == "prob"
    for precision in ("fp16", "int8"):  # the spec is in every file's metadata
        from edge_mm.artifact import read_onnx_spec

        assert read_onnx_spec(artifact.onnx_path(precision)).digest() == spec.digest()
    report = artifact.report()
    assert report["kind"] == "rgbd-saliency" and report["weights"]["source"] == "import"
    assert set(report["variants"]) == {"fp32", "fp16", "int8"}
    assert report["variants"]["int8"]["vs_fp32"]["mae"] < 0.05
    assert report["calibration"]["source"] == "synthetic" and report["calibration"]["count"] == 6
    assert json.loads((out / "calibration.json").read_text())["spec_digest"] == spec.digest()


def test_runtime_equals_the_reference_on_the_d435_recording(imported, d435_bag):
    onnx_path, out = imported
    model = runtime_model(out)
    frames = recording_frames(d435_bag)
    assert frames
    for color, depth_m in frames:
        got = model.postprocess(model.infer(model.preprocess(color, depth_m)), color.shape[:2], depth_m).prob
        want = reference_probability(onnx_path, color, depth_m)
        assert got.shape == color.shape[:2]
        np.testing.assert_allclose(got, want, atol=2e-5)
        assert want.std() > 1e-3  # the map is not flat: the comparison can fail


def test_runtime_equals_the_reference_on_synthetic_scenes(imported):
    onnx_path, out = imported
    model = runtime_model(out)
    for color, depth_m in synthetic_frames():
        got = model.postprocess(model.infer(model.preprocess(color, depth_m)), color.shape[:2], depth_m).prob
        np.testing.assert_allclose(got, reference_probability(onnx_path, color, depth_m), atol=2e-5)


def test_variants_run_close_to_fp32(imported):
    _, out = imported
    color, depth_m = synthetic_frames(1)[0]
    maps = {}
    for precision in ("fp32", "fp16", "int8"):
        model = runtime_model(out, precision)
        maps[precision] = model.postprocess(model.infer(model.preprocess(color, depth_m)), color.shape[:2], None).prob
    assert np.abs(maps["fp16"] - maps["fp32"]).max() < 5e-3
    assert 0 < np.abs(maps["int8"] - maps["fp32"]).mean() < 0.05


@pytest.mark.parametrize("camera", ["recording", "synthetic"])
def test_edge_mm_run_on_the_import(imported, d435_bag, tmp_path, camera):
    """The command users type, unchanged: its events are the reference map's box and score."""
    from runtime.cli import main
    from runtime.saliency import analyse_saliency

    onnx_path, out = imported
    events = tmp_path / "events.jsonl"
    uri = f"recording:{d435_bag}" if camera == "recording" else "synthetic:5"
    args = ["--model", out, "--camera", uri, "--headless", "--precision", "fp32", "--backend", "ort-cpu"]
    args += ["--threads", "1", "--events", events, "--quiet", "--frames", "2"]
    if camera == "synthetic":
        args += ["--size", "160x120"]
    assert main([str(a) for a in args]) == 0
    lines = read_events(events)
    assert lines and all("box" in line for line in lines)
    if camera == "recording":
        (color, depth_m), line = recording_frames(d435_bag)[0], lines[0]
        want = analyse_saliency(reference_probability(onnx_path, color, depth_m), color.shape[:2], depth_m)
        assert line["box"] == (list(want.box) if want.box is not None else None)
        assert line["score"] == pytest.approx(want.score, abs=1e-4)


# ---- bad cards ------------------------------------------------------------------------------------

# (what to change in NHWC_CARD, words the one-line error must contain)
BAD_CARDS = [
    (
        ("[inputs.dmap]", "[inputs.depth]"),
        "card input 'depth' is not in the graph; the graph's inputs are image_nhwc[n,h,w,3], dmap[n,h,w,1]",
    ),
    (
        ('layout = "NHWC"\ncolour_order', 'layout = "NCHW"\ncolour_order'),
        "says layout NCHW (3 channels on axis 1) but the graph's image_nhwc is image_nhwc[n,h,w,3]",
    ),
    (
        ('name = "prob"', 'name = "probability"'),
        "card output 'probability' is not in the graph; the graph's outputs are prob[n,h,w,1]",
    ),
    (
        ('meaning = "probability"\nlayout = "NHWC"', 'meaning = "probability"\nlayout = "NCHW"'),
        "graph output prob[n,h,w,1] cannot be a saliency map with layout NCHW",
    ),
    (('kind = "rgbd-saliency"', 'kind = "rgb-saliency"'), "card kind 'rgb-saliency' has a depth input 'dmap'"),
    (('role = "depth"', 'role = "rgb"'), "card inputs 'image_nhwc' and 'dmap' both have role 'rgb'"),
    (
        ("mean = [120.0, 115.0, 100.0]", "mean = [120.0, 115.0]"),
        "card [inputs.image_nhwc] mean = [120.0, 115.0] must be 3 number(s)",
    ),
    (
        ('scaling = "0-255"', 'scaling = "0-65535"'),
        "card [inputs.image_nhwc] scaling = '0-65535' is not one of '0-1', '0-255'",
    ),
    (("std = 0.25", "stdev = 0.25"), "card [inputs.dmap] has unknown key 'stdev'"),
    (('meaning = "probability"', 'meaning = "logits"\nchannel = -1'), "card [output] channel = -1 must be an int >= 0"),
    (
        ('meaning = "probability"', 'meaning = "odds"'),
        "card [output] meaning = 'odds' is not one of 'probability', 'logits'",
    ),
    (("range_m = [0.3, 4.0]", "range_m = [4.0, 0.3]"), "depth_range_m must be (near, far) metres with 0 <= near < far"),
    (("size = [48, 64]\n", ""), "has dynamic height/width; give the size frames are resized to"),
    (
        ("max_size = [96, 128]", "max_size = [32, 128]"),
        "heights must satisfy min_size <= size <= max_size, got 48 <= 48 <= 32",
    ),
    (('kind = "rgbd-saliency"', 'kind = "detector"'), "error: card kind = 'detector' is not one of"),
    (("[output]", "[outputs]"), "error: card has unknown key 'outputs'"),
    (("format = 1", 'format = 1\nkind = "x'), "is not valid TOML"),
]


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory):
    return nhwc_two_input_net(tmp_path_factory.mktemp("bad") / "g.onnx")


@pytest.mark.parametrize("change,words", BAD_CARDS, ids=[w[:40] for _, w in BAD_CARDS])
def test_bad_card_is_one_line(graph_file, tmp_path, capsys, change, words):
    from export.import_onnx import cli

    old, new = change
    assert old in NHWC_CARD, old
    card = tmp_path / "bad.toml"
    card.write_text(NHWC_CARD.replace(old, new, 1))
    out = tmp_path / "out"
    assert cli([str(graph_file), "--card", str(card), "--out", str(out), "--no-engine"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and words in err, err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_opset_tensorrt_cannot_parse(tmp_path, capsys):
    from export.import_onnx import cli

    graph = nhwc_two_input_net(tmp_path / "old.onnx", opset=7)
    card = tmp_path / "card.toml"
    card.write_text(NHWC_CARD)
    assert cli([str(graph), "--card", str(card), "--out", str(tmp_path / "out"), "--no-engine"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has opset 7; TensorRT's ONNX parser reads opsets 9-25" in err and "\n" not in err


def test_a_probability_card_on_a_logits_graph(tmp_path, capsys):
    """The card says probability, the graph's values leave [0, 1]: the first run catches it."""
    import onnx

    from export.import_onnx import cli

    path = nhwc_two_input_net(tmp_path / "g.onnx")
    model = onnx.load(str(path))
    sigmoid = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    sigmoid.op_type, sigmoid.name = "Identity", "no_sigmoid"  # the graph now gives logits
    onnx.save(model, str(path))
    card = tmp_path / "card.toml"
    card.write_text(NHWC_CARD)
    assert cli([str(path), "--card", str(card), "--out", str(tmp_path / "out"), "--no-engine"]) == 2
    err = capsys.readouterr().err.strip()
    assert "meaning = 'probability' but the graph's 'prob' gave values in" in err and "set meaning = 'logits'" in err


def test_an_output_that_cannot_be_a_saliency_map(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    from export.import_onnx import cli

    path = nhwc_two_input_net(tmp_path / "g.onnx")
    model = onnx.load(str(path))
    model.graph.node.append(helper.make_node("ReduceMean", ["prob"], ["score"], axes=[1, 2, 3], keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"]))
    onnx.save(model, str(path))
    card = tmp_path / "card.toml"
    card.write_text(NHWC_CARD.replace('name = "prob"', 'name = "score"'))
    assert cli([str(path), "--card", str(card), "--out", str(tmp_path / "out"), "--no-engine"]) == 2
    err = capsys.readouterr().err.strip()
    assert "graph output score[n] cannot be a saliency map: it has rank 1" in err


# ---- edge-mm-eval --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """An RGB/depth/GT folder (16-bit millimetre depth, with holes) of synthetic scenes."""
    root = tmp_path_factory.mktemp("dataset")
    for sub in ("RGB", "depth", "GT"):
        (root / sub).mkdir()
    generator = SceneGenerator(size=(96, 128), seed=21)
    for i in range(4):
        scene = generator.generate(i)
        depth_mm = np.rint(scene.depth_m * 1000.0).astype(np.uint16)
        depth_mm[:8, :8] = 0
        cv2.imwrite(str(root / "RGB" / f"s{i}.png"), scene.bgr)
        cv2.imwrite(str(root / "depth" / f"s{i}.png"), depth_mm)
        cv2.imwrite(str(root / "GT" / f"s{i}.png"), scene.mask)
    return root


def test_edge_mm_eval_on_the_import_equals_the_reference(imported, dataset, tmp_path):
    """Same protocol and metrics as edge-mm-eval cdinet: map at GT size, per-image min-max, PySODMetrics."""
    from edge_mm.evaluate.cli import main
    from edge_mm.evaluate.metrics import SodMetrics

    onnx_path, out = imported
    assert main(["artifact", "--model", str(out), "--data", str(dataset), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    got = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert got["metrics"]["count"] == 4 and got["model"]["kind"] == "rgbd-saliency"

    reference = SodMetrics()
    for i in range(4):
        bgr = cv2.imread(str(dataset / "RGB" / f"s{i}.png"), cv2.IMREAD_COLOR)
        depth_m = cv2.imread(str(dataset / "depth" / f"s{i}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) * 0.001
        gt = cv2.imread(str(dataset / "GT" / f"s{i}.png"), cv2.IMREAD_GRAYSCALE)
        prob = reference_probability(onnx_path, bgr, depth_m)
        prob = (prob - prob.min()) / (prob.max() - prob.min() + 1e-8)
        pred = np.rint(prob * 255.0).astype(np.uint8)
        assert np.abs(pred.astype(int) - cv2.imread(str(tmp_path / "a" / "pred" / f"s{i}.png"), 0)).max() <= 1
        reference.step(pred, gt)
    want = reference.results()
    for name in ("s_measure", "max_f", "mean_f", "max_e", "mae"):
        assert got["metrics"][name] == pytest.approx(want[name], abs=2e-3), name

    # `edge-mm-eval cdinet --weights DIR` takes the artifact folder as the model: the same numbers.
    torch = pytest.importorskip("torch")  # edge_mm.evaluate.cdinet itself imports torch
    del torch
    assert main(["cdinet", "--weights", str(out), "--data", str(dataset), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["metrics"] == got["metrics"]


# ---- the example cards ----------------------------------------------------------------------------


def test_example_cdinet_card_gives_the_cdinet_spec():
    """export/cards/cdinet-s.toml says exactly what edge-mm's own cdinet-s export puts in its spec."""
    from edge_mm.card import GraphInfo, TensorInfo, read_card, saliency_spec_from_card
    from edge_mm.registry import cdinet_spec, demo_preprocess, parse_model_name

    card = read_card(ROOT / "export" / "cards" / "cdinet-s.toml")
    image = ("batch", 3, "height", "width")
    graph = GraphInfo(
        inputs=(TensorInfo("rgb", "float32", image), TensorInfo("depth", "float32", ("batch", 1, "height", "width"))),
        outputs=(TensorInfo("saliency", "float32", ("batch", 1, "height", "width")),),
        opset=17,
    )
    spec = saliency_spec_from_card(card, graph, "x")
    own = cdinet_spec("cdinet-s", demo_preprocess(parse_model_name("cdinet-s")))
    assert spec.preprocess == own.preprocess
    assert [t.shape for t in spec.inputs] == [t.shape for t in own.inputs]
    assert spec.profile["height"] == own.profile["height"] and spec.postprocess["output"] == "probability"


def test_example_clip_card_gives_the_clip_specs():
    from edge_mm.card import GraphInfo, TensorInfo, clip_specs_from_card, read_card
    from edge_mm.registry import clip_image_spec, clip_text_spec

    card = read_card(ROOT / "export" / "cards" / "clip-vit-b-32.toml")
    image = GraphInfo(
        (TensorInfo("pixel_values", "float32", ("b", 3, 224, 224)),),
        (TensorInfo("image_features", "float32", ("b", 512)),),
        17,
    )
    text = GraphInfo(
        (TensorInfo("text", "int64", ("b", 77)),), (TensorInfo("text_features", "float32", ("b", 512)),), 17
    )
    image_spec, text_spec = clip_specs_from_card(card, image, text, "x")
    assert image_spec.preprocess == clip_image_spec("x", 224).preprocess
    own_text = clip_text_spec("x").preprocess
    assert {k: text_spec.preprocess[k] for k in own_text} == own_text
    assert image_spec.extra["embed_dim"] == text_spec.extra["embed_dim"] == 512


def test_clip_card_errors_name_both_sides():
    from edge_mm.card import GraphInfo, TensorInfo, clip_specs_from_card, read_card
    from edge_mm.errors import CardError

    card = read_card(ROOT / "export" / "cards" / "clip-vit-b-32.toml")
    image = GraphInfo(
        (TensorInfo("pixel_values", "float32", ("b", 3, 224, 224)),),
        (TensorInfo("image_features", "float32", ("b", 512)),),
        17,
    )
    fixed_batch = GraphInfo((TensorInfo("pixel_values", "float32", (1, 3, 224, 224)),), image.outputs, 17)
    text = GraphInfo(
        (TensorInfo("text", "int64", ("b", 64)),), (TensorInfo("text_features", "float32", ("b", 256)),), 17
    )
    with pytest.raises(CardError, match=r"context_length 77 does not fit the graph's text\[b,64\] \(fixed 64\)"):
        clip_specs_from_card(card, image, text, "x")
    good_text = GraphInfo(
        (TensorInfo("text", "int64", ("b", 77)),), (TensorInfo("text_features", "float32", ("b", 256)),), 17
    )
    with pytest.raises(CardError, match=r"the image graph embeds to 512 dims .* but the text graph to 256"):
        clip_specs_from_card(card, image, good_text, "x")
    with pytest.raises(CardError, match=r"fixed batch of 1; edge-mm embeds in batches"):
        clip_specs_from_card(card, fixed_batch, good_text, "x")
    card["text"]["inputs"]["text"]["tokenizer"] = "sentencepiece"
    with pytest.raises(CardError, match=r"tokenizer = 'sentencepiece' is not one of 'clip-bpe'"):
        clip_specs_from_card(card, image, good_text, "x")


def test_calibration_set_from_the_recording_matches_the_import(imported, d435_bag, tmp_path):
    """python -m calib.build --model DIR works on an import, and the set fits its spec (so --calib accepts it)."""
    from calib.build import main
    from calib.store import read_set
    from edge_mm.artifact import Artifact

    _, out = imported
    path = tmp_path / "d435.calib"
    assert (
        main(["--model", str(out), "--source", f"recording:{d435_bag}", "--count", "1", "--out", str(path), "--quiet"])
        == 0
    )
    calib_set = read_set(path)
    calib_set.check_spec(Artifact(out).spec)
    assert calib_set.arrays["image_nhwc"].shape == (1, 48, 64, 3) and calib_set.arrays["dmap"].shape == (1, 48, 64, 1)


# ---- the spec-driven feeds and maps (edge_mm.saliency_io) -----------------------------------------


def _io(inputs, output, post):
    from edge_mm.rgbd import RgbdPreprocess
    from edge_mm.saliency_io import SaliencyIO
    from edge_mm.spec import ModelSpec

    pre = RgbdPreprocess(size=(8, 10), antialias=False, quantize_depth_8bit=False).to_dict()
    return SaliencyIO.from_spec(ModelSpec("rgbd-saliency", "t", inputs, [output], pre, post))


def test_three_channel_depth_and_a_chosen_output_channel():
    """BBS-Net-style depth repeated to 3 channels; a 2-channel NHWC map whose channel 1 is salient."""
    from edge_mm.rgbd import RgbdPreprocess, preprocess_rgbd
    from edge_mm.spec import TensorSpec

    io = _io(
        [
            TensorSpec("c", "float32", ["batch", 3, "height", "width"], "NCHW", "rgb"),
            TensorSpec("d3", "float32", ["batch", 3, "height", "width"], "NCHW", "depth"),
        ],
        TensorSpec("m", "float32", ["batch", "h", "w", 2], "NHWC"),
        {"output": "logits", "output_name": "m", "channel": 1},
    )
    bgr = np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    depth = np.linspace(0.5, 3.0, 16 * 20, dtype=np.float32).reshape(16, 20)
    feeds = io.feeds([bgr], [depth])
    rgb, dep = preprocess_rgbd(bgr, depth, RgbdPreprocess(size=(8, 10), antialias=False, quantize_depth_8bit=False))
    np.testing.assert_array_equal(feeds["c"][0], rgb)
    assert feeds["d3"].shape == (1, 3, 8, 10) and all(np.array_equal(feeds["d3"][0, k], dep[0]) for k in range(3))
    out = np.stack([np.zeros((1, 4, 5)), np.full((1, 4, 5), 2.0)], axis=-1).astype(np.float32)
    maps = io.maps({"m": out, "other": np.zeros(3)})
    assert maps.shape == (1, 4, 5) and np.all(maps == 2.0)
    assert io.logits and np.allclose(io.probability(maps[0], (8, 10)), 1 / (1 + np.exp(-2.0)))


def test_rgb_only_ignores_depth_and_a_map_without_channels():
    from edge_mm.spec import TensorSpec

    io = _io(
        [TensorSpec("x", "float32", ["batch", "height", "width", 3], "NHWC", "rgb")],
        TensorSpec("y", "float32", ["batch", "h", "w"], "NHW"),
        {"output": "probability", "output_name": "y"},
    )
    bgr = np.zeros((16, 20, 3), np.uint8)
    feeds = io.feeds([bgr], [None])
    assert list(feeds) == ["x"] and feeds["x"].shape == (1, 8, 10, 3)
    assert io.maps({"y": np.full((1, 4, 5), 0.25, np.float32)}).shape == (1, 4, 5)
    assert io.blank_feeds()["x"].shape == (1, 8, 10, 3)
