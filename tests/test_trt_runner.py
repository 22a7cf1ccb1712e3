"""The TensorRT backend (runtime/backends/trt: runner.py, loader.py, logger.py).

Without a GPU: its TensorRT calls are checked against the real TensorRT 11 lean-runtime bindings
and TensorRT-RTX (every name exists; the code uses no other), garbage engines give our EngineError,
and activation fails with a clear error. With a GPU (`gpu`) or full TensorRT (`trt`): real engines
run and are compared with ONNX Runtime.
"""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_mm.artifact import engine_command
from edge_mm.errors import BackendError, EdgeMMError, EngineError, InputError
from edge_mm.spec import METADATA_KEY, ModelSpec, TensorSpec
from runtime.backends.trt import cuda as cuda_buffers
from runtime.backends.trt import loader as trt_backend
from runtime.backends.trt.logger import make_logger
from runtime.backends.trt.runner import REQUIRED_RTX_API, REQUIRED_TRT_API, TensorRTBackend

ROOT = Path(__file__).resolve().parents[1]
# The runtime side of the backend: what must exist in TensorRT's lean runtime bindings.
RUNNER_SOURCES = [ROOT / "runtime" / "backends" / "trt" / f"{name}.py" for name in ("runner", "loader", "logger")]
# How the runner names TensorRT objects -> their TensorRT class.
OBJECT_CLASSES = {
    "runtime": "Runtime",
    "engine": "ICudaEngine",
    "_engine": "ICudaEngine",
    "context": "IExecutionContext",
    "_context": "IExecutionContext",
    "runtime_config": "IRuntimeConfig",
    "runtime_cache": "IRuntimeCache",
    "_runtime_cache": "IRuntimeCache",
}


