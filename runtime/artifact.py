"""Compatibility name: the artifact contract lives in `edge_mm.artifact` (import from there)."""

from edge_mm.artifact import VARIANT_FILES, Artifact, EngineEntry, precision_of, read_onnx_metadata, read_onnx_spec
from edge_mm.artifact.layout import REPORT_FILE

__all__ = [
    "REPORT_FILE",
    "VARIANT_FILES",
    "Artifact",
    "EngineEntry",
    "precision_of",
    "read_onnx_metadata",
    "read_onnx_spec",
]
