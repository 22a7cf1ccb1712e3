"""edge_mm.artifact owns the artifact contract: metadata writing, report.json, commands, and no copies elsewhere."""

from __future__ import annotations

import json
import re

import onnx
import pytest
from onnx import TensorProto, helper
from support import ROOT

from edge_mm.artifact import (
    VARIANT_FILES,
    copy_metadata,
    engine_command,
    export_command,
    graph_folders,
    read_onnx_metadata,
    read_onnx_spec,
    read_report,
    spec_of_model,
    write_report,
    write_spec,
)
from edge_mm.errors import ArtifactError
from edge_mm.spec import ModelSpec, TensorSpec

SPEC = ModelSpec(
    kind="clip-image",
    name="clip-demo",
    inputs=[TensorSpec("image", "float32", ["batch", 3, 32, 32], "NCHW")],
    outputs=[TensorSpec("image_embeds", "float32", ["batch", 8], "NC")],
)


def tiny_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_write_spec_replaces_only_its_own_key_and_reads_back_without_onnx(tmp_path):
    model = tiny_model()
    model.metadata_props.add(key="author", value="someone")
    write_spec(model, ModelSpec(kind="cdinet", name="old", inputs=[], outputs=[]))
    write_spec(model, SPEC)  # a second write replaces the first
    assert [p.key for p in model.metadata_props] == ["author", "edge_mm"]
    assert spec_of_model(model) == SPEC
    onnx.save(model, str(tmp_path / "model.onnx"))
    assert read_onnx_metadata(tmp_path / "model.onnx")["author"] == "someone"
    assert read_onnx_spec(tmp_path / "model.onnx") == SPEC
    other = tiny_model()
    copy_metadata(model, other)
    assert spec_of_model(other) == SPEC and spec_of_model(tiny_model()) is None


def test_report_round_trip_and_errors(tmp_path):
    with pytest.raises(ArtifactError, match=r"has no report.json; rebuild it with `python -m export.build_engine"):
        read_report(tmp_path, "cdinet-s")
    write_report(tmp_path, {"format": 1, "variants": {"int8": {"within_tolerance": True}}})
    assert read_report(tmp_path)["variants"]["int8"]["within_tolerance"] is True
    assert not list(tmp_path.glob("*.part")), "written through a temporary file"
    (tmp_path / "report.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="not a JSON object"):
        read_report(tmp_path)


def test_commands_are_safe_to_paste(tmp_path):
    assert export_command(tmp_path, "cdinet-s") == f"python -m export.build_engine --model cdinet-s --out {tmp_path}"
    # An unknown model name prints as a word the export rejects by name, never as a shell redirection.
    assert export_command("out dir", None) == "python -m export.build_engine --model MODEL --out 'out dir'"
    assert export_command("a", "clip:ViT-B/32").startswith("python -m export.build_engine --model clip:ViT-B/32 ")
    assert engine_command("a", "fp16", ["86", "89"], "tensorrt_rtx") == (
        "edge-mm-engine build a --precision fp16 --flavour tensorrt_rtx --target-sm 86 --target-sm 89"
    )


def test_graph_folders(tmp_path):
    assert graph_folders(tmp_path) == [tmp_path]
    (tmp_path / "text").mkdir()
    (tmp_path / "image").mkdir()
    assert graph_folders(tmp_path) == [tmp_path / "image", tmp_path / "text"]


SOURCES = [p for pkg in ("edge_mm", "runtime", "calib", "export", "bench") for p in sorted((ROOT / pkg).rglob("*.py"))]
OWNERS = {
    # the variant file-name table
    re.compile(r"""["']fp16["']\s*:\s*["']model\.fp16\.onnx["']"""): "edge_mm/artifact/layout.py",
    # a message that builds the export command by hand
    re.compile(
        r"""f["'][^"'\n]*python -m (export\.build_engine|\{EXPORT_MODULE\}) --model \{"""
    ): "edge_mm/artifact/commands.py",
    # a second engine-sidecar format constant
    re.compile(r"^(ENGINE_)?SIDECAR_FORMAT\s*=", re.M): "edge_mm/artifact/sidecar.py",
}


@pytest.mark.parametrize("pattern", list(OWNERS), ids=["variant-files", "export-command", "sidecar-format"])
def test_each_contract_fact_has_one_owner(pattern):
    found = sorted(str(p.relative_to(ROOT)) for p in SOURCES if pattern.search(p.read_text()))
    allowed = {OWNERS[pattern], "runtime/retrieval/faiss_index.py"}  # the retrieval index's own (FAISS) sidecar
    assert OWNERS[pattern] in found and set(found) <= allowed, found


def test_variant_files_cover_every_precision():
    assert json.loads(json.dumps(VARIANT_FILES)) == {
        "fp32": "model.onnx",
        "fp16": "model.fp16.onnx",
        "int8": "model.int8.onnx",
    }
