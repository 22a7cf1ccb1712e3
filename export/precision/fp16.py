"""FP32 -> mixed FP16 ONNX: FP16 compute, numerically sensitive ops in FP32, FP32 inputs and outputs.

The conversion itself is onnxconverter-common's `convert_float_to_float16`. Around it this module
fixes what that converter gets wrong on graphs from torch.onnx.export (checked against 1.16):

- `Identity(initializer)` aliases and float `Constant` nodes: the converter converts the source
  and not the alias, so a kept-FP32 consumer reads an FP16 tensor declared FP32. We bypass
  Identities and turn Constants into initializers, then give each kept-FP32 consumer of a shared
  initializer its own FP32 copy.
- `Cast(to=float)` nodes keep `to=float` while their output is declared FP16: we keep them FP32
  (the converter then adds a Cast to FP16 after them).
- Unnamed nodes give colliding Cast tensor names: every node gets a unique name first.
- A graph output written by a kept-FP32 node makes the converter raise in its cast clean-up:
  such outputs are hidden from it and written in FP32 directly.
- Resize is on its block list only because it would convert roi/scales to FP16 (invalid ONNX):
  we run Resize in FP16 and restore those parameters to FP32.

Beyond op types we keep "FP32 islands" whole: an elementwise node whose float inputs all come
from FP32 nodes or constants stays FP32 (e.g. the `var + eps` between a decomposed LayerNorm's
ReduceMean and Sqrt), so values never round-trip through FP16 between two FP32 ops.
"""

from __future__ import annotations

import warnings
from typing import Dict, Iterable, List, Set

import onnx

from edge_mm.artifact import copy_metadata
from edge_mm.errors import ExportError
from export.precision import graph as g

# Ops whose FP16 arithmetic overflows or loses too much: normalisation statistics (LayerNorm,
# reductions, Pow/Sqrt), softmax and exponentials, and integer-valued results (ArgMax/TopK: FP16
# cannot tell CLIP's SOT 49406 from EOT 49407). ReduceMax/ReduceMin only select a value, which
# FP16 represents exactly, so they run in FP16 (CDINet's spatial attention uses them).
# onnxconverter-common's own block list (Range, CumSum, Min, Max, TopK, the ML ops) is always
# added; its Resize/Upsample entries are not (see _FP32_PARAMETER_INPUTS).
DEFAULT_FP32_OPS = (
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceProd",
    "Exp",
    "Log",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Erf",
    "ArgMax",
    "ArgMin",
    "TopK",
)

# Elementwise ops that join an FP32 island when an input is FP32 and the others are FP32 or constants.
_ISLAND_OPS = {"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Clip", "Where", "Sqrt", "Reciprocal"}


# Resize/Upsample sit in onnxconverter-common's block list because it would also convert their
# roi/scales inputs, which ONNX requires to stay FP32. We run them in FP16 (no Cast pair around
# every upsampling of a decoder) and put those parameter initializers back to FP32 afterwards.
_FP32_PARAMETER_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}


def _converter_block_list() -> Set[str]:
    from onnxconverter_common import float16

    return set(float16.DEFAULT_OP_BLOCK_LIST) - set(_FP32_PARAMETER_INPUTS)


def _pin_fp32_parameters(
    model: onnx.ModelProto, blocked_ops: Set[str], fp32_nodes: Set[str]
) -> Dict[str, onnx.TensorProto]:
    """Give each FP16 Resize its own roi/scales initializers; return them to restore after conversion.

    A Resize whose roi/scales are computed by other nodes is kept in FP32 instead (added to fp32_nodes).
    """
    graph = model.graph
    floats = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    pinned: Dict[str, onnx.TensorProto] = {}
    for node in graph.node:
        positions = _FP32_PARAMETER_INPUTS.get(node.op_type)
        if positions is None or node.op_type in blocked_ops or node.name in fp32_nodes:
            continue
        names = [node.input[i] for i in positions if i < len(node.input) and node.input[i]]
        if any(name not in floats for name in names):
            fp32_nodes.add(node.name)  # computed parameters: leave this Resize to the converter's FP32 path
            continue
        for i in positions:
            if i < len(node.input) and node.input[i]:
                own = onnx.TensorProto()
                own.CopyFrom(floats[node.input[i]])
                own.name = f"{node.name}_fp32_param{i}"
                graph.initializer.append(own)
                node.input[i] = own.name
                pinned[own.name] = onnx.TensorProto()
                pinned[own.name].CopyFrom(own)  # the converter rewrites the graph's copy in place
    return pinned


def _fp32_nodes(model: onnx.ModelProto, fp32_ops: Set[str], fp32_names: Set[str]) -> Set[str]:
    """Names of the nodes to keep in FP32: by op type, by name, Cast-to-float, and FP32 islands."""
    graph = model.graph
    float_initializers = g.float_initializer_names(model)
    graph_inputs = {i.name for i in graph.input}
    fp32_tensors: Set[str] = set()  # float tensors that are produced in FP32
    keep: Set[str] = set()
    for node in graph.node:  # torch.onnx.export writes nodes in topological order
        inputs = [name for name in node.input if name]
        is_cast_to_float = node.op_type == "Cast" and any(
            a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in node.attribute
        )
        joins_island = (
            node.op_type in _ISLAND_OPS
            and inputs
            and any(name in fp32_tensors for name in inputs)
            and all(name in fp32_tensors or name in float_initializers for name in inputs if name not in graph_inputs)
        )
        if node.op_type in fp32_ops or node.name in fp32_names or is_cast_to_float or joins_island:
            keep.add(node.name)
            fp32_tensors.update(node.output)
    return keep


