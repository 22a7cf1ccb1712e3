"""Real TensorRT-RTX engines built here, ahead of time for sm86, from tiny ONNX files.

TensorRT-RTX's parser and AOT builder run without a GPU, so these tests exercise the real builder
(parse, profile, strong typing, target compute capabilities) and the engine/sidecar/reuse logic.
The model is a CDINet-shaped toy: rgb (N,3,H,W) + depth (N,1,H,W) -> saliency (N,1,H,W).
"""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_mm.errors import EngineError
from edge_mm.hashing import sha256_file
from edge_mm.spec import METADATA_KEY, ModelSpec, TensorSpec

trt = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings are not installed")
onnx = pytest.importorskip("onnx")

from runtime.backends.trt.builder import artifact_onnx, build_or_reuse  # noqa: E402
from runtime.backends.trt.flavours import find_flavour  # noqa: E402
from runtime.backends.trt.logger import make_logger  # noqa: E402

PROFILE = {"batch": [1, 1, 2], "height": [16, 32, 64], "width": [16, 32, 64]}
RTX_VERSION = ".".join(trt.__version__.split(".")[:3])


def toy_spec(profile=PROFILE) -> ModelSpec:
    return ModelSpec(
        kind="cdinet",
        name="toy-rgbd",
        inputs=[
            TensorSpec("rgb", "float32", ["batch", 3, "height", "width"], "NCHW"),
            TensorSpec("depth", "float32", ["batch", 1, "height", "width"], "NCHW"),
        ],
        outputs=[TensorSpec("saliency", "float32", ["batch", 1, "height", "width"], "NCHW")],
        postprocess={"activation": "sigmoid"},
        profile=dict(profile),
    )


def set_spec(model, spec: ModelSpec) -> None:
    del model.metadata_props[:]
    prop = model.metadata_props.add()
    prop.key, prop.value = METADATA_KEY, spec.to_json()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """model.onnx (fp32), model.fp16.onnx, model.int8.onnx (ORT Q/DQ, float bias), like the export stage."""
    torch = pytest.importorskip("torch")
    from onnxconverter_common import float16
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    torch.set_num_threads(1)
    torch.manual_seed(0)

    class ToyRgbd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rgb_conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.depth_conv = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.head = torch.nn.Conv2d(8, 1, 3, padding=1)

        def forward(self, rgb, depth):
            return torch.sigmoid(self.head(torch.relu(self.rgb_conv(rgb) + self.depth_conv(depth))))

    folder = tmp_path_factory.mktemp("artifact")
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        ToyRgbd().eval(),
        (torch.rand(1, 3, 32, 32), torch.rand(1, 1, 32, 32)),
        str(folder / "model.onnx"),
        input_names=["rgb", "depth"],
        output_names=["saliency"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"rgb": axes, "depth": axes, "saliency": axes},
    )
    model = onnx.load(str(folder / "model.onnx"))
    set_spec(model, toy_spec())
    onnx.save(model, str(folder / "model.onnx"))
    onnx.save(float16.convert_float_to_float16(model, keep_io_types=True), str(folder / "model.fp16.onnx"))

    class Reader(CalibrationDataReader):
        def __init__(self, quantize_bias=False):
            rng = np.random.default_rng(0)
            self.batches = iter(
                [
                    {"rgb": rng.random((1, 3, 32, 32), np.float32), "depth": rng.random((1, 1, 32, 32), np.float32)}
                    for _ in range(4)
                ]
            )

        def get_next(self):
            return next(self.batches, None)

    for name, quantize_bias in (("model.int8.onnx", False), ("biasq.int8.onnx", True)):
        quantize_static(
            str(folder / "model.onnx"),
            str(folder / name),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": quantize_bias},
        )
        quantized = onnx.load(str(folder / name))
        set_spec(quantized, toy_spec())
        onnx.save(quantized, str(folder / name))
    return folder


def build(onnx_path, precision, out_dir, **kw):
    kw.setdefault("target_sm", 86)
    kw.setdefault("progress", False)
    return build_or_reuse(onnx_path, precision, out_dir, "tensorrt_rtx", **kw)


def engine_header_ok(path: Path) -> bool:
    """TensorRT-RTX's own header check: not malformed and made by this version (the GPU check needs a GPU)."""
    runtime = trt.Runtime(make_logger(trt))  # TensorRT keeps its first logger: always pass the shared one
    validity, diagnostics = runtime.get_engine_validity(path.read_bytes())
    bad = int(trt.EngineInvalidityDiagnostics.MALFORMED_ENGINE) | int(trt.EngineInvalidityDiagnostics.VERSION_MISMATCH)
    return int(diagnostics) & bad == 0


