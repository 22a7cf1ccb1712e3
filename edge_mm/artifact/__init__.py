"""The artifact contract: the one thing that travels from a workstation to a device (torch-free).

An artifact is a folder per exported model (CLIP: image/ and text/ graph folders, each one such
folder). This package is the only code that knows its files; every other module asks it.

Layout (`layout`)
    VARIANT_FILES {precision: file}, PRECISIONS, REPORT_FILE, variant_path(folder, precision),
    precision_of(onnx), engine_filename(onnx, precision, flavour_tag, targets, dla_core),
    engine_precision(engine), graph_folders(artifact), sidecar_path(engine), runtime_cache_path(engine), timing_cache_name(...)
ONNX metadata (`onnx_metadata`; reads without onnx, writes into a caller's onnx.ModelProto)
    read_onnx_metadata(path) -> {key: value}, read_onnx_spec(path) -> ModelSpec,
    write_spec(model_proto, spec), copy_metadata(source_proto, target_proto), spec_of_model(proto)
report.json (`report`)
    REPORT_FORMAT, read_report(folder), write_report(folder, data), variant_within_tolerance(report, p)
Engine sidecar (`sidecar`)
    ENGINE_SIDECAR_FORMAT, ENGINE_SIDECAR_FIELDS (the schema), read_engine_sidecar(engine),
    write_engine_sidecar(engine, ...), make_key(...), key_digest(key), rebuild_reason(engine, key)
Can it run here (`machine`)
    Machine(tensorrt={flavour: version}, gpu_sm, gpu_name), engine_problems(sidecar, machine) -> reasons
Commands (`commands`; safe to paste into a shell as printed)
    export_command(out_dir, model) -> python -m export.build_engine ...,
    engine_command(artifact_dir, precision, target_sm, flavour) -> edge-mm-engine build ...
The folder (`folder`)
    Artifact(path): .variants(), .spec, .onnx_path(precision), .engines() -> [EngineEntry], .report()

A third-party ONNX becomes an artifact by carrying a ModelSpec in its metadata (`write_spec`) under
the file name of its precision; everything downstream (ONNX Runtime, engine builds, selection)
then works from the files alone.
"""

from edge_mm.artifact.commands import engine_command, export_command
from edge_mm.artifact.folder import Artifact, EngineEntry
from edge_mm.artifact.layout import (
    PRECISIONS,
    REPORT_FILE,
    VARIANT_FILES,
    engine_filename,
    engine_precision,
    graph_folders,
    precision_of,
    runtime_cache_path,
    sidecar_path,
    sm_tag,
    variant_path,
)
from edge_mm.artifact.machine import Machine, engine_problems, same_version
from edge_mm.artifact.onnx_metadata import copy_metadata, read_onnx_metadata, read_onnx_spec, spec_of_model, write_spec
from edge_mm.artifact.report import REPORT_FORMAT, read_report, variant_within_tolerance, write_report
from edge_mm.artifact.sidecar import (
    ENGINE_SIDECAR_FIELDS,
    ENGINE_SIDECAR_FORMAT,
    key_digest,
    make_key,
    read_engine_sidecar,
    rebuild_reason,
    write_engine_sidecar,
)

__all__ = [
    "ENGINE_SIDECAR_FIELDS",
    "ENGINE_SIDECAR_FORMAT",
    "PRECISIONS",
    "REPORT_FILE",
    "REPORT_FORMAT",
    "VARIANT_FILES",
    "Artifact",
    "EngineEntry",
    "Machine",
    "copy_metadata",
    "engine_command",
    "engine_filename",
    "engine_precision",
    "engine_problems",
    "graph_folders",
    "export_command",
    "key_digest",
    "make_key",
    "precision_of",
    "read_engine_sidecar",
    "read_onnx_metadata",
    "read_onnx_spec",
    "read_report",
    "rebuild_reason",
    "runtime_cache_path",
    "same_version",
    "sidecar_path",
    "sm_tag",
    "spec_of_model",
    "variant_path",
    "variant_within_tolerance",
    "write_engine_sidecar",
    "write_report",
    "write_spec",
]
