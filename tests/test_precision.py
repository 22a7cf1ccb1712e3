"""FP16 and INT8 (Q/DQ) variants of small CDINet-like and CLIP-text-like graphs.

The graphs are exported here with torch.onnx.export (legacy exporter, opset 17) so they contain what
the real exporters emit: Conv+BatchNorm (folded), ReLU, pooling, nearest and bilinear Resize,
sigmoid, LayerNormalization, Softmax attention with a -inf causal mask, QuickGELU, residual adds,
an integer ArgMax + Gather (CLIP's EOT pooling), a projection and an L2 normalisation.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from edge_mm.errors import CalibrationError, ExportError
from export.precision import (
    FeedsCalibrationReader,
    compare_outputs,
    fp32_node_names,
    qdq_summary,
    to_fp16,
    to_int8_qdq,
    trt_rtx_check,
)
from export.precision import graph as g

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


@pytest.fixture(autouse=True)
def _quiet_ort_quantization(caplog):
    """ORT's quantization logs hints at WARNING on the root logger; quiet them for these tests only
    (set at import, the level leaked into every later test module's log capture)."""
    caplog.set_level(logging.ERROR)


EOT = 999
VOCAB = 1000


# -- test models ---------------------------------------------------------------------------------


class TinySaliency(nn.Module):
    """CDINet-like: two streams, concat fusion, decoder with nearest and bilinear upsampling."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

        self.rgb = nn.Sequential(block(3, c), nn.AvgPool2d(2), block(c, 2 * c), nn.MaxPool2d(2))
        self.depth = nn.Sequential(block(1, c), nn.AvgPool2d(2), block(c, 2 * c), nn.MaxPool2d(2))
        self.fuse = block(4 * c, 2 * c)
        self.decode = block(2 * c, c)
        self.predict = nn.Conv2d(c, 1, 1)
        for bn in self.modules():  # non-trivial running statistics, so folding BN matters
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 2.0)

    def forward(self, rgb, depth):
        x = self.fuse(torch.cat([self.rgb(rgb), self.depth(depth)], 1))
        x = self.decode(F.interpolate(x, scale_factor=2, mode="nearest"))
        x = F.interpolate(x, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.predict(x))


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), QuickGELU(), nn.Linear(4 * d, d))

    def forward(self, x, mask):
        n, length, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).reshape(n, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attention = (q @ k.transpose(-1, -2)) * (d // self.heads) ** -0.5 + mask
        x = x + self.out((attention.softmax(-1) @ v).transpose(1, 2).reshape(n, length, d))
        return x + self.mlp(self.ln_2(x))


class TinyTextEncoder(nn.Module):
    """CLIP-text-like: token + position embedding, causal blocks, ln_final, EOT pooling, projection, L2."""

    def __init__(self, d: int = 32, heads: int = 2, layers: int = 2, embed: int = 16, context: int = 77) -> None:
        super().__init__()
        self.token = nn.Embedding(VOCAB, d)
        self.position = nn.Parameter(torch.randn(context, d) * 0.1)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_final = nn.LayerNorm(d)
        self.projection = nn.Parameter(torch.randn(d, embed) * d**-0.5)
        self.register_buffer("mask", torch.full((context, context), float("-inf")).triu(1))

    def forward(self, input_ids):
        x = self.token(input_ids) + self.position
        for block in self.blocks:
            x = block(x, self.mask)
        x = self.ln_final(x)
        eot = (input_ids == EOT).to(torch.int32).argmax(-1)
        x = x[torch.arange(x.shape[0]), eot] @ self.projection
        return x / x.norm(dim=-1, keepdim=True)


class DecomposedLayerNorm(nn.Module):
    """LayerNorm written out (what exporters emit below opset 17): ReduceMean, Sub, Pow, Sqrt, Div."""

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * 2.0 + 0.5


class SoftmaxHead(nn.Module):
    """A graph whose output is written by an op kept in FP32 (onnxconverter-common raises on these)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 8)

    def forward(self, x):
        return self.linear(x).softmax(-1)


