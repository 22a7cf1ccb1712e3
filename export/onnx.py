"""PyTorch -> ONNX (FP32) for CDINet and CLIP's two encoders, with the model spec in the metadata.

Each graph is a thin wrapper around the model that adds what the runtime must not redo:

    CDINet       rgb (N,3,H,W), depth (N,1,H,W) -> saliency (N,1,H,W)  probabilities (sigmoid inside)
    CLIP image   image (N,3,S,S)                -> image_embeds (N,E)  L2-normalized
    CLIP text    input_ids (N,77) int64         -> text_embeds (N,E)   L2-normalized, EOT pooled

Batch is dynamic everywhere, CDINet's H and W too (multiples of 16). The legacy TorchScript
exporter at opset 17 is used on purpose: it honours opset 17 (one LayerNormalization node, which
TensorRT >= 8.6 keeps accurate in FP16), where the dynamo exporter moves to opset 18. The text
graph finds the EOT position on an integer path (edge_mm.clip.model), so FP16 cannot confuse the
start and end tokens. Every file passes onnx.checker's full check before it is written.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from edge_mm import __version__ as EDGE_MM_VERSION
from edge_mm.errors import ExportError
from edge_mm.registry import DEFAULT_BATCH, DEFAULT_CDINET_SIDE, cdinet_spec, clip_image_spec, clip_text_spec
from edge_mm.spec import ModelSpec
from export.metadata import attach_spec
from export.models import LoadedModel

OPSET = 17


class SaliencyProbabilities(nn.Module):
    """CDINet with the sigmoid inside: the graph's output is a probability map."""

    def __init__(self, cdinet: nn.Module) -> None:
        super().__init__()
        self.cdinet = cdinet

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.cdinet(rgb, depth))


class NormalizedImageEmbeddings(nn.Module):
    """CLIP's image encoder, L2-normalized (cosine similarity becomes a dot product)."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(image), dim=-1)


class NormalizedTextEmbeddings(nn.Module):
    """CLIP's text encoder (EOT pooling on integer ids), L2-normalized."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(input_ids), dim=-1)


@dataclasses.dataclass
class Graph:
    """One ONNX graph to export: the wrapper module, its I/O names and dynamic axes, and its spec."""

    role: str  # "model" (CDINet), "image" or "text" (CLIP): the artifact sub-folder for CLIP
    module: nn.Module
    input_names: List[str]
    output_names: List[str]
    dynamic_axes: Dict[str, Dict[int, str]]
    spec: ModelSpec

    def example_inputs(self, batch: int = 2) -> Tuple[torch.Tensor, ...]:
        """Inputs to trace with: spec shapes, `batch` samples (not 1, so batch cannot be baked in)."""
        sizes = {"batch": batch}
        if self.spec.kind == "cdinet":
            sizes.update(height=self.spec.preprocess["size"][0], width=self.spec.preprocess["size"][1])
        tensors = []
        generator = torch.Generator().manual_seed(0)
        for tensor_spec in self.spec.inputs:
            shape = [sizes[d] if isinstance(d, str) else d for d in tensor_spec.shape]
            if tensor_spec.dtype == "int64":
                tensors.append(torch.randint(0, 49406, shape, generator=generator, dtype=torch.int64))
            else:
                tensors.append(torch.randn(shape, generator=generator))
        return tuple(tensors)


def exporter_versions() -> Dict[str, str]:
    return {"edge_mm": EDGE_MM_VERSION, "torch": torch.__version__, "onnx": onnx.__version__, "opset": str(OPSET)}


def _fill_spec(spec: ModelSpec, loaded: LoadedModel, extra: Dict) -> ModelSpec:
    spec.source_weights_sha256 = loaded.weights.get("sha256", "")
    spec.exporter = exporter_versions()
    spec.extra = dict(extra, weights={k: v for k, v in loaded.weights.items() if k != "sha256"})
    return spec


# The batch the runtime runs each model at: the saliency stage takes one frame at a time; CLIP
# embeds labels and index crops in batches (runtime/retrieval splits larger ones per engine).
RUNTIME_MAX_BATCH = {"cdinet": 1, "clip": DEFAULT_BATCH[2]}


