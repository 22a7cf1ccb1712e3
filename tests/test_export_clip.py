"""End to end for CLIP: a tiny random CLIP (OpenAI layout, saved as a checkpoint) through the CLI.

`--model clip:custom --weights tiny.pt` is the ordinary path for any CLIP checkpoint; the tiny
architecture (ViT 2 layers width 64 at 32 px, text 2 layers width 64, real 49408 vocabulary and 77
context) keeps the run to seconds.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge_mm.artifact import VARIANT_FILES, Artifact
from edge_mm.clip.model import CLIP
from edge_mm.clip.tokenizer import tokenize
from export.build_engine import main
from export.models import CLIP_ARCHITECTURES, clip_config_of
from runtime.backends.onnxrt import OnnxRuntimeBackend

TINY = dict(
    embed_dim=32,
    image_resolution=32,
    vision_layers=2,
    vision_width=64,
    vision_patch_size=16,
    context_length=77,
    vocab_size=49408,
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=2,
)
# Texts whose end token sits at different positions (1 word .. truncated at 77).
TEXTS = ["a", "a red circle", "a photo of a blue star and a green square", " ".join(["yellow ring"] * 60)]


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return CLIP(**TINY).eval()


@pytest.fixture(scope="module")
def artifact(tiny_clip, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    weights = folder / "tiny.pt"
    torch.save(tiny_clip.state_dict(), weights)
    out = folder / "clip-tiny"
    code = main(
        [
            "--model",
            "clip:custom",
            "--weights",
            str(weights),
            "--out",
            str(out),
            "--calib-count",
            "8",
            "--eval-count",
            "6",
            "--threads",
            "2",
            "--no-engine",
        ]
    )
    assert code == 0
    return out


def test_layout_two_graphs_and_a_summary(artifact):
    assert sorted(p.name for p in artifact.iterdir()) == ["image", "report.json", "text"]
    for role in ("image", "text"):
        names = sorted(p.name for p in (artifact / role).iterdir())
        assert names == ["calibration.json", "model.fp16.onnx", "model.int8.onnx", "model.onnx", "report.json"]
    summary = json.loads((artifact / "report.json").read_text())
    assert summary["kind"] == "clip" and summary["graphs"] == {"image": "image/", "text": "text/"}
    assert set(summary["combined"]) == {"fp32", "fp16", "int8"}
    assert not [p for p in artifact.parent.iterdir() if p.name.startswith(".")]


def test_specs_and_parity(artifact):
    image, text = Artifact(artifact / "image").spec, Artifact(artifact / "text").spec
    assert image.kind == "clip-image" and image.inputs[0].shape == ["batch", 3, 32, 32]
    assert image.outputs[0].name == "image_embeds" and image.outputs[0].shape == ["batch", 32]
    assert text.kind == "clip-text" and text.inputs[0].shape == ["batch", 77] and text.inputs[0].dtype == "int64"
    assert image.postprocess == text.postprocess == {"l2_normalized": True}
    assert image.extra["clip"]["vision_width"] == 64 and text.extra["eot_token_id"] == 49407
    assert image.preprocess["image_size"] == 32
    for role in ("image", "text"):
        parity = json.loads((artifact / role / "report.json").read_text())["parity"]
        assert parity["passed"] and parity["cosine_min"] >= 0.99999
        assert parity["gate"] == {"cosine_at_least": 0.99999}


def test_report_measures_every_variant(artifact):
    image = json.loads((artifact / "image" / "report.json").read_text())
    text = json.loads((artifact / "text" / "report.json").read_text())
    assert image["calibration"]["seed"] == 0 and image["evaluation"]["seed"] == 10_000
    assert image["calibration"]["count"] == 8 and image["evaluation"]["scenes"] == 6
    for report in (image, text):
        for precision in ("fp16", "int8"):
            entry = report["variants"][precision]
            for key in ("cosine_min", "cosine_mean", "zero_shot_top1_agreement", "retrieval_recall_at_1_agreement"):
                assert 0 <= entry[key] <= 1.0 + 1e-9, key
        assert report["variants"]["fp16"]["cosine_min"] > 0.999
        assert report["policy"]["int8"]["qdq"]["quantized_weights"] > 0


def _normalized_text(model, ids):
    with torch.no_grad():
        return F.normalize(model.encode_text(torch.from_numpy(ids)), dim=-1).numpy()


@pytest.mark.parametrize("precision,min_cosine", [("fp32", 0.99999), ("fp16", 0.999), ("int8", 0.98)])
def test_text_graph_pools_the_end_token_in_every_precision(artifact, tiny_clip, precision, min_cosine):
    """Against PyTorch on texts whose EOT sits at positions 2, 4, 11 and 76.

    Thresholds: fp16 keeps LayerNorm/Softmax/reductions in fp32, leaving ~1e-3 relative error per
    layer (cosine > 0.999); int8 rounds weights and activations to 1/127 of their range (a few %
    relative error: cosine > 0.98). Pooling the wrong token (the fp16 SOT/EOT confusion) makes
    every text the same vector, which fails both the cosine and the distinctness check.
    """
    ids = tokenize(TEXTS, truncate=True)
    assert [int(np.argmax(row == 49407)) for row in ids] == [2, 4, 11, 76]
    with OnnxRuntimeBackend(artifact / "text" / VARIANT_FILES[precision], providers="cpu") as backend:
        got = backend.infer({"input_ids": ids})["text_embeds"]
    want = _normalized_text(tiny_clip, ids)
    cosines = np.sum(got * want, axis=1)
    assert cosines.min() >= min_cosine, cosines
    pairwise = got @ got.T
    assert pairwise[~np.eye(len(TEXTS), dtype=bool)].max() < 0.999, "texts collapsed onto one embedding"


def test_image_graph_matches_pytorch_at_a_new_batch(artifact, tiny_clip):
    images = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = F.normalize(tiny_clip.encode_image(torch.from_numpy(images)), dim=-1).numpy()
    for precision, min_cosine in (("fp32", 0.99999), ("fp16", 0.999), ("int8", 0.98)):
        with OnnxRuntimeBackend(Artifact(artifact / "image").onnx_path(precision), providers="cpu") as backend:
            got = backend.infer({"image": images})["image_embeds"]
        assert got.shape == (5, 32)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
        assert np.sum(got * want, axis=1).min() >= min_cosine, precision


def test_published_architecture_table_matches_open_clip():
    open_clip = pytest.importorskip("open_clip")
    names = {
        "RN50": "RN50-quickgelu",
        "RN101": "RN101-quickgelu",
        "RN50x4": "RN50x4-quickgelu",
        "RN50x16": "RN50x16-quickgelu",
        "RN50x64": "RN50x64-quickgelu",
        "ViT-B/32": "ViT-B-32-quickgelu",
        "ViT-B/16": "ViT-B-16-quickgelu",
        "ViT-L/14": "ViT-L-14-quickgelu",
        "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
    }
    for name, config in CLIP_ARCHITECTURES.items():
        ref = open_clip.get_model_config(names[name])
        vision, text = ref["vision_cfg"], ref["text_cfg"]
        assert config["embed_dim"] == ref["embed_dim"], name
        assert config["image_resolution"] == vision["image_size"], name
        assert config["vision_layers"] == vision["layers"] and config["vision_width"] == vision["width"], name
        assert config["vision_patch_size"] == vision.get("patch_size"), name
        assert (config["transformer_width"], config["transformer_heads"], config["transformer_layers"]) == (
            text["width"],
            text["heads"],
            text["layers"],
        ), name
        assert config["context_length"] == text["context_length"] and config["vocab_size"] == text["vocab_size"]
        with torch.device("meta"):  # no memory: shapes only
            model = CLIP(**config)
        inferred = clip_config_of(model)
        assert {k: inferred[k] for k in config} == config, name


@pytest.mark.parametrize("role", ["image", "text"])
def test_int8_matmuls_fuse_into_integer_kernels_in_onnx_runtime(artifact, role, tmp_path):
    """Every MatMul with INT8 weights runs as an integer kernel on the CPU (no DQ shared with a Shape)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(artifact / role / "model.int8.onnx"))
    writer = {o: n for n in model.graph.node for o in n.output}
    assert not [
        n.name
        for n in model.graph.node
        if n.op_type == "Shape"
        and writer.get(n.input[0]) is not None
        and writer[n.input[0]].op_type == "DequantizeLinear"
    ]
    weight_dq = {
        n.output[0]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in {t.name for t in model.graph.initializer}
    }
    quantized_matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weight_dq]
    assert quantized_matmuls
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(artifact / role / "model.int8.onnx"), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    fused = sum(n.op_type == "MatMulIntegerToFloat" for n in optimized.graph.node)
    assert fused == len(quantized_matmuls)
