"""TensorRT engines from the exported ONNX files (TensorRT 10.x/11.x, TensorRT-RTX, or trtexec).

    from export.engine import build_engine, artifact_onnx
    engine = build_engine(artifact_onnx("artifacts/cdinet-256", "fp16"), "fp16")

Heavy modules (tensorrt, onnx, cuda-python) are imported only when a build runs.
"""

from export.engine.builder import PRECISIONS, BuildOutcome, artifact_onnx, build_engine, build_or_reuse
from export.engine.flavours import Flavour, available_flavours, find_flavour

__all__ = [
    "PRECISIONS",
    "BuildOutcome",
    "Flavour",
    "artifact_onnx",
    "available_flavours",
    "build_engine",
    "build_or_reuse",
    "find_flavour",
]
