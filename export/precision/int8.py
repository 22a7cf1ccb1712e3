"""FP32 -> INT8 ONNX with explicit quantization (QuantizeLinear/DequantizeLinear) for TensorRT.

ONNX Runtime's `quantize_static` places the Q/DQ nodes; the options are the ones TensorRT accepts:
QDQ format, signed INT8 activations and weights, symmetric both (zero points 0: TensorRT rejects
others), per-channel weight scales, and float biases. ORT quantizes Conv/Gemm biases to INT32 by
default (`QuantizeBias`); TensorRT-RTX 1.7's parser refuses that graph ("DequantizeLinear: input has
type Int32 but must have type FP8, FP4, Int4, Int8, or UInt8"), so it is turned off.

Only weighted layers (Conv, ConvTranspose, MatMul with a constant weight, Gemm) get Q/DQ: on their
inputs, and on Conv outputs too so that ONNX Runtime's CPU fuses DQ->Conv->Q into QLinearConv.
LayerNorm, Softmax, residual Adds, activations and attention's activation-by-activation MatMuls
stay in floating point, and so do the weighted layers nearest the outputs (CLIP's projection,
CDINet's predictor) unless asked.

Calibration is MinMax by default. On the test graphs, cdinet-s and a tiny CLIP (random weights)
MinMax and Percentile(99.999) came within ~15% of each other in mean error, neither ahead on all;
Entropy (2048-bin histogram) was clearly worse on the transformer (cosine 0.991 against 0.9999)
and took ~30 s even there. MinMax is the fastest and needs no histogram; re-measure with trained
weights and real calibration images. The model is first run through ORT's `quant_pre_process` (shape inference and
basic graph optimisation), as quantize_static asks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import onnx
from onnx import numpy_helper

from edge_mm.artifact import copy_metadata
from edge_mm.errors import CalibrationError, ExportError
from export.precision import graph as g
from export.precision.calibration import FeedsCalibrationReader

DEFAULT_INT8_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

_ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.BOOL: np.bool_,
}


def input_dtypes(model: onnx.ModelProto) -> Dict[str, np.dtype]:
    """{graph input name: numpy dtype}, for checking calibration feeds."""
    initializers = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        elem = vi.type.tensor_type.elem_type
        out[vi.name] = np.dtype(_ONNX_TO_NUMPY.get(elem, np.float32))
    return out


@contextlib.contextmanager
def _working_dir(folder: Path):
    """ORT's symbolic shape inference writes scratch files (sym_shape_infer_temp.onnx, *.data) into
    the current directory for large models: keep them in our temporary folder."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def _quiet_stdout():
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def _preprocess(model: onnx.ModelProto, folder: Path) -> Path:
    """ORT's quantization pre-processing: symbolic shape inference, basic graph optimisation, shapes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = folder / "fp32.onnx"
    target = folder / "fp32.pre.onnx"
    onnx.save(model, str(source))
    try:
        quant_pre_process(str(source), str(target))
    except Exception as exc:  # symbolic shape inference gives up on some graphs; ONNX shapes are enough then
        logging.getLogger(__name__).warning(
            "symbolic shape inference failed (%s); using ONNX shape inference only", exc
        )
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    return target


def _calibrate(prepared: Path, reader, op_types: Sequence[str], method: str, percentile: float, folder: Path):
    """Run calibration and return (ORT CalibrationMethod, path of a JSON range cache for quantize_static).

    quantize_static would calibrate by itself, but its Entropy calibrator gets no `num_bins` and
    falls back to 128 bins for 128 quantized bins: the only candidate threshold is then the full
    range and "entropy" equals MinMax. Calibrating here lets Entropy use a 2048-bin histogram.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    settings = {
        "minmax": (CalibrationMethod.MinMax, {"symmetric": True}),
        "entropy": (CalibrationMethod.Entropy, {"symmetric": True, "num_bins": 2048, "num_quantized_bins": 128}),
        "percentile": (CalibrationMethod.Percentile, {"symmetric": True, "num_bins": 2048, "percentile": percentile}),
    }
    if method not in settings:
        raise ExportError(f"unknown calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}")
    ort_method, options = settings[method]
    calibrator = create_calibrator(
        prepared,
        list(op_types),
        augmented_model_path=str(folder / "augmented.onnx"),
        calibrate_method=ort_method,
        extra_options=options,
    )
    empty = CalibrationError(
        "the calibration data is empty; pass at least one feed per input (a few hundred images is typical)"
    )
    try:
        calibrator.collect_data(reader)
    except ValueError:
        if isinstance(reader, FeedsCalibrationReader) and reader.count == 0:
            raise empty from None  # ORT says "No data is collected."
        raise
    if isinstance(reader, FeedsCalibrationReader) and reader.count == 0:
        raise empty
    cache = folder / "ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    return ort_method, cache


