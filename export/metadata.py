"""The spec inside an ONNX file's metadata_props (key `edge_mm`), written (torch-free).

runtime.artifact reads it without onnx; this writes it, for export.onnx (graphs edge-mm traced) and
export.import_onnx (graphs someone else made).
"""

from __future__ import annotations

import onnx

from edge_mm.spec import METADATA_KEY, ModelSpec


def attach_spec(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Write the spec JSON into metadata_props under `edge_mm` (replacing an older one)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for prop in kept:
        model.metadata_props.add(key=prop.key, value=prop.value)
    model.metadata_props.add(key=METADATA_KEY, value=spec.to_json())