def test_fp32_build_writes_engine_and_sidecar(artifact, tmp_path):
    start = time.perf_counter()
    outcome = build(artifact / "model.onnx", "fp32", tmp_path)
    print(f"fp32 AOT build for sm86: {time.perf_counter() - start:.2f} s")
    engine = outcome.engine_path
    assert engine.name == f"model.fp32.rtx{RTX_VERSION}.sm86.engine"
    assert not outcome.reused and engine.stat().st_size > 1000
    assert engine_header_ok(engine)
    side = json.loads(Path(str(engine) + ".json").read_text())
    assert side["tensorrt"] == {"flavour": "tensorrt_rtx", "version": trt.__version__, "tool": "python"}
    assert side["targets"] == [86] and side["precision"] == "fp32" and side["dla_core"] is None
    assert side["onnx"] == {"file": "model.onnx", "sha256": sha256_file(artifact / "model.onnx")}
    assert side["engine_sha256"] == sha256_file(engine)
    assert side["inputs"] == [
        {
            "name": "rgb",
            "dtype": "float32",
            "shape": [-1, 3, -1, -1],
            "profile": {"min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [2, 3, 64, 64]},
        },
        {
            "name": "depth",
            "dtype": "float32",
            "shape": [-1, 1, -1, -1],
            "profile": {"min": [1, 1, 16, 16], "opt": [1, 1, 32, 32], "max": [2, 1, 64, 64]},
        },
    ]
    assert side["outputs"] == [{"name": "saliency", "dtype": "float32", "shape": [-1, 1, -1, -1]}]
    assert ModelSpec.from_dict(side["spec"]) == toy_spec()
    assert side["build_options"]["strongly_typed"] is True
    assert side["build_options"]["runtime_cache"] == engine.name + ".runtime-cache"
    assert not list(tmp_path.glob("timing.*")), "TensorRT-RTX has no timing cache"
    assert not list(tmp_path.glob(".*.part")), "no temporary files left behind"


def test_second_build_reuses_and_changes_rebuild(artifact, tmp_path, capsys):
    first = build(artifact / "model.onnx", "fp32", tmp_path, progress=True)
    stamp = first.engine_path.stat().st_mtime_ns
    second = build(artifact / "model.onnx", "fp32", tmp_path, progress=True)
    assert second.reused and second.engine_path == first.engine_path
    assert first.engine_path.stat().st_mtime_ns == stamp
    assert "reusing model.fp32" in capsys.readouterr().out

    wider = build(artifact / "model.onnx", "fp32", tmp_path, profile={"batch": [1, 2, 4]})
    assert not wider.reused and wider.reason == "changed: profile"
    assert wider.sidecar["inputs"][0]["profile"]["max"] == [4, 3, 64, 64]

    leveled = build(artifact / "model.onnx", "fp32", tmp_path, profile={"batch": [1, 2, 4]}, optimization_level=2)
    assert not leveled.reused and leveled.reason == "changed: options"

    first.engine_path.write_bytes(first.engine_path.read_bytes()[:-1] + b"\0")  # a damaged engine
    repaired = build(artifact / "model.onnx", "fp32", tmp_path, profile={"batch": [1, 2, 4]}, optimization_level=2)
    assert not repaired.reused and "does not match its sidecar" in repaired.reason


def test_changed_onnx_rebuilds(artifact, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes((artifact / "model.onnx").read_bytes())
    build(onnx_path, "fp32", tmp_path)
    model = onnx.load(str(onnx_path))
    model.doc_string = "re-exported"
    onnx.save(model, str(onnx_path))
    again = build(onnx_path, "fp32", tmp_path)
    assert not again.reused and again.reason == "changed: onnx_sha256"


def test_fp16_and_int8_variants_build(artifact, tmp_path):
    for precision in ("fp16", "int8"):
        start = time.perf_counter()
        outcome = build(artifact_onnx(artifact, precision), precision, tmp_path)
        print(f"{precision} AOT build for sm86: {time.perf_counter() - start:.2f} s")
        assert outcome.engine_path.name == f"model.{precision}.rtx{RTX_VERSION}.sm86.engine"
        assert outcome.sidecar["precision"] == precision
        assert outcome.sidecar["onnx"]["file"] == f"model.{precision}.onnx"
        # keep_io_types / ORT Q/DQ keep float32 I/O, so the runtime feeds the same arrays.
        assert {t["dtype"] for t in outcome.sidecar["inputs"] + outcome.sidecar["outputs"]} == {"float32"}
        assert engine_header_ok(outcome.engine_path)


def test_several_rtx_targets_in_one_engine(artifact, tmp_path):
    outcome = build(artifact / "model.onnx", "fp32", tmp_path, target_sm=["sm89", "8.6", 120])
    assert outcome.engine_path.name == f"model.fp32.rtx{RTX_VERSION}.sm86-89-120.engine"
    assert outcome.sidecar["targets"] == [86, 89, 120]


def test_unsupported_rtx_target_is_named(artifact, tmp_path):
    with pytest.raises(EngineError, match=r"cannot target sm90; it supports .*sm86"):
        build(artifact / "model.onnx", "fp32", tmp_path, target_sm=90)


def test_int8_with_quantized_bias_is_refused_naming_the_node(artifact, tmp_path):
    # ORT's default QuantizeBias=True gives int32 biases behind DequantizeLinear; TensorRT refuses them.
    with pytest.raises(EngineError) as info:
        build(artifact / "biasq.int8.onnx", "int8", tmp_path)
    message = str(info.value)
    assert "cannot parse biasq.int8.onnx: node '" in message
    assert "bias_DequantizeLinear' (DequantizeLinear)" in message and "Int32" in message
    assert "\n" not in message
    assert not list(tmp_path.glob("*.engine*"))


def test_unsupported_operator_names_the_node(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="fine_relu"),
            helper.make_node("FancyOp", ["r"], ["y"], name="the_bad_node", domain="com.example"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(model, str(tmp_path / "odd.onnx"))
    with pytest.raises(
        EngineError, match=r"cannot parse odd.onnx: node 'the_bad_node' \(FancyOp\): .*Plugin not found"
    ):
        build(tmp_path / "odd.onnx", "fp32", tmp_path, profile={"batch": [1, 1, 4]})


def test_precision_must_match_the_onnx_when_strongly_typed(artifact, tmp_path):
    with pytest.raises(EngineError, match="no float16 tensors.*model.fp16.onnx"):
        build(artifact / "model.onnx", "fp16", tmp_path)
    with pytest.raises(EngineError, match="no QuantizeLinear/DequantizeLinear.*model.int8.onnx"):
        build(artifact / "model.onnx", "int8", tmp_path)
    with pytest.raises(EngineError, match="is quantized.*precision int8"):
        build(artifact / "model.int8.onnx", "fp32", tmp_path)
    with pytest.raises(EngineError, match="unknown precision 'bf16'"):
        build(artifact / "model.onnx", "bf16", tmp_path)


def test_missing_profile_axis_is_named(artifact, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    model = onnx.load(str(artifact / "model.onnx"))
    set_spec(model, toy_spec({"batch": [1, 1, 2]}))
    onnx.save(model, str(onnx_path))
    with pytest.raises(EngineError, match=r"no optimization profile for axis 'height' of input 'rgb'"):
        build(onnx_path, "fp32", tmp_path)
    outcome = build(onnx_path, "fp32", tmp_path, profile={"height": [32, 32, 32], "width": [32, 48, 64]})
    assert outcome.sidecar["inputs"][1]["profile"]["max"] == [2, 1, 32, 64]


def test_rtx_options_that_do_not_apply_are_refused(artifact, tmp_path):
    with pytest.raises(EngineError, match="no DLA support"):
        build(artifact / "model.onnx", "fp32", tmp_path, dla_core=0)
    batches = [{"rgb": np.zeros((1, 3, 32, 32), np.float32), "depth": np.zeros((1, 1, 32, 32), np.float32)}]
    with pytest.raises(EngineError, match="calibration data is only used for int8 with the TensorRT 10.x"):
        build(artifact / "model.onnx", "int8", tmp_path, calibration_data=batches)


def test_rtx_without_a_gpu_needs_a_target(artifact, tmp_path):
    from runtime.backends.trt import cuda as cuda_buffers

    if cuda_buffers.device_count() > 0:
        pytest.skip("a GPU is present, so TensorRT-RTX builds for it without target_sm")
    with pytest.raises(EngineError, match="pass target_sm"):
        build(artifact / "model.onnx", "fp32", tmp_path, target_sm=None)


def test_missing_onnx_is_a_clear_error(tmp_path):
    with pytest.raises(EngineError, match="does not exist; export it with `python -m export.build_engine"):
        build(tmp_path / "model.onnx", "fp32", tmp_path)


def test_requesting_tensorrt_when_absent_says_how_to_install():
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed")
    with pytest.raises(EngineError, match=r"tensorrt Python package is not installed; pip install 'edge-mm\[trt\]'"):
        find_flavour("tensorrt")


def test_no_tensorrt_at_all_gives_the_install_message(artifact, tmp_path):
    # A fresh interpreter where no TensorRT module can be imported and no trtexec is on PATH.
    if Path("/usr/src/tensorrt/bin/trtexec").exists():
        pytest.skip("trtexec is installed at the JetPack location")
    code = (
        "import sys\n"
        "for name in ('tensorrt', 'tensorrt_bindings', 'tensorrt_rtx', 'tensorrt_rtx_bindings'):\n"
        "    sys.modules[name] = None  # makes `import name` raise ImportError\n"
        "from edge_mm.errors import EngineError\n"
        "from runtime.backends.trt.builder import build_engine\n"
        "try:\n"
        f"    build_engine({str(artifact / 'model.onnx')!r}, 'fp16', {str(tmp_path)!r})\n"
        "except EngineError as exc:\n"
        "    print(exc)\n"
    )
    env = dict(os.environ, PATH=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    message = out.stdout.strip()
    assert message.startswith("TensorRT is not installed")
    assert "pip install 'edge-mm[trt]'" in message and "JetPack" in message
    assert "\n" not in message


def test_external_weights_are_part_of_the_key(artifact, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    model = onnx.load(str(artifact / "model.onnx"))
    onnx.save(
        model,
        str(onnx_path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    first = build(onnx_path, "fp32", tmp_path)
    assert engine_header_ok(first.engine_path)
    data = tmp_path / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 1  # retrained weights, same graph file
    data.write_bytes(bytes(raw))
    assert build(onnx_path, "fp32", tmp_path).reason == "changed: onnx_sha256"
    data.unlink()
    with pytest.raises(EngineError, match="keeps weights in model.onnx.data, which is missing"):
        build(onnx_path, "fp32", tmp_path)


def test_out_of_memory_retries_once_with_a_narrower_profile(artifact, tmp_path, capsys):
    """A 16 MiB workspace cannot hold a batch-8 1024x1024 profile; the native size and batch fit."""
    wide = {"batch": [1, 1, 8], "height": [16, 32, 1024], "width": [16, 32, 1024]}
    outcome = build(artifact / "model.onnx", "fp32", tmp_path, profile=wide, workspace_mib=16, progress=True)
    said = capsys.readouterr().out
    assert "out of memory with profile batch 1..8 (opt 1), height 16..1024 (opt 32)" in said
    assert "retrying once with batch 1..1 (opt 1), height 16..32 (opt 32), width 16..32 (opt 32)" in said
    sidecar = outcome.sidecar
    narrowed = {"batch": [1, 1, 1], "height": [16, 32, 32], "width": [16, 32, 32]}
    assert sidecar["build_options"]["narrowed_profile_after_out_of_memory"] == narrowed
    assert sidecar["spec"]["profile"] == narrowed  # the runtime sees the batch the engine really takes
    assert {t["name"]: t["profile"]["max"] for t in sidecar["inputs"]} == {
        "rgb": [1, 3, 32, 32],
        "depth": [1, 1, 32, 32],
    }
    again = build(artifact / "model.onnx", "fp32", tmp_path, profile=wide, workspace_mib=16)
    assert again.reused  # the key is the asked profile: no second failing build on the next call


def test_a_build_that_fails_after_narrowing_is_an_error(artifact, tmp_path, capsys):
    """Narrowing happens once: a workspace too small for even the native size is an EngineError."""
    huge = {"batch": [1, 1, 8], "height": [16, 2048, 2048], "width": [16, 2048, 2048]}
    with pytest.raises(EngineError, match="TensorRT could not build model.onnx"):
        build(artifact / "model.onnx", "fp32", tmp_path, profile=huge, workspace_mib=1, progress=True)
    assert capsys.readouterr().out.count("retrying once") == 1
    assert not list(tmp_path.glob("*.engine*")), "nothing half written"