def export(module: nn.Module, args, names, outputs, dynamic, path) -> onnx.ModelProto:
    torch.manual_seed(0)
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            opset_version=17,
            dynamo=False,
            input_names=names,
            output_names=outputs,
            dynamic_axes=dynamic,
        )
    model = onnx.load(str(path))
    model.metadata_props.add(key="edge_mm", value='{"kind": "test"}')
    return model


def saliency_feeds(rng, n: int = 1, size: int = 32):
    coarse = rng.normal(0, 1, (n, 4, size // 8, size // 8)).astype(np.float32)
    image = np.kron(coarse, np.ones((1, 1, 8, 8), np.float32)) + 0.2 * rng.normal(0, 1, (n, 4, size, size)).astype(
        np.float32
    )
    return {"rgb": np.ascontiguousarray(image[:, :3]), "depth": np.ascontiguousarray(image[:, 3:])}


def text_feeds(rng, n: int = 1):
    ids = np.zeros((n, 77), np.int64)
    for row in ids:
        length = int(rng.integers(3, 40))
        row[0], row[1:length], row[length] = VOCAB - 2, rng.integers(1, VOCAB - 2, length - 1), EOT
    return {"input_ids": ids}


@pytest.fixture(scope="module")
def saliency(tmp_path_factory):
    torch.manual_seed(0)
    args = (torch.randn(1, 3, 32, 32), torch.randn(1, 1, 32, 32))
    axes = {"rgb": {0: "n", 2: "h", 3: "w"}, "depth": {0: "n", 2: "h", 3: "w"}, "saliency": {0: "n", 2: "h", 3: "w"}}
    return export(TinySaliency(), args, ["rgb", "depth"], ["saliency"], axes, tmp_path_factory.mktemp("m") / "s.onnx")


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    torch.manual_seed(0)
    ids = torch.from_numpy(text_feeds(np.random.default_rng(1), 2)["input_ids"])
    axes = {"input_ids": {0: "n"}, "text_embeds": {0: "n"}}
    return export(
        TinyTextEncoder(), (ids,), ["input_ids"], ["text_embeds"], axes, tmp_path_factory.mktemp("m") / "t.onnx"
    )


@pytest.fixture(scope="module")
def variants(saliency, text):
    rng = np.random.default_rng(0)
    return {
        "saliency": {
            "fp32": saliency,
            "fp16": to_fp16(saliency),
            "int8": to_int8_qdq(saliency, [saliency_feeds(rng) for _ in range(8)]),
        },
        "text": {"fp32": text, "fp16": to_fp16(text), "int8": to_int8_qdq(text, [text_feeds(rng) for _ in range(8)])},
    }


def run(model: onnx.ModelProto, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def elem_types(model: onnx.ModelProto):
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    }
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    return types


FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
FEEDS = {"saliency": lambda rng: saliency_feeds(rng, 4), "text": lambda rng: text_feeds(rng, 6)}


# -- FP16 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["saliency", "text"])
def test_fp16_is_valid_and_agrees_with_fp32(variants, which):
    fp32, fp16 = variants[which]["fp32"], variants[which]["fp16"]
    onnx.checker.check_model(fp16, full_check=True)
    feeds = FEEDS[which](np.random.default_rng(5))
    reference, candidate = run(fp32, feeds), run(fp16, feeds)
    for _name, out in candidate.items():
        assert out.dtype == np.float32
    for _name, metrics in compare_outputs(reference, candidate).items():
        assert metrics["cosine_min"] > 0.9999, metrics
        assert metrics["max_abs"] < 2e-3, metrics
        assert metrics["max_abs"] > 0  # it really computes in FP16


@pytest.mark.parametrize("which", ["saliency", "text"])
def test_fp16_keeps_io_fp32_and_metadata(variants, which):
    fp32, fp16 = variants[which]["fp32"], variants[which]["fp16"]
    assert g.io_elem_types(fp16) == g.io_elem_types(fp32)
    assert {p.key: p.value for p in fp16.metadata_props} == {p.key: p.value for p in fp32.metadata_props}
    assert fp32.graph.initializer[0].data_type == FLOAT  # the input model is not modified


def test_fp16_computes_weighted_layers_in_fp16_and_sensitive_ops_in_fp32(variants):
    fp16 = variants["text"]["fp16"]
    types = elem_types(fp16)
    kept = fp32_node_names(fp16)
    by_op = {}
    for node in fp16.graph.node:
        by_op.setdefault(node.op_type, []).append(node)
    for op in ("LayerNormalization", "Softmax", "ReduceL2"):
        assert by_op[op], op
        for node in by_op[op]:
            assert node.name in kept
            assert all(types[t] == FLOAT for t in list(node.input) + list(node.output) if t), node.name
    matmuls = by_op["MatMul"]
    assert all(types[node.output[0]] == FLOAT16 for node in matmuls)
    argmax = by_op["ArgMax"][0]  # the EOT index is computed on integers, never on FP16 token ids
    assert types[argmax.input[0]] in (onnx.TensorProto.INT32, onnx.TensorProto.INT64)
    saliency_types = elem_types(variants["saliency"]["fp16"])
    conv_types = {saliency_types[n.output[0]] for n in variants["saliency"]["fp16"].graph.node if n.op_type == "Conv"}
    assert conv_types == {FLOAT16}
    resizes = [n for n in variants["saliency"]["fp16"].graph.node if n.op_type == "Resize"]
    assert len(resizes) == 2
    for node in resizes:  # upsampling runs in FP16, its roi/scales stay FP32 as ONNX requires
        assert saliency_types[node.input[0]] == FLOAT16 and saliency_types[node.output[0]] == FLOAT16
        assert all(saliency_types[t] == FLOAT for t in node.input[1:3] if t)


def test_fp16_keeps_decomposed_layernorm_statistics_fp32(tmp_path):
    model = export(
        DecomposedLayerNorm(),
        (torch.randn(2, 5, 64),),
        ["x"],
        ["y"],
        {"x": {0: "n"}, "y": {0: "n"}},
        tmp_path / "ln.onnx",
    )
    ops = {n.op_type for n in model.graph.node}
    assert {"ReduceMean", "Pow", "Sqrt"} <= ops and "LayerNormalization" not in ops
    fp16 = to_fp16(model)
    types = elem_types(fp16)
    for node in fp16.graph.node:
        if node.op_type in ("ReduceMean", "Pow", "Sqrt"):
            assert all(types[t] == FLOAT for t in list(node.input) + list(node.output) if t), node.name
    sqrt = next(n for n in fp16.graph.node if n.op_type == "Sqrt")
    add_eps = next(n for n in fp16.graph.node if sqrt.input[0] in n.output)
    assert add_eps.op_type == "Add" and types[add_eps.output[0]] == FLOAT  # var + eps stays in the FP32 island
    # Activations near 1000 square past FP16's 65504. ORT's CPU runs ops without FP16 kernels in
    # FP32, so this run cannot show the overflow TensorRT would hit; the graph types above do.
    x = np.random.default_rng(0).normal(0, 1000, (2, 5, 64)).astype(np.float32)
    reference, candidate = run(model, {"x": x})["y"], run(fp16, {"x": x})["y"]
    assert np.abs(reference - candidate).max() < 1e-2


def test_fp16_output_written_by_fp32_op(tmp_path):
    model = export(
        SoftmaxHead(), (torch.randn(3, 16),), ["x"], ["probs"], {"x": {0: "n"}, "probs": {0: "n"}}, tmp_path / "sm.onnx"
    )
    fp16 = to_fp16(model)
    onnx.checker.check_model(fp16, full_check=True)
    x = np.random.default_rng(0).normal(0, 1, (3, 16)).astype(np.float32)
    metrics = compare_outputs(run(model, {"x": x}), run(fp16, {"x": x}))["probs"]
    assert metrics["max_abs"] < 1e-3
    writer = g.producers(fp16.graph)["probs"]
    assert writer.op_type == "Softmax"  # written in FP32 directly, no Cast pair


def test_fp16_refuses_a_converted_model(variants):
    with pytest.raises(ExportError, match="already holds FP16"):
        to_fp16(variants["saliency"]["fp16"])


# -- INT8 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["saliency", "text"])
def test_int8_is_valid_and_agrees_with_fp32(variants, which):
    fp32, int8 = variants[which]["fp32"], variants[which]["int8"]
    onnx.checker.check_model(int8, full_check=True)
    assert g.io_elem_types(int8) == g.io_elem_types(fp32)
    assert {p.key: p.value for p in int8.metadata_props} == {p.key: p.value for p in fp32.metadata_props}
    feeds = FEEDS[which](np.random.default_rng(6))
    for _name, metrics in compare_outputs(run(fp32, feeds), run(int8, feeds)).items():
        assert metrics["cosine_min"] > 0.999, metrics
        assert 0 < metrics["max_abs"] < 0.05, metrics


@pytest.mark.parametrize("which", ["saliency", "text"])
def test_int8_weights_are_per_channel_symmetric_and_biases_float(variants, which):
    int8 = variants[which]["int8"]
    inits = {t.name: t for t in int8.graph.initializer}
    readers = g.consumers(int8.graph)
    weights = 0
    for node in int8.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = numpy_helper.to_array(inits[node.input[2]])
            assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        weight = inits[node.input[0]]
        assert weight.data_type == onnx.TensorProto.INT8, node.name  # never an INT32 bias
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        scale = numpy_helper.to_array(inits[node.input[1]])
        assert scale.shape == (weight.dims[axis],), node.name  # one scale per output channel
        consumer = readers[node.output[0]][0]
        assert consumer.op_type in ("Conv", "MatMul", "Gemm") and consumer.input[1] == node.output[0]
        weights += 1
    assert weights >= 5
    for node in int8.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 2:
            bias = inits[node.input[2]]
            assert bias.data_type == FLOAT
    summary = qdq_summary(int8)
    assert summary["int32_dequantize"] == 0 and summary["nonzero_zero_points"] == 0
    assert summary["quantized_weights"] == weights


def test_int8_leaves_sensitive_nodes_in_float(variants):
    int8 = variants["text"]["int8"]
    writer = g.producers(int8.graph)
    inits = {t.name for t in int8.graph.initializer}

    def dequantized(tensor):
        node = writer.get(tensor)
        return node is not None and node.op_type == "DequantizeLinear"

    for node in int8.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "Add", "Sigmoid", "ReduceL2", "Div"):
            assert not any(dequantized(t) for t in node.input), node.name
        if node.op_type == "MatMul" and not any(
            t in inits or (writer.get(t) and writer[t].input[0] in inits) for t in node.input
        ):
            assert not any(dequantized(t) for t in node.input), f"attention MatMul {node.name} was quantized"
    # The projection nearest the output keeps its FP32 weight.
    heads = g.head_nodes(int8)
    assert heads and all(n.op_type == "MatMul" for n in int8.graph.node if n.name in heads)
    head = next(n for n in int8.graph.node if n.name == heads[0])
    assert any(t in inits for t in head.input)
    saliency = variants["saliency"]["int8"]
    predictor = next(n for n in saliency.graph.node if n.name in g.head_nodes(saliency))
    assert predictor.op_type == "Conv" and predictor.input[1] in {t.name for t in saliency.graph.initializer}


def test_int8_exclusions_by_name_and_type(saliency):
    rng = np.random.default_rng(0)
    feeds = [saliency_feeds(rng) for _ in range(2)]
    convs = [n.name for n in saliency.graph.node if n.op_type == "Conv"]
    default = qdq_summary(to_int8_qdq(saliency, feeds))
    fewer = qdq_summary(to_int8_qdq(saliency, feeds, exclude_nodes=convs[:2]))
    assert fewer["quantized_weights"] == default["quantized_weights"] - 2
    with pytest.raises(ExportError, match="no weights were quantized"):
        to_int8_qdq(saliency, feeds, exclude_op_types=["Conv"])
    with pytest.raises(ExportError, match="not in the graph"):
        to_int8_qdq(saliency, feeds, exclude_nodes=["no_such_node"])


def test_int8_guards_against_int32_bias(saliency):
    feeds = [saliency_feeds(np.random.default_rng(0))]
    with pytest.raises(ExportError, match="INT32"):
        to_int8_qdq(saliency, feeds, extra_options={"QuantizeBias": True})


def test_int8_calibration_feed_errors(saliency):
    rng = np.random.default_rng(0)
    good = saliency_feeds(rng)
    with pytest.raises(CalibrationError, match="missing \\['depth'\\]"):
        to_int8_qdq(saliency, [{"rgb": good["rgb"]}])
    with pytest.raises(CalibrationError, match="dtype float64"):
        to_int8_qdq(saliency, [{"rgb": good["rgb"].astype(np.float64), "depth": good["depth"]}])
    with pytest.raises(CalibrationError, match="empty"):
        to_int8_qdq(saliency, [])
    with pytest.raises(CalibrationError, match="not a dict"):
        to_int8_qdq(saliency, [good["rgb"]])


def test_calibration_reader_generators_and_rewind():
    feeds = [{"x": np.full((1, 2), i, np.float32)} for i in range(3)]
    reader = FeedsCalibrationReader(feeds)
    assert [int(f["x"][0, 0]) for f in iter(reader.get_next, None)] == [0, 1, 2]
    reader.rewind()
    assert int(reader.get_next()["x"][0, 0]) == 0
    one_shot = FeedsCalibrationReader(f for f in feeds)
    assert len(list(iter(one_shot.get_next, None))) == 3 and one_shot.count == 3


# -- TensorRT-RTX accepts the variants -------------------------------------------------------------

needs_rtx = pytest.mark.skipif(not trt_rtx_check.available(), reason="tensorrt_rtx_bindings is not installed")


@needs_rtx
@pytest.mark.parametrize("which", ["saliency", "text"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trt_rtx_parses_and_builds(variants, which, precision):
    data = variants[which][precision].SerializeToString()
    assert trt_rtx_check.trt_rtx_parses(data) == []
    errors, size = trt_rtx_check.trt_rtx_builds(data, dynamic_size=32)
    assert errors == [] and size > 0


@needs_rtx
def test_trt_rtx_refuses_int32_bias(saliency, tmp_path):
    """The check can fail: ORT's default bias quantization gives a graph TensorRT-RTX rejects."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    onnx.save(saliency, str(tmp_path / "fp32.onnx"))
    reader = FeedsCalibrationReader([saliency_feeds(np.random.default_rng(0))])
    quantize_static(
        str(tmp_path / "fp32.onnx"),
        str(tmp_path / "bias.onnx"),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True},
    )
    errors = trt_rtx_check.trt_rtx_parses((tmp_path / "bias.onnx").read_bytes())
    assert errors and "Int32" in errors[0]


# -- comparison ------------------------------------------------------------------------------------


def test_compare_outputs_metrics():
    a = {"y": np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], np.float32)}
    b = {"y": np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]], np.float32)}
    m = compare_outputs(a, b)["y"]
    assert m["max_abs"] == 2.0 and m["mean_abs"] == pytest.approx(4.0 / 6.0)
    assert m["cosine_min"] == 0.0 and m["cosine_mean"] == pytest.approx(2.0 / 3.0)  # 1, 0, and 1 for two zeros
    same = compare_outputs(a, a)["y"]
    assert same["max_abs"] == 0.0 and same["cosine_min"] == pytest.approx(1.0)
    with pytest.raises(ExportError, match="names"):
        compare_outputs(a, {"z": b["y"]})
    with pytest.raises(ExportError, match="shape"):
        compare_outputs(a, {"y": b["y"][:2]})
