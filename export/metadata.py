"""The spec inside an ONNX file's metadata_props (key `edge_mm`): the writer is the artifact contract's.

export.onnx (graphs edge-mm traced) and export.import_onnx (graphs someone else made) call
`attach_spec`; it is `edge_mm.artifact.write_spec` (torch- and onnx-import-free), which also owns
the reader.
"""

from edge_mm.artifact import write_spec as attach_spec

__all__ = ["attach_spec"]
