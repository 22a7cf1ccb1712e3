"""PyTorch against ONNX Runtime on every export: the FP32 graph must compute what the model does.

Inputs are real preprocessed samples (synthetic scenes, captions), not noise, at the spec's size
and at a second size and batch, so dynamic axes are exercised too. Gates:
- CDINet: max |p_torch - p_onnx| <= 1e-4 on the probability maps;
- CLIP: cosine(torch, onnx) >= 0.99999 for every sample (the embeddings are unit vectors).
The torch reference is computed before the export runs (the exporter toggles training flags).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from calib.sampling import sample
from edge_mm.clip.tokenizer import tokenize
from edge_mm.errors import ExportError
from edge_mm.spec import ModelSpec
from export.onnx import Graph
from export.precision.compare import compare_outputs

CDINET_MAX_ABS = 1e-4
CLIP_MIN_COSINE = 0.99999
PARITY_SEED = 20_000  # neither the calibration seed (0) nor the evaluation seed (10 000)
SIZE_MULTIPLE = 16

Feeds = Dict[str, np.ndarray]
Case = Tuple[str, Feeds]


def _round16(x: float) -> int:
    return max(SIZE_MULTIPLE, int(round(x / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def other_size(size: Tuple[int, int]) -> Tuple[int, int]:
    """A second input size (multiples of 16, not square if the first is) to test dynamic H and W."""
    h, w = size
    return _round16(h * 0.75), _round16(w * 1.25)


def _with_size(spec: ModelSpec, size: Tuple[int, int]) -> ModelSpec:
    other = copy.deepcopy(spec)
    other.preprocess["size"] = [int(size[0]), int(size[1])]
    return other


def _label(feeds: Feeds) -> str:
    return ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in feeds.items())


LONG_CAPTION = " ".join(["a photo of a red circle next to a blue square"] * 12)  # > 77 tokens: truncated, EOT last


def parity_cases(spec: ModelSpec) -> List[Case]:
    """The inputs parity is checked on (two cases per graph: spec size/batch 2, other size/batch)."""
    if spec.kind == "cdinet":
        size = tuple(spec.preprocess["size"])
        first = sample(spec, "synthetic", 2, PARITY_SEED, progress=False)
        second = sample(_with_size(spec, other_size(size)), "synthetic", 1, PARITY_SEED + 1, progress=False)
        return [(_label(first), first), (_label(second), second)]
    if spec.kind == "clip-image":
        images = sample(spec, "synthetic", 3, PARITY_SEED, progress=False)["image"]
        return [(_label({"image": images[:1]}), {"image": images[:1]}), (_label({"image": images}), {"image": images})]
    context = int(spec.preprocess.get("context_length", 77))
    captions = sample(spec, "synthetic", 3, PARITY_SEED, progress=False)["input_ids"]
    extra = tokenize(["a", LONG_CAPTION], context_length=context, truncate=True, dtype=captions.dtype)
    ids = np.concatenate([captions, extra])
    return [(_label({"input_ids": ids[:1]}), {"input_ids": ids[:1]}), (_label({"input_ids": ids}), {"input_ids": ids})]


def torch_outputs(graph: Graph, feeds: Feeds) -> Dict[str, np.ndarray]:
    graph.module.eval()
    with torch.no_grad():
        out = graph.module(*[torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in graph.input_names])
    return {graph.output_names[0]: out.numpy()}


def reference_outputs(graph: Graph, cases: List[Case]) -> List[Dict[str, np.ndarray]]:
    return [torch_outputs(graph, feeds) for _, feeds in cases]


def ort_session(path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_parity(
    graph: Graph, onnx_path, cases: List[Case], references: List[Dict[str, np.ndarray]], threads: int = 0
) -> Dict[str, Any]:
    """Run the ONNX file on every case, compare with the torch references, raise ExportError past the gate."""
    session = ort_session(onnx_path, threads)
    is_cdinet = graph.spec.kind == "cdinet"
    results = []
    for (label, feeds), reference in zip(cases, references):
        outputs = dict(zip(graph.output_names, session.run(graph.output_names, feeds)))
        stats = compare_outputs(reference, outputs)[graph.output_names[0]]
        results.append({"inputs": label, **stats})
    worst_abs = max(r["max_abs"] for r in results)
    worst_cos = min(r["cosine_min"] for r in results)
    if is_cdinet:
        gate = {"max_abs_at_most": CDINET_MAX_ABS}
        passed = worst_abs <= CDINET_MAX_ABS
        failure = f"max |torch - onnx| of the probabilities is {worst_abs:.2e} > {CDINET_MAX_ABS:g}"
    else:
        gate = {"cosine_at_least": CLIP_MIN_COSINE}
        passed = worst_cos >= CLIP_MIN_COSINE
        failure = f"the worst cosine(torch, onnx) is {worst_cos:.7f} < {CLIP_MIN_COSINE}"
    report = {
        "reference": "pytorch eager fp32 (cpu)",
        "runtime": "onnxruntime cpu",
        "gate": gate,
        "cases": results,
        "max_abs": worst_abs,
        "cosine_min": worst_cos,
        "passed": bool(passed),
    }
    if not passed:
        raise ExportError(
            f"the {graph.spec.kind} ONNX graph does not match PyTorch: {failure}; the export is wrong, nothing was written"
        )
    return report
