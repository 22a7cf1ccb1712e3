"""Precision variants of an FP32 ONNX model: mixed FP16 and explicit INT8 (Q/DQ) for TensorRT.

to_fp16(model)                              -> model.fp16.onnx
to_int8_qdq(model, feeds)                   -> model.int8.onnx
compare_outputs(reference, candidate)       -> accuracy of a variant against FP32
"""

from export.precision.calibration import FeedsCalibrationReader
from export.precision.compare import compare_outputs
from export.precision.fp16 import DEFAULT_FP32_OPS, fp32_node_names, to_fp16
from export.precision.int8 import CALIBRATION_METHODS, DEFAULT_INT8_OPS, qdq_summary, to_int8_qdq

__all__ = [
    "CALIBRATION_METHODS",
    "DEFAULT_FP32_OPS",
    "DEFAULT_INT8_OPS",
    "FeedsCalibrationReader",
    "compare_outputs",
    "fp32_node_names",
    "qdq_summary",
    "to_fp16",
    "to_int8_qdq",
]