def resolve(module, dotted: str) -> bool:
    obj = module
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def names_used_by_runner() -> set:
    """'Class.attr' for attributes the runner reads on TensorRT objects, 'A.B' for module paths."""
    used = set()
    nodes = [node for source in RUNNER_SOURCES for node in ast.walk(ast.parse(source.read_text()))]
    for node in nodes:
        if not isinstance(node, ast.Attribute):
            continue
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            chain.insert(0, base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id == "trt":
            for end in range(1, len(chain) + 1):  # trt.A.B -> A and A.B
                used.add(".".join(chain[:end]))
        elif isinstance(base, ast.Name) and base.id in OBJECT_CLASSES:
            used.add(f"{OBJECT_CLASSES[base.id]}.{chain[0]}")
        elif isinstance(base, ast.Name) and base.id == "self" and chain[0] in OBJECT_CLASSES and len(chain) > 1:
            used.add(f"{OBJECT_CLASSES[chain[0]]}.{chain[1]}")
    return {name for name in used if not name.split(".")[-1].startswith("__") or name == "__version__"}


def test_runner_uses_only_declared_tensorrt_names():
    used = names_used_by_runner()
    assert "IExecutionContext.execute_async_v3" in used and "TensorIOMode.INPUT" in used  # the scan works
    assert used - set(REQUIRED_TRT_API) - set(REQUIRED_RTX_API) == set()


def test_tensorrt_11_lean_runtime_has_every_name_the_runner_uses():
    lean = pytest.importorskip("tensorrt_lean_bindings", reason="TensorRT lean bindings are not installed")
    assert lean.__version__.startswith("11.")
    assert [name for name in REQUIRED_TRT_API if not resolve(lean, name)] == []


def test_tensorrt_rtx_has_every_name_the_runner_uses():
    rtx = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings are not installed")
    assert [name for name in REQUIRED_TRT_API + REQUIRED_RTX_API if not resolve(rtx, name)] == []
    for name, bit in trt_backend.VALIDITY_DIAGNOSTICS.items():
        assert int(getattr(rtx.EngineInvalidityDiagnostics, name)) == bit


@pytest.mark.trt
def test_full_tensorrt_has_every_name_the_runner_uses():
    full = pytest.importorskip("tensorrt", reason="tensorrt not installed")
    assert [name for name in REQUIRED_TRT_API if not resolve(full, name)] == []


def test_garbage_engine_bytes_give_engine_error_rtx():
    rtx = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings are not installed")
    logger = make_logger(rtx)
    runtime = trt_backend.create_runtime(rtx, logger)
    with pytest.raises(EngineError) as info:
        trt_backend.deserialize_engine(
            runtime,
            logger,
            b"garbage" * 32,
            "model.fp16.rtx.sm86.engine",
            engine_command("artifacts/x", "fp16"),
        )
    message = str(info.value)
    assert message.startswith("cannot load engine model.fp16.rtx.sm86.engine: TensorRT-RTX says malformed engine")
    assert message.endswith("rebuild it on this machine: edge-mm-engine build artifacts/x --precision fp16")


LEAN_GARBAGE = (
    "import tensorrt_lean_bindings as trt\n"
    "from edge_mm.errors import EngineError\n"
    "from runtime.backends.trt import cuda as cuda_buffers\n"
    "from runtime.backends.trt.loader import create_runtime, deserialize_engine\n"
    "from runtime.backends.trt.logger import make_logger\n"
    "if {skip_gpu_check}:\n"
    "    cuda_buffers.device_count = lambda: 1  # bypass our GPU check so trt.Runtime() is really attempted\n"
    "logger = make_logger(trt)\n"
    "try:\n"
    "    deserialize_engine(create_runtime(trt, logger), logger, b'garbage' * 32, 'x.engine', 'REBUILD')\n"
    "except EngineError as exc:\n"
    "    print('EngineError:', exc)\n"
)


@pytest.mark.parametrize("skip_gpu_check", [False, True], ids=["as-is", "runtime-attempted"])
def test_garbage_engine_bytes_give_engine_error_lean(skip_gpu_check):
    # In a fresh interpreter: TensorRT's failed runtime crashes the process when freed, so a crash
    # here is a failure of our guard, not of pytest.
    pytest.importorskip("tensorrt_lean_bindings", reason="TensorRT lean bindings are not installed")
    has_gpu = cuda_buffers.device_count() > 0
    if skip_gpu_check and has_gpu:
        pytest.skip("a GPU is present; the runtime starts normally")
    code = LEAN_GARBAGE.format(skip_gpu_check=skip_gpu_check)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, f"crashed: {out.returncode} {out.stderr[-500:]}"
    line = out.stdout.strip()
    assert line.startswith("EngineError: ") and "\n" not in line
    if has_gpu:
        assert line.startswith("EngineError: cannot load engine x.engine:") and line.endswith("REBUILD")
    elif skip_gpu_check:
        assert "could not start its runtime: createInferRuntime" in line and "CUDA initialization failure" in line
    else:
        assert "cannot load engines: no CUDA GPU is visible" in line


def test_missing_tensorrt_flavour_is_named():
    with pytest.raises(EngineError, match="unknown TensorRT flavour"):
        trt_backend.import_trt("tensorflow")
    try:
        importlib.import_module("tensorrt")
    except ImportError:
        with pytest.raises(EngineError, match=r"this engine needs tensorrt, which is not installed; pip install"):
            trt_backend.import_trt("tensorrt")


def test_find_engine_without_engines_says_how_to_build(tmp_path):
    with pytest.raises(
        EngineError,
        match=rf"no fp16 TensorRT engine in {tmp_path}; build one: edge-mm-engine build {tmp_path} --precision fp16$",
    ):
        trt_backend.find_engine(tmp_path, "fp16")


# -- real engines ----------------------------------------------------------------------------------

PROFILE = {"batch": [1, 1, 2], "height": [16, 32, 64], "width": [16, 32, 64]}


def toy_spec() -> ModelSpec:
    return ModelSpec(
        kind="cdinet",
        name="toy-rgbd",
        inputs=[
            TensorSpec("rgb", "float32", ["batch", 3, "height", "width"], "NCHW"),
            TensorSpec("depth", "float32", ["batch", 1, "height", "width"], "NCHW"),
        ],
        outputs=[TensorSpec("saliency", "float32", ["batch", 1, "height", "width"], "NCHW")],
        profile=PROFILE,
    )


def write_toy_onnx(path: Path) -> Path:
    """rgb, depth -> sigmoid(conv(rgb) + conv(depth)), written with onnx.helper (no torch)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
        for n, s in (("w_rgb", (1, 3, 3, 3)), ("w_depth", (1, 1, 3, 3)))
    ]
    axes = ["batch", None, "height", "width"]
    value = lambda name, c: helper.make_tensor_value_info(name, TensorProto.FLOAT, [a or c for a in axes])  # noqa: E731
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["rgb", "w_rgb"], ["a"], pads=[1, 1, 1, 1], name="conv_rgb"),
            helper.make_node("Conv", ["depth", "w_depth"], ["b"], pads=[1, 1, 1, 1], name="conv_depth"),
            helper.make_node("Add", ["a", "b"], ["s"], name="fuse"),
            helper.make_node("Sigmoid", ["s"], ["saliency"], name="head"),
        ],
        "toy",
        [value("rgb", 3), value("depth", 1)],
        [value("saliency", 1)],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    prop = model.metadata_props.add()
    prop.key, prop.value = METADATA_KEY, toy_spec().to_json()
    onnx.save(model, str(path))
    return path


def onnxruntime_reference(onnx_path: Path, feeds):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def feeds_for(batch, height, width, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "rgb": rng.random((batch, 3, height, width), np.float32),
        "depth": rng.random((batch, 1, height, width), np.float32),
    }


def test_activation_checks_gpu_and_sidecar_before_loading(tmp_path):
    """An sm86 TensorRT-RTX engine: no GPU -> BackendError; another GPU -> EngineError + rebuild; sm86 -> runs."""
    pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings are not installed")
    from runtime.backends.trt.builder import build_engine

    engine = build_engine(write_toy_onnx(tmp_path / "model.onnx"), "fp32", tmp_path, "tensorrt_rtx", 86, progress=False)
    backend = TensorRTBackend(toy_spec(), "fp32", engine)
    count = cuda_buffers.device_count()
    if count == 0:
        with pytest.raises(BackendError, match="no usable NVIDIA driver/GPU"):
            backend.activate()
        assert not backend.is_active
        return
    sm = cuda_buffers.device_info(0).sm
    if sm != 86:
        with pytest.raises(
            EngineError, match=rf"built for sm86 but this GPU is sm{sm}; rebuild it: edge-mm-engine build"
        ):
            backend.activate()
        return
    with backend:
        feeds = feeds_for(1, 32, 32)
        np.testing.assert_allclose(
            backend.infer(feeds)["saliency"], onnxruntime_reference(tmp_path / "model.onnx", feeds), atol=1e-3
        )


RTX_TARGETS = {75, 80, 86, 89, 120, 121}


@pytest.mark.gpu
def test_rtx_engine_runs_like_onnxruntime_on_this_gpu(tmp_path):
    rtx = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX bindings are not installed")
    if cuda_buffers.device_count() == 0:
        pytest.skip("no CUDA device")
    sm = cuda_buffers.device_info(0).sm
    if sm not in RTX_TARGETS:
        pytest.skip(f"TensorRT-RTX {rtx.__version__} does not support sm{sm}")
    from runtime.backends.trt.builder import build_engine

    onnx_path = write_toy_onnx(tmp_path / "model.onnx")
    build_engine(onnx_path, "fp32", tmp_path, "tensorrt_rtx", sm, progress=False)
    check_backend_against_onnxruntime(tmp_path, onnx_path, "fp32", atol=1e-3)
    assert list(tmp_path.glob("*.runtime-cache")), "the JIT runtime cache is saved beside the engine"


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_runs_like_onnxruntime(tmp_path, precision):
    pytest.importorskip("tensorrt", reason="tensorrt not installed")
    if cuda_buffers.device_count() == 0:
        pytest.skip("no CUDA device")
    from runtime.backends.trt.builder import build_or_reuse

    onnx_path = write_toy_onnx(tmp_path / "model.onnx")
    if precision == "fp16":
        import onnx
        from onnxconverter_common import float16

        fp16 = float16.convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
        onnx.save(fp16, str(tmp_path / "model.fp16.onnx"))
        onnx_path = tmp_path / "model.fp16.onnx"
    first = build_or_reuse(onnx_path, precision, tmp_path, "tensorrt", progress=False)
    assert list(tmp_path.glob("timing.trt*.cache")), "the timing cache is persisted"
    assert build_or_reuse(onnx_path, precision, tmp_path, "tensorrt", progress=False).reused
    forced = build_or_reuse(onnx_path, precision, tmp_path, "tensorrt", progress=False, force=True)
    print(f"{precision}: first build {first.seconds:.1f} s, with warm timing cache {forced.seconds:.1f} s")
    check_backend_against_onnxruntime(
        tmp_path, tmp_path / "model.onnx", precision, atol=1e-3 if precision == "fp32" else 2e-2
    )


def check_backend_against_onnxruntime(artifact: Path, reference_onnx: Path, precision: str, atol: float) -> None:
    for cuda_graph in (False, True):
        with TensorRTBackend.from_artifact(artifact, precision, cuda_graph=cuda_graph) as backend:
            for batch, height, width in ((1, 32, 32), (2, 64, 48), (2, 64, 48), (1, 16, 16)):
                feeds = feeds_for(batch, height, width, seed=batch * height + width)
                got = backend.infer(feeds)["saliency"]
                assert got.shape == (batch, 1, height, width) and got.dtype == np.float32
                np.testing.assert_allclose(got, onnxruntime_reference(reference_onnx, feeds), atol=atol)
            with pytest.raises(InputError, match=r"this engine takes \(1, 3, 16, 16\) up to \(2, 3, 64, 64\)"):
                backend.infer(feeds_for(1, 128, 128))
    assert issubclass(EngineError, EdgeMMError)