@dataclasses.dataclass(frozen=True)
class Profile:
    """TensorRT optimization-profile hints written into the spec (the engine builder reads them).

    The defaults fit the model: its native input size (CDINet: H and W up to the exported size,
    down to 128) and the batch the runtime uses. Larger ranges cost builder memory (an 8x3x512x512
    CDINet profile ran out of memory on a 2-core machine with TensorRT-RTX), so they are asked for.
    """

    max_batch: Optional[int] = None  # None: RUNTIME_MAX_BATCH of the model family
    max_side: Optional[int] = None  # CDINet only: largest H and W an engine accepts; None: the native size

    def batch(self, family: str) -> Tuple[int, int, int]:
        return (1, 1, self.max_batch or RUNTIME_MAX_BATCH[family])

    def sides(self, opt: int) -> Tuple[int, int, int]:
        return (min(DEFAULT_CDINET_SIDE[0], opt), opt, max(self.max_side or opt, opt))


def cdinet_graph(loaded: LoadedModel, profile: Profile = Profile()) -> Graph:
    pre = loaded.preprocess
    spec = cdinet_spec(loaded.name.text, pre, batch=profile.batch("cdinet"), side=profile.sides(max(pre.size)))
    spec = _fill_spec(spec, loaded, {"cdinet": loaded.config})
    axes = {0: "batch", 2: "height", 3: "width"}
    return Graph(
        "model",
        SaliencyProbabilities(loaded.module).eval(),
        ["rgb", "depth"],
        ["saliency"],
        {"rgb": axes, "depth": axes, "saliency": axes},
        spec,
    )


def clip_graphs(loaded: LoadedModel, profile: Profile = Profile()) -> List[Graph]:
    clip = loaded.module
    extra = {"clip": loaded.config, "embed_dim": clip.embed_dim, "eot_token_id": int(clip.eot_token_id)}
    image_spec = clip_image_spec(loaded.name.text, clip.image_resolution, clip.embed_dim, batch=profile.batch("clip"))
    text_spec = clip_text_spec(loaded.name.text, clip.context_length, clip.embed_dim, batch=profile.batch("clip"))
    image_spec, text_spec = _fill_spec(image_spec, loaded, extra), _fill_spec(text_spec, loaded, extra)
    return [
        Graph(
            "image",
            NormalizedImageEmbeddings(clip).eval(),
            ["image"],
            ["image_embeds"],
            {"image": {0: "batch"}, "image_embeds": {0: "batch"}},
            image_spec,
        ),
        Graph(
            "text",
            NormalizedTextEmbeddings(clip).eval(),
            ["input_ids"],
            ["text_embeds"],
            {"input_ids": {0: "batch"}, "text_embeds": {0: "batch"}},
            text_spec,
        ),
    ]


def graphs_for(loaded: LoadedModel, profile: Profile = Profile()) -> List[Graph]:
    return [cdinet_graph(loaded, profile)] if loaded.family == "cdinet" else clip_graphs(loaded, profile)


def check_model(model: onnx.ModelProto, what: str) -> None:
    """onnx.checker with full_check (strict shape and type inference); ExportError on failure."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"{what} fails the ONNX checker ({first}); report this with the model name and weights"
        ) from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < OPSET:
        raise ExportError(f"{what} has opset {opset}, below {OPSET}; export with this edge-mm version")


def export_graph(graph: Graph, path: Path) -> onnx.ModelProto:
    """Trace `graph` to `path` (FP32, opset 17, dynamic axes), add the spec, check it; returns the model."""
    graph.module.eval()
    inputs = graph.example_inputs()
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter's deprecation notice and nn.MultiheadAttention's shape-check
        # TracerWarnings are expected here and say nothing about the exported graph.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            torch.onnx.export(
                graph.module,
                inputs,
                str(path),
                input_names=graph.input_names,
                output_names=graph.output_names,
                dynamic_axes=graph.dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # the exporter raises many types (SymbolicValueError, RuntimeError, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExportError(f"torch.onnx.export failed for the {graph.spec.kind} graph ({first[:300]})") from None
    if graph.module.training:  # the legacy exporter restores the wrapper's flag; it must stay eval
        raise ExportError("the model was left in training mode by the exporter; this is a bug in export/onnx.py")
    model = onnx.load(str(path))
    model.producer_name = "edge-mm"
    model.producer_version = EDGE_MM_VERSION
    model.doc_string = f"{graph.spec.name} {graph.spec.kind}: exported by edge-mm {EDGE_MM_VERSION}"
    attach_spec(model, graph.spec)
    check_model(model, f"the exported {graph.spec.kind} graph")
    onnx.save(model, str(path))
    return model
