"""The precision policy per model: which FP16 and INT8 graphs the export stage writes.

The converters live in export.precision (FP16: onnxconverter-common with LayerNorm, Softmax,
reductions, Pow/Sqrt/Exp and ArgMax kept FP32, FP32 I/O; INT8: ONNX Runtime's Q/DQ placement,
symmetric, per-channel weights, float biases, the output layer and attention's activation
MatMuls unquantized). This module decides what each model adds on top:

- CLIP (research/clip.md section 3): LayerNorm, Softmax, residual Adds and the final projection
  stay unquantized, which export.precision's defaults already give (only Conv/MatMul/Gemm inputs
  are quantized; the projection is the "head" kept in float). Nothing else is excluded.
- CDINet: the layers left in float are chosen by measurement. The default graph is scored on a
  selection split of synthetic scenes (seed 30 000: neither calibration nor evaluation); while its
  S-measure drop against FP32 exceeds the budget, whole layer groups (first convolutions, RDE, DSE
  attention, decoder) are tried in float one at a time and the one that helps most is kept, until
  the budget is met or nothing is left. Every try is recorded in the report.

After quantization, Shape nodes that read a DQ output are pointed at the float tensor (see
`shapes_read_float`): ONNX Runtime's CPU kernels then fuse every quantized MatMul.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import onnx

from export.precision import DEFAULT_FP32_OPS, fp32_node_names, qdq_summary, to_fp16, to_int8_qdq
from export.precision import graph as graph_tools

Feeds = Mapping[str, np.ndarray]

# CDINet layer groups that the INT8 search may leave in float, by node-name pattern (torch scopes).
CDINET_GROUPS: Dict[str, str] = {
    "rde": r"/rde_layer\d/",
    "dse_attention": r"/dse_layer\d/",
    "decoder": r"/ddr/",
    "transform": r"/conv_mid/",
}
CDINET_SELECTION_BUDGET = 0.01  # half the 0.02 gate: the held-out set is a different sample


def make_fp16(model: onnx.ModelProto) -> Tuple[onnx.ModelProto, Dict[str, Any]]:
    converted = to_fp16(model)
    policy = {
        "converter": "onnxconverter-common (export.precision.to_fp16)",
        "io": "float32",
        "fp32_op_types": list(DEFAULT_FP32_OPS),
        "fp32_nodes": len(fp32_node_names(converted)),
        "nodes": len(converted.graph.node),
    }
    return converted, policy


def int8_defaults() -> Dict[str, Any]:
    return {
        "format": "QDQ",
        "activations": "int8 symmetric per-tensor",
        "weights": "int8 symmetric per-channel",
        "bias": "float",
        "quantized_op_types": ["Conv", "ConvTranspose", "MatMul", "Gemm"],
        "output_layers": "float (head kept unquantized)",
        "attention_matmuls": "float (weights-only MatMul quantization)",
        "calibration_method": "minmax",
        "shape_reads": "Shape nodes read the float tensor before Q/DQ (lets ONNX Runtime fuse DQ->MatMul)",
    }


def shapes_read_float(model: onnx.ModelProto) -> int:
    """Point Shape nodes that read a Q->DQ output at the float tensor before the Q; returns how many.

    torch's MultiheadAttention export reads the shape of the in-projection's input. After Q/DQ
    insertion that Shape shares the DQ output with the MatMul, and ONNX Runtime fuses DQ->MatMul
    into an integer kernel only when the DQ has no other reader: the in-projections then ran in
    float with their weights dequantized on every call (CLIP ViT-B/32 INT8 was slower than FP32).
    A shape is the same before and after quantization, so TensorRT's graph is unchanged in effect.
    """
    writer = graph_tools.producers(model.graph)
    rewired = 0
    for node in model.graph.node:
        if node.op_type != "Shape":
            continue
        dq = writer.get(node.input[0])
        q = writer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            node.input[0] = q.input[0]
            rewired += 1
    return rewired


def make_int8(
    model: onnx.ModelProto, feeds: Sequence[Feeds], exclude: Sequence[str] = ()
) -> Tuple[onnx.ModelProto, int]:
    """(INT8 Q/DQ model, number of Shape reads moved off DQ outputs)."""
    quantized = to_int8_qdq(model, list(feeds), exclude_nodes=list(exclude), calibration_method="minmax", progress=True)
    rewired = shapes_read_float(quantized)
    if rewired:
        graph_tools.validate(quantized, "INT8")
    return quantized, rewired


def weighted_nodes(model: onnx.ModelProto) -> List[str]:
    return [n.name for n in model.graph.node if n.op_type in graph_tools.WEIGHTED_OPS]


def first_layers(model: onnx.ModelProto) -> List[str]:
    """Weighted layers nearest the graph inputs (walking forward through unweighted nodes)."""
    readers = graph_tools.consumers(model.graph)
    found, seen = set(), set()
    stack = [i.name for i in model.graph.input]
    while stack:
        for node in readers.get(stack.pop(), []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in graph_tools.WEIGHTED_OPS:
                found.add(node.name)
            else:
                stack.extend(node.output)
    return sorted(found)


def cdinet_groups(model: onnx.ModelProto) -> Dict[str, List[str]]:
    """Layer groups of an exported CDINet graph (node names as the quantizer will see them)."""
    names = weighted_nodes(model)
    groups = {"first_convs": first_layers(model)}
    for group, pattern in CDINET_GROUPS.items():
        groups[group] = [n for n in names if re.search(pattern, n)]
    return {g: sorted(v) for g, v in groups.items() if v}


def search_cdinet_int8(
    model: onnx.ModelProto,
    feeds: Sequence[Feeds],
    score: Callable[[onnx.ModelProto], Dict[str, Any]],
    budget: float = CDINET_SELECTION_BUDGET,
    progress: Callable[[str], None] = print,
) -> Tuple[onnx.ModelProto, Dict[str, Any]]:
    """Greedy group exclusion: returns (INT8 model, policy with every try's score).

    score(int8_model) -> {"s_measure_drop": float, ...} on the selection split.
    """
    groups = cdinet_groups(model)
    excluded: List[str] = []
    chosen_groups: List[str] = []
    tries: List[Dict[str, Any]] = []

    def attempt(names: Sequence[str], label: str) -> Tuple[onnx.ModelProto, Dict[str, Any]]:
        quantized, _ = make_int8(model, feeds, names)
        result = score(quantized)
        tries.append({"float_groups": label, "excluded_nodes": len(names), **result})
        progress(f"    int8 try [{label}]: S-measure drop {result['s_measure_drop']:+.4f} on the selection split")
        return quantized, result

    best_model, best = attempt([], "none")
    remaining = dict(groups)
    while best["s_measure_drop"] > budget and remaining:
        trial = {}
        for group, names in remaining.items():
            label = "+".join(chosen_groups + [group])
            trial[group] = attempt(sorted(set(excluded) | set(names)), label)
        group = min(trial, key=lambda g: trial[g][1]["s_measure_drop"])
        if trial[group][1]["s_measure_drop"] >= best["s_measure_drop"]:
            break  # no group helps: more float layers would cost speed for nothing
        best_model, best = trial[group]
        excluded = sorted(set(excluded) | set(remaining.pop(group)))
        chosen_groups.append(group)
    policy = {
        "search": {
            "criterion": "S-measure drop against FP32 on the selection split",
            "budget": budget,
            "met": bool(best["s_measure_drop"] <= budget),
            "tries": tries,
        },
        "float_groups": chosen_groups,
        "excluded_nodes": excluded,
    }
    return best_model, policy


def summary(model: onnx.ModelProto) -> Dict[str, int]:
    return qdq_summary(model)
