"""edge_mm.artifact: the ONNX metadata scanner and the artifact folder reader."""

from __future__ import annotations

import io
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edge_mm.artifact.onnx_metadata as artifact_module
from edge_mm.artifact import Artifact, precision_of, read_onnx_metadata, read_onnx_spec
from edge_mm.errors import ArtifactError
from edge_mm.spec import ModelSpec, TensorSpec

SPEC = ModelSpec(
    kind="cdinet",
    name="cdinet-s",
    inputs=[TensorSpec("rgb", "float32", ["batch", 3, 32, 32], "NCHW")],
    outputs=[TensorSpec("saliency", "float32", ["batch", 1, 32, 32], "NCHW")],
    postprocess={"activation": "sigmoid"},
)


def make_model(spec: ModelSpec = SPEC, extra_weight: int = 0, metadata: dict = None) -> onnx.ModelProto:
    """rgb -> mean over channels -> sigmoid; `extra_weight` float32s of unused initializer make it big."""
    nodes = [
        helper.make_node("ReduceMean", ["rgb"], ["mean"], keepdims=1, axes=[1]),
        helper.make_node("Sigmoid", ["mean"], ["saliency"]),
    ]
    inits = []
    if extra_weight:
        inits.append(numpy_helper.from_array(np.arange(extra_weight, dtype=np.float32), "padding"))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("saliency", TensorProto.FLOAT, ["batch", 1, 32, 32])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test")
    model.ir_version = 8
    props = {"edge_mm": spec.to_json()} if spec is not None else {}
    props.update(metadata or {})
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    return model


def test_metadata_scanner_matches_onnx(tmp_path):
    model = make_model(metadata={"other": "ünïcode ✓", "empty": ""}, extra_weight=1000)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    assert read_onnx_metadata(path) == {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert read_onnx_spec(path) == SPEC


def test_metadata_scanner_skips_a_large_graph_unread(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    onnx.save(make_model(extra_weight=25_000_000), str(path))  # 100 MB of weights
    read_bytes = []

    class CountingFile(io.FileIO):
        def read(self, size=-1):
            data = super().read(size)
            read_bytes.append(len(data))
            return data

    # Unbuffered, so every byte the scanner asks for is counted and nothing is read ahead.
    monkeypatch.setattr(artifact_module, "open", lambda p, mode="rb": CountingFile(p, "r"), raising=False)
    assert read_onnx_spec(path).name == "cdinet-s"
    # A handful of small reads (the top-level field headers and the metadata), never the weights.
    assert 0 < sum(read_bytes) < 64 * 1024 and len(read_bytes) < 64


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all", b"\x0a\xff\xff\xff\x0f"])
def test_metadata_scanner_rejects_garbage(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match="not a readable ONNX file.*python -m export.build_engine"):
        read_onnx_metadata(path)


def test_metadata_scanner_rejects_truncated_file(tmp_path):
    path = tmp_path / "model.onnx"
    data = make_model(extra_weight=1000).SerializeToString()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="model.onnx is not a readable ONNX file"):
        read_onnx_metadata(path)


def test_missing_spec_and_missing_file(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(make_model(spec=None), str(path))
    with pytest.raises(ArtifactError, match="no edge-mm model spec"):
        read_onnx_spec(path)
    with pytest.raises(ArtifactError, match="no ONNX file at"):
        read_onnx_spec(tmp_path / "absent.onnx")


def test_precision_of():
    assert precision_of("a/model.onnx") == "fp32"
    assert precision_of("a/model.fp16.onnx") == "fp16"
    assert precision_of("a/model.int8.onnx") == "int8"
    assert precision_of("a/other.onnx") == "fp32"


def test_missing_artifact_folder(tmp_path):
    with pytest.raises(ArtifactError) as err:
        Artifact(tmp_path / "nope")
    message = str(err.value)
    assert message.startswith(f"no artifact at {tmp_path / 'nope'}")
    assert "python -m export.build_engine --model" in message and f"--out {tmp_path / 'nope'}" in message
    assert "\n" not in message


def test_artifact_variants_spec_engines_report(tmp_path):
    onnx.save(make_model(), str(tmp_path / "model.onnx"))
    onnx.save(make_model(), str(tmp_path / "model.int8.onnx"))
    engine = tmp_path / "model.int8.trt10.3.0.sm87.engine"
    engine.write_bytes(b"plan")
    sidecar = {"format": 1, "precision": "int8", "tensorrt": {"flavour": "tensorrt", "version": "10.3.0"}}
    (tmp_path / "model.int8.trt10.3.0.sm87.engine.json").write_text(json.dumps(sidecar))
    (tmp_path / "model.fp16.rtx1.7.engine").write_bytes(b"plan")  # no sidecar
    (tmp_path / "model.fp32.trt9.engine").write_bytes(b"plan")
    (tmp_path / "model.fp32.trt9.engine.json").write_text(json.dumps({"format": 0}))  # another format
    (tmp_path / "report.json").write_text(json.dumps({"int8": {"saliency": {"cosine_min": 0.999}}}))

    artifact = Artifact(tmp_path)
    assert artifact.variants() == ["fp32", "int8"]
    assert artifact.spec == SPEC
    assert artifact.onnx_path("int8") == tmp_path / "model.int8.onnx"
    with pytest.raises(ArtifactError, match="no fp16 variant.*variants present: fp32, int8.*--model cdinet-s"):
        artifact.onnx_path("fp16")
    with pytest.raises(ArtifactError, match="unknown precision"):
        artifact.onnx_path("int4")
    engines = {e.path.name: e for e in artifact.engines()}
    assert engines["model.int8.trt10.3.0.sm87.engine"].sidecar == sidecar
    assert engines["model.int8.trt10.3.0.sm87.engine"].precision == "int8"
    assert engines["model.fp16.rtx1.7.engine"].sidecar is None
    assert "no sidecar" in engines["model.fp16.rtx1.7.engine"].problem
    assert engines["model.fp32.trt9.engine"].sidecar is None
    assert "unknown format" in engines["model.fp32.trt9.engine"].problem
    assert artifact.report()["int8"]["saliency"]["cosine_min"] == 0.999


def test_artifact_report_errors_and_empty_folder(tmp_path):
    artifact = Artifact(tmp_path)
    assert artifact.variants() == []
    with pytest.raises(ArtifactError, match="holds no model.onnx"):
        artifact.spec
    with pytest.raises(ArtifactError, match="no report.json"):
        artifact.report()
    (tmp_path / "report.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="report.json is unreadable"):
        artifact.report()