def _split_shared_initializers(model: onnx.ModelProto, blocked_ops: Set[str], blocked_nodes: Set[str]) -> None:
    """Give kept-FP32 consumers of an initializer also read by FP16 nodes their own FP32 copy."""
    graph = model.graph
    floats = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    readers = g.consumers(graph)
    is_blocked = lambda node: node.op_type in blocked_ops or node.name in blocked_nodes  # noqa: E731
    for name, tensor in floats.items():
        nodes = readers.get(name, [])
        fp32_readers = [n for n in nodes if is_blocked(n)]
        if not fp32_readers or len(fp32_readers) == len(nodes):
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = f"{name}_fp32"
        graph.initializer.append(copy)
        for node in fp32_readers:
            for i, inp in enumerate(node.input):
                if inp == name:
                    node.input[i] = copy.name


def to_fp16(
    model_fp32: onnx.ModelProto,
    keep_fp32_ops: Iterable[str] = DEFAULT_FP32_OPS,
    keep_fp32_nodes: Iterable[str] = (),
    max_finite_val: float = 1e4,
) -> onnx.ModelProto:
    """Return a mixed-precision copy of `model_fp32` with FP32 inputs and outputs.

    keep_fp32_ops: op types computed in FP32 (onnxconverter-common's block list is added).
    keep_fp32_nodes: node names computed in FP32 as well (e.g. a final projection).
    max_finite_val: FP32 constants beyond +-this are clamped when stored as FP16 (the converter's
    default 1e4 also turns -inf attention masks into -1e4, which FP16 softmax inputs need).
    """
    from onnxconverter_common import float16

    model = onnx.ModelProto()
    model.CopyFrom(model_fp32)
    graph = model.graph
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer):
        raise ExportError("the model already holds FP16 weights; convert the FP32 model.onnx instead")
    io_types = g.io_elem_types(model)

    g.name_unnamed_nodes(graph)
    g.constants_to_initializers(graph)
    g.bypass_identities(graph)
    blocked_ops = set(keep_fp32_ops) | _converter_block_list()
    fp32_nodes = _fp32_nodes(model, blocked_ops, set(keep_fp32_nodes))
    pinned = _pin_fp32_parameters(model, blocked_ops, fp32_nodes)
    _split_shared_initializers(model, blocked_ops, fp32_nodes)

    # Outputs written by an FP32 node: declare them FP16 during conversion so the converter adds
    # no Cast pair around them (its clean-up raises on such a pair), then restore FP32.
    writer = g.producers(graph)
    direct_fp32_outputs: List[onnx.ValueInfoProto] = []
    for out in graph.output:
        node = writer.get(out.name)
        if (
            node is not None
            and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
            and (node.name in fp32_nodes or node.op_type in blocked_ops)
        ):
            out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
            direct_fp32_outputs.append(out)

    with warnings.catch_warnings():
        # "the float32 number X will be truncated to Y" for every tiny weight: expected, not actionable.
        warnings.simplefilter("ignore", UserWarning)
        try:
            converted = float16.convert_float_to_float16(
                model,
                max_finite_val=max_finite_val,
                keep_io_types=True,
                op_block_list=sorted(blocked_ops),
                node_block_list=sorted(fp32_nodes),
                check_fp16_ready=False,
            )
        except (ValueError, AssertionError) as exc:
            raise ExportError(
                f"onnxconverter-common could not convert the graph to FP16 ({exc}); report this with the fp32 model attached"
            ) from None

    for tensor in converted.graph.initializer:
        if tensor.name in pinned:
            tensor.CopyFrom(pinned[tensor.name])
    g.remove_unused_initializers(converted.graph)
    written = {o.name for o in direct_fp32_outputs}
    for out in converted.graph.output:
        if out.name in written:
            out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    # The converter's value_info can disagree with the rewired graph; let shape inference redo it.
    del converted.graph.value_info[:]
    converted = onnx.shape_inference.infer_shapes(converted)
    copy_metadata(model_fp32, converted)

    if g.io_elem_types(converted) != io_types:
        raise ExportError(
            "FP16 conversion changed the model's input or output types; report this with the fp32 model attached"
        )
    g.validate(converted, "FP16")
    return converted


def fp32_node_names(model: onnx.ModelProto) -> Set[str]:
    """Names of the nodes of a converted model that still compute in FP32 (Casts aside).

    A node counts as FP32 when it writes an FP32 tensor (a Resize reading FP32 scales but writing
    FP16 does not); used by tests and reports to show which ops the policy kept.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    }
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    names = set()
    for node in inferred.graph.node:
        if node.op_type == "Cast":
            continue
        if any(types.get(t) == onnx.TensorProto.FLOAT for t in node.output if t):
            names.add(node.name)
    return names
