"""runtime.backends.onnxrt: sessions from artifact files, input checks, provider choice, errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edge_mm.errors import ArtifactError, BackendError, InputError
from edge_mm.spec import ModelSpec, TensorSpec
from runtime.backends.base import Backend
from runtime.backends.onnxrt import OnnxRuntimeBackend, available_providers

SPEC = ModelSpec(
    kind="cdinet",
    name="cdinet-s",
    inputs=[
        TensorSpec("rgb", "float32", ["batch", 3, "height", "width"], "NCHW"),
        TensorSpec("depth", "float32", ["batch", 1, "height", "width"], "NCHW"),
    ],
    outputs=[TensorSpec("saliency", "float32", ["batch", 1, "height", "width"], "NCHW")],
    postprocess={"activation": "sigmoid"},
)


def saliency_model(spec=SPEC, op="Sigmoid") -> onnx.ModelProto:
    """saliency = sigmoid(mean_c(rgb) + depth): small, but with two inputs and dynamic axes like CDINet."""
    dims = ["batch", None, "height", "width"]
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["rgb"], ["mean"], keepdims=1, axes=[1]),
            helper.make_node("Add", ["mean", "depth"], ["logits"]),
            helper.make_node(op, ["logits"], ["saliency"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("rgb", TensorProto.FLOAT, [dims[0], 3, dims[2], dims[3]]),
            helper.make_tensor_value_info("depth", TensorProto.FLOAT, [dims[0], 1, dims[2], dims[3]]),
        ],
        [helper.make_tensor_value_info("saliency", TensorProto.FLOAT, [dims[0], 1, dims[2], dims[3]])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if spec is not None:
        model.metadata_props.add(key="edge_mm", value=spec.to_json())
    return model


def expected(rgb, depth):
    return 1 / (1 + np.exp(-(rgb.mean(axis=1, keepdims=True) + depth)))


@pytest.fixture()
def artifact(tmp_path):
    onnx.save(saliency_model(), str(tmp_path / "model.onnx"))
    onnx.save(saliency_model(), str(tmp_path / "model.fp16.onnx"))
    return tmp_path


def feeds(n=2, h=16, w=16, seed=0):
    rng = np.random.default_rng(seed)
    return {"rgb": rng.normal(size=(n, 3, h, w)).astype(np.float32), "depth": rng.random((n, 1, h, w), np.float32)}


def test_runs_and_reads_spec_from_metadata(artifact):
    backend = OnnxRuntimeBackend(artifact / "model.onnx", providers="cpu", threads=1)
    assert isinstance(backend, Backend) and backend.name == "onnxruntime"
    assert backend.spec == SPEC and backend.precision == "fp32"
    assert [t.name for t in backend.input_specs] == ["rgb", "depth"]
    assert backend.provider is None
    x = feeds()
    with backend:
        assert backend.provider == "CPUExecutionProvider"
        out = backend.infer(x)
        assert set(out) == {"saliency"} and out["saliency"].dtype == np.float32
        np.testing.assert_allclose(out["saliency"], expected(x["rgb"], x["depth"]), rtol=1e-5, atol=1e-6)
        # dynamic batch and size
        y = feeds(n=1, h=32, w=48, seed=1)
        np.testing.assert_allclose(backend.infer(y)["saliency"], expected(y["rgb"], y["depth"]), rtol=1e-5, atol=1e-6)
        assert backend.last_infer_seconds is not None
    assert not backend.is_active and backend.provider is None
    assert OnnxRuntimeBackend(artifact / "model.fp16.onnx").precision == "fp16"


def test_auto_provider_picks_what_exists(artifact):
    with OnnxRuntimeBackend(artifact / "model.onnx", providers="auto") as backend:
        if "CUDAExecutionProvider" in ort.get_available_providers():
            assert backend.provider in ("CUDAExecutionProvider", "CPUExecutionProvider")
        else:
            assert backend.provider == "CPUExecutionProvider"


def test_cuda_request_without_cuda_is_an_error(artifact):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    backend = OnnxRuntimeBackend(artifact / "model.onnx", providers="cuda")
    with pytest.raises(BackendError, match="CUDAExecutionProvider is not in this onnxruntime.*onnxruntime-gpu"):
        backend.activate()


def test_bad_options(artifact):
    with pytest.raises(BackendError, match="unknown onnxruntime providers"):
        OnnxRuntimeBackend(artifact / "model.onnx", providers="tpu")
    with pytest.raises(BackendError, match="threads"):
        OnnxRuntimeBackend(artifact / "model.onnx", threads=0)
    with pytest.raises(BackendError, match="optimization"):
        OnnxRuntimeBackend(artifact / "model.onnx", optimization="max")


def test_inputs_are_checked_by_the_base_class(artifact):
    with OnnxRuntimeBackend(artifact / "model.onnx", providers="cpu") as backend:
        x = feeds()
        with pytest.raises(InputError, match="missing \\['depth'\\]"):
            backend.infer({"rgb": x["rgb"]})
        with pytest.raises(InputError, match="dtype float64"):
            backend.infer({"rgb": x["rgb"].astype(np.float64), "depth": x["depth"]})
        with pytest.raises(InputError, match="rank"):
            backend.infer({"rgb": x["rgb"][0], "depth": x["depth"]})
        with pytest.raises(InputError, match="axis 1 must be 3"):
            backend.infer({"rgb": x["rgb"][:, :2], "depth": x["depth"]})


def test_runtime_failure_is_one_line_backend_error(artifact):
    with OnnxRuntimeBackend(artifact / "model.onnx", providers="cpu") as backend:
        x = feeds()
        with pytest.raises(BackendError, match="onnxruntime failed on model.onnx") as err:
            backend.infer({"rgb": x["rgb"], "depth": x["depth"][:, :, :8]})  # sizes disagree inside the graph
        assert "\n" not in str(err.value)


def test_infer_before_activate(artifact):
    backend = OnnxRuntimeBackend(artifact / "model.onnx")
    with pytest.raises(BackendError, match="before activate"):
        backend.infer(feeds())


def test_corrupt_onnx_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "model.onnx"
    data = saliency_model().SerializeToString()
    path.write_bytes(data[: len(data) - 40])  # truncated mid-file
    with pytest.raises(ArtifactError) as err:
        OnnxRuntimeBackend(path)
    assert str(path) in str(err.value) and "python -m export.build_engine" in str(err.value)


def test_graph_onnxruntime_cannot_load_is_an_artifact_error(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(saliency_model(op="NoSuchOp"), str(path))  # well-formed protobuf, broken graph
    backend = OnnxRuntimeBackend(path)
    with pytest.raises(
        ArtifactError,
        match="onnxruntime cannot load .*model.onnx.*re-export it with `python -m export.build_engine --model cdinet-s",
    ):
        backend.activate()


def test_missing_spec_metadata(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(saliency_model(spec=None), str(path))
    with pytest.raises(ArtifactError, match="no edge-mm model spec"):
        OnnxRuntimeBackend(path)


def test_explicit_spec_must_match_the_graph_inputs(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(saliency_model(spec=None), str(path))
    other = ModelSpec(
        kind="clip-image",
        name="clip",
        inputs=[TensorSpec("image", "float32", ["batch", 3, 224, 224])],
        outputs=[TensorSpec("image_embeds", "float32", ["batch", 512])],
    )
    with pytest.raises(ArtifactError, match="no edge-mm model spec"):
        OnnxRuntimeBackend(path, spec=other).activate()
    onnx.save(saliency_model(spec=other), str(path))
    with pytest.raises(ArtifactError, match="takes inputs \\['depth', 'rgb'\\] but its spec says \\['image'\\]"):
        OnnxRuntimeBackend(path).activate()


def test_infer_batched_slices_axis_0_and_concatenates(artifact):
    backend = OnnxRuntimeBackend.from_artifact(artifact, "fp32", providers="cpu", threads=1)
    x = feeds(n=5)
    calls = []
    with backend:
        run = backend.infer_impl
        backend.infer_impl = lambda f: calls.append(len(f["rgb"])) or run(f)
        out = backend.infer_batched(x, 2)
        assert calls == [2, 2, 1]
        np.testing.assert_allclose(out["saliency"], expected(x["rgb"], x["depth"]), rtol=1e-5, atol=1e-6)
        with pytest.raises(InputError, match="disagree on the number of samples"):
            backend.infer_batched({"rgb": x["rgb"], "depth": x["depth"][:3]}, 2)
        with pytest.raises(InputError, match="batch must be a positive integer"):
            backend.infer_batched(x, 0)


def test_probe_says_why_onnxruntime_cannot_run_here(artifact, tmp_path):
    assert OnnxRuntimeBackend.probe(artifact, providers="cpu") == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert any("no ONNX file" in r for r in OnnxRuntimeBackend.probe(empty, providers="cpu"))
    if "CUDAExecutionProvider" not in available_providers():
        assert any("no CUDAExecutionProvider" in r for r in OnnxRuntimeBackend.probe(artifact, providers="cuda"))
