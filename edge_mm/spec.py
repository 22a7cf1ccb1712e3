"""The model spec: the JSON that travels inside every ONNX file (metadata key `edge_mm`).

It is the contract between export, calibration and the runtime: the runtime reads only this to
preprocess, run and postprocess an artifact. Torch-free.

Layout (format 1):
    {
      "format": 1,
      "kind": "cdinet" | "rgbd-saliency" | "rgb-saliency" | "clip-image" | "clip-text",
      "name": "cdinet-s",                      # model name as given to build_engine
      "inputs":  [{"name", "dtype", "layout", "shape", "role"}],   # shape entries: int or axis name
                                                # role: rgb | depth | ids ("" = implied by the name)
      "outputs": [{"name", "dtype", "layout", "shape"}],
      "preprocess": {...},    # kind-specific: edge_mm.rgbd.RgbdPreprocess / edge_mm.clip.preprocess
      "postprocess": {...},   # e.g. {"activation": "sigmoid"} or {"l2_normalized": true}
      "profile": {"batch": [min, opt, max], ...},          # TensorRT optimization profile hints
      "source_weights_sha256": "...",
      "exporter": {"edge_mm": "...", "torch": "...", "onnx": "..."},
      "extra": {...}          # free-form, e.g. CLIP's embed_dim, context_length
    }
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Dict, List, Union

from edge_mm.errors import ArtifactError

SPEC_FORMAT = 1
METADATA_KEY = "edge_mm"
KINDS = ("cdinet", "rgbd-saliency", "rgb-saliency", "clip-image", "clip-text")
# Kinds whose graph maps a frame to a saliency map: CDINet (edge-mm's export) and imported models
# (python -m export.import_onnx). edge_mm.saliency_io reads their inputs and output from the spec.
SALIENCY_KINDS = ("cdinet", "rgbd-saliency", "rgb-saliency")
ROLES = ("rgb", "depth", "ids")


@dataclasses.dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: List[Union[int, str]]
    layout: str = ""
    role: str = ""  # rgb | depth | ids; "" in edge-mm's own exports, where the name says it

    def key(self) -> Dict[str, Any]:
        """The fields that decide the input bytes; an empty role is left out so older digests stay."""
        data = dataclasses.asdict(self)
        if not self.role:
            del data["role"]
        return data


@dataclasses.dataclass
class ModelSpec:
    kind: str
    name: str
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    preprocess: Dict[str, Any] = dataclasses.field(default_factory=dict)
    postprocess: Dict[str, Any] = dataclasses.field(default_factory=dict)
    profile: Dict[str, List[int]] = dataclasses.field(default_factory=dict)
    source_weights_sha256: str = ""
    exporter: Dict[str, str] = dataclasses.field(default_factory=dict)
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)
    format: int = SPEC_FORMAT

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArtifactError(f"unknown model kind {self.kind!r} in spec; expected one of {', '.join(KINDS)}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelSpec":
        try:
            if data.get("format") != SPEC_FORMAT:
                raise ArtifactError(
                    f"model spec format {data.get('format')!r} is not supported (expected {SPEC_FORMAT}); "
                    "re-export the artifact with this edge-mm version"
                )
            fields = dict(data)
            fields["inputs"] = [TensorSpec(**t) for t in data["inputs"]]
            fields["outputs"] = [TensorSpec(**t) for t in data["outputs"]]
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"model spec is malformed ({exc}); re-export the artifact") from None

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"model spec is not valid JSON ({exc}); re-export the artifact") from None
        return cls.from_dict(data)

    def digest(self) -> str:
        """A stable hash of what decides the input bytes: kind, inputs and preprocessing."""
        key = {"kind": self.kind, "inputs": [t.key() for t in self.inputs], "preprocess": self.preprocess}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
