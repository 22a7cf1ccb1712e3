"""Small ONNX graph helpers shared by the FP16 and INT8 converters.

Each helper does one thing to a ModelProto: look up producers and consumers, give every node a
unique name, fold nodes the converters trip over, find the weighted layers nearest the outputs,
and validate a finished variant with the ONNX checker and an ONNX Runtime session.
"""

from __future__ import annotations

import collections
from typing import Dict, Iterable, List, Set

import onnx
from onnx import numpy_helper

from edge_mm.errors import ExportError

# Layers that carry weights: the ones quantization targets and the ones a "head" is made of.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def producers(graph: onnx.GraphProto) -> Dict[str, onnx.NodeProto]:
    """Map each tensor name to the node that writes it."""
    return {out: node for node in graph.node for out in node.output if out}


def consumers(graph: onnx.GraphProto) -> Dict[str, List[onnx.NodeProto]]:
    """Map each tensor name to the nodes that read it (subgraph reads are not followed)."""
    readers: Dict[str, List[onnx.NodeProto]] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                readers[name].append(node)
    return readers


def op_counts(model: onnx.ModelProto) -> Dict[str, int]:
    return dict(collections.Counter(node.op_type for node in model.graph.node))


def name_unnamed_nodes(graph: onnx.GraphProto) -> None:
    """Give every node a unique name: converters derive new tensor names from node names."""
    taken = {node.name for node in graph.node if node.name}
    seen: Set[str] = set()
    for index, node in enumerate(graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = f"{node.op_type}_{index}"
        candidate, suffix = base, 0
        while candidate in taken or candidate in seen:
            suffix += 1
            candidate = f"{base}_{suffix}"
        node.name = candidate
        seen.add(candidate)


def constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Turn `Constant` nodes holding a tensor into initializers, so they can be kept or converted per use."""
    kept = []
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and not node.domain and value is not None and len(node.attribute) == 1:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def subgraph_inputs(graph: onnx.GraphProto) -> Set[str]:
    """Every tensor name read by nodes inside the subgraphs (If/Loop/Scan bodies) of `graph`'s nodes."""
    names: Set[str] = set()
    for node in graph.node:
        for attribute in node.attribute:
            for body in list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else []):
                for inner in body.node:
                    names.update(inner.input)
                names.update(subgraph_inputs(body))
    return names


def bypass_identities(graph: onnx.GraphProto) -> None:
    """Remove Identity nodes whose output is not a graph output, reading their input directly.

    The legacy exporter writes `Identity(initializer)` for tied weights (e.g. several LayerNorms
    with equal parameters); onnxconverter-common then converts the initializer and not its alias.
    """
    outputs = {o.name for o in graph.output}
    read_by_subgraphs = subgraph_inputs(graph)  # outer-scope names a subgraph reads must survive
    renames: Dict[str, str] = {}
    kept = []
    for node in graph.node:
        if (
            node.op_type == "Identity"
            and not node.domain
            and node.output[0] not in outputs
            and node.output[0] not in read_by_subgraphs
        ):
            source = node.input[0]
            renames[node.output[0]] = renames.get(source, source)
        else:
            kept.append(node)
    if not renames:
        return
    for node in kept:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    del graph.node[:]
    graph.node.extend(kept)
    stale = [vi for vi in graph.value_info if vi.name in renames]
    for vi in stale:
        graph.value_info.remove(vi)


def head_nodes(model: onnx.ModelProto, weighted_ops: Iterable[str] = WEIGHTED_OPS) -> List[str]:
    """Names of the weighted layers nearest each graph output (e.g. CLIP's projection, CDINet's predictor).

    Walks back from every output through unweighted nodes and stops at the first weighted one on
    each path: these are the layers whose error reaches the output without further averaging.
    """
    weighted = set(weighted_ops)
    graph = model.graph
    writer = producers(graph)
    found: List[str] = []
    seen: Set[str] = set()
    stack = [o.name for o in graph.output]
    while stack:
        tensor = stack.pop()
        node = writer.get(tensor)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in weighted:
            found.append(node.name)
            continue
        stack.extend(node.input)
    return sorted(found)


def activation_matmuls(model: onnx.ModelProto) -> List[str]:
    """Names of MatMul nodes whose inputs are both activations (attention's Q@K^T and P@V)."""
    constants = {t.name for t in model.graph.initializer}
    constants.update(out for node in model.graph.node if node.op_type == "Constant" for out in node.output)
    return sorted(
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and not any(i in constants for i in node.input)
    )


def tail_nodes(model: onnx.ModelProto, weighted_ops: Iterable[str] = WEIGHTED_OPS) -> List[str]:
    """Names of the weighted layers nearest each graph input (the first layers)."""
    weighted = set(weighted_ops)
    graph = model.graph
    readers = consumers(graph)
    found: List[str] = []
    seen: Set[str] = set()
    stack = [i.name for i in graph.input]
    while stack:
        tensor = stack.pop()
        for node in readers.get(tensor, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in weighted:
                found.append(node.name)
            else:
                stack.extend(node.output)
    return sorted(found)


def remove_unused_initializers(graph: onnx.GraphProto) -> None:
    """Drop initializers no node (nor subgraph) reads and that are not graph outputs."""
    used = {name for node in graph.node for name in node.input} | subgraph_inputs(graph)
    used |= {o.name for o in graph.output}
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    stale_inputs = [i for i in graph.input if i.name in {t.name for t in unused}]
    for vi in stale_inputs:
        graph.input.remove(vi)


def strip_unused_opsets(model: onnx.ModelProto) -> None:
    """Drop opset imports no node uses (ORT's optimizer adds com.microsoft and friends)."""
    used = {node.domain for node in model.graph.node} | {""}
    for function in model.functions:
        used.add(function.domain)
        used.update(node.domain for node in function.node)
    kept = [op for op in model.opset_import if op.domain in used or op.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def io_elem_types(model: onnx.ModelProto) -> Dict[str, int]:
    """Element type of each graph input and output."""
    return {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.input) + list(model.graph.output)}


def float_initializer_names(model: onnx.ModelProto) -> Set[str]:
    return {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}


def initializer_array(model: onnx.ModelProto, name: str):
    for tensor in model.graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    raise KeyError(name)


def validate(model: onnx.ModelProto, what: str) -> None:
    """Full ONNX check (strict shape and type inference) and an ONNX Runtime CPU session."""
    import onnxruntime as ort

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"the {what} graph fails the ONNX checker ({first}); report this with the fp32 model attached"
        ) from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        first = str(exc).strip().splitlines()[0]
        raise ExportError(
            f"ONNX Runtime cannot load the {what} graph ({first}); report this with the fp32 model attached"
        ) from None