def _excluded_nodes(prepared: onnx.ModelProto, names: Sequence[str], keep_head: bool, weights_only: bool) -> set:
    """Nodes to leave in float, named as in the pre-processed graph the quantizer sees."""
    known = {node.name for node in prepared.graph.node}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ExportError(
            f"exclude_nodes names nodes that are not in the graph after ORT's pre-processing: {unknown[:5]}; "
            "use node names of the fp32 model (nodes folded into others cannot be named)"
        )
    excluded = set(names)
    if keep_head:
        excluded.update(g.head_nodes(prepared))
    if weights_only:
        # ORT's MatMulConstBOnly option applies to the QOperator format only, not to QDQ.
        excluded.update(g.activation_matmuls(prepared))
    return excluded


def to_int8_qdq(
    model_fp32: onnx.ModelProto,
    calibration_reader: Union[Iterable[Mapping[str, np.ndarray]], "FeedsCalibrationReader"],
    exclude_nodes: Sequence[str] = (),
    exclude_op_types: Sequence[str] = (),
    *,
    op_types: Sequence[str] = DEFAULT_INT8_OPS,
    keep_head_fp32: bool = True,
    calibration_method: str = "minmax",
    percentile: float = 99.999,
    matmul_weights_only: bool = True,
    quantize_outputs_of: Sequence[str] = ("Conv", "ConvTranspose"),
    progress: bool = False,
    extra_options: Optional[Dict[str, object]] = None,
) -> onnx.ModelProto:
    """Return an explicitly quantized (Q/DQ) copy of `model_fp32`, calibrated on `calibration_reader`.

    calibration_reader: an iterable of {input_name: array} feeds, or a CalibrationDataReader.
    exclude_nodes: node names left in floating point (names of the FP32 graph).
    exclude_op_types: op types left in floating point (removed from `op_types`).
    op_types: op types whose inputs get Q/DQ.
    keep_head_fp32: leave the weighted layers nearest the outputs unquantized.
    calibration_method: "minmax", "entropy" or "percentile" (`percentile` sets the latter's cut).
    matmul_weights_only: quantize only MatMuls with a constant weight (not attention's Q@K and P@V).
    quantize_outputs_of: op types whose outputs get Q/DQ as well. Conv outputs by default: ONNX
    Runtime fuses DQ->Conv->Q into QLinearConv (INT8 on the CPU) and TensorRT handles both. MatMul
    and Gemm outputs stay float by default (NVIDIA's placement advice: the bias Add and GELU after
    them want the higher-precision input).
    extra_options: merged over the TensorRT-safe ORT options (for experiments; the result is still
    checked for zero points of 0 and no INT32 bias).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = onnx.ModelProto()
    model.CopyFrom(model_fp32)
    g.name_unnamed_nodes(model.graph)
    if isinstance(calibration_reader, FeedsCalibrationReader):
        reader = calibration_reader.expect(input_dtypes(model))
    elif hasattr(calibration_reader, "get_next"):
        reader = calibration_reader  # a CalibrationDataReader made elsewhere: ORT checks its feeds
    else:
        reader = FeedsCalibrationReader(calibration_reader, expected=input_dtypes(model), progress=progress)
    quantized_ops = [op for op in op_types if op not in set(exclude_op_types)]
    options: Dict[str, object] = {
        "ActivationSymmetric": True,  # TensorRT: zero points must be 0
        "WeightSymmetric": True,
        "QuantizeBias": False,  # no INT32 bias DequantizeLinear: TensorRT-RTX refuses it
        "OpTypesToExcludeOutputQuantization": [op for op in quantized_ops if op not in set(quantize_outputs_of)],
        "AddQDQPairToWeight": False,  # weights stored INT8 with a DequantizeLinear only
    }
    options.update(extra_options or {})

    with tempfile.TemporaryDirectory(prefix="edge_mm_int8_") as tmp, _working_dir(Path(tmp)):
        folder = Path(tmp)
        output = folder / "int8.onnx"
        try:
            prepared = _preprocess(model, folder)
            excluded = _excluded_nodes(onnx.load(str(prepared)), exclude_nodes, keep_head_fp32, matmul_weights_only)
            with _quiet_stdout():  # ORT's histogram calibrators print progress lines
                ort_method, cache = _calibrate(prepared, reader, quantized_ops, calibration_method, percentile, folder)
            quantize_static(
                str(prepared),
                str(output),
                None,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=quantized_ops,
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=sorted(excluded),
                calibrate_method=ort_method,
                extra_options=options,
                calibration_cache_path=str(cache),
            )
        except (CalibrationError, ExportError):
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(
                f"ONNX Runtime static quantization failed ({first}); check the calibration feeds match the model"
            ) from None
        quantized = onnx.load(str(output))

    copy_metadata(model_fp32, quantized)
    g.strip_unused_opsets(quantized)
    summary = qdq_summary(quantized)
    if summary["int32_dequantize"]:
        raise ExportError(
            "the INT8 graph has INT32 (bias) DequantizeLinear nodes, which TensorRT refuses; do not set QuantizeBias"
        )
    if summary["nonzero_zero_points"]:
        raise ExportError(
            "the INT8 graph has non-zero zero points, which TensorRT refuses; keep activations and weights symmetric"
        )
    if summary["quantized_weights"] == 0:
        raise ExportError(
            f"no weights were quantized (op types {quantized_ops}, {len(excluded)} nodes excluded); quantize at least one layer"
        )
    g.validate(quantized, "INT8")
    return quantized


def qdq_summary(model: onnx.ModelProto) -> Dict[str, int]:
    """Counts that say whether a Q/DQ graph suits TensorRT: weights, per-channel, zero points, INT32."""
    initializers = {t.name: t for t in model.graph.initializer}
    summary = {
        "quantize": 0,
        "dequantize": 0,
        "quantized_weights": 0,
        "per_channel_weights": 0,
        "int32_dequantize": 0,
        "nonzero_zero_points": 0,
    }
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        summary["quantize" if node.op_type == "QuantizeLinear" else "dequantize"] += 1
        if len(node.input) > 2 and node.input[2] in initializers:
            if np.any(numpy_helper.to_array(initializers[node.input[2]]) != 0):
                summary["nonzero_zero_points"] += 1
        source = initializers.get(node.input[0])
        if node.op_type == "DequantizeLinear" and source is not None:
            if source.data_type == onnx.TensorProto.INT32:
                summary["int32_dequantize"] += 1
            elif source.data_type == onnx.TensorProto.INT8:
                summary["quantized_weights"] += 1
                scale = numpy_helper.to_array(initializers[node.input[1]])
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
                if scale.ndim == 1 and len(source.dims) > 1 and scale.size == source.dims[axis]:
                    summary["per_channel_weights"] += 1  # one scale per output channel
    return summary
