"""A saliency graph's inputs and output, read from its spec (torch-free: numpy + OpenCV).

One implementation for every saliency kind (edge_mm.spec.SALIENCY_KINDS): CDINet as edge-mm
exports it, and models imported with `python -m export.import_onnx` (another input naming, NHWC
layout, 0-255 scaling, three-channel depth, no depth at all, logits or probabilities, a map at
another resolution). The runtime, the calibration sets, the export report and edge-mm-eval all build
their feeds here, so a model sees the same tensors everywhere.

    io = SaliencyIO.from_spec(spec)
    feeds = io.feeds([bgr], [depth_m])                # {graph input name: array}
    prob = io.probability(outputs, frame_size)        # (H, W) float32 in [0, 1]
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from edge_mm.errors import ArtifactError, InputError
from edge_mm.rgbd import (
    RgbdPreprocess,
    postprocess_saliency,
    preprocess_depth,
    preprocess_rgb,
    preprocess_rgbd,
)
from edge_mm.spec import SALIENCY_KINDS, ModelSpec, TensorSpec

IMAGE_LAYOUTS = ("NCHW", "NHWC")
# Output layouts a saliency map can have; "NHW" is a map without a channel axis.
MAP_LAYOUTS = ("NCHW", "NHWC", "NHW")
# edge-mm's own exports name their inputs; their role follows from the name.
_ROLE_OF_NAME = {"rgb": "rgb", "depth": "depth", "image": "rgb", "input_ids": "ids"}


def role_of(tensor: TensorSpec) -> str:
    return tensor.role or _ROLE_OF_NAME.get(tensor.name, "")


def _channels(tensor: TensorSpec) -> Optional[int]:
    axis = 1 if tensor.layout == "NCHW" else 3
    value = tensor.shape[axis] if len(tensor.shape) == 4 else None
    return value if isinstance(value, int) else None


@dataclasses.dataclass(frozen=True)
class SaliencyIO:
    """Which graph input takes colour and which depth, in what layout; which output is the map."""

    pre: RgbdPreprocess
    rgb: TensorSpec
    depth: Optional[TensorSpec]  # None: an RGB-only model
    output: TensorSpec
    logits: bool  # True: apply the sigmoid after resizing (the map is logits)
    channel: int = 0  # which channel of a multi-channel output is "salient"

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> "SaliencyIO":
        if spec.kind not in SALIENCY_KINDS:
            raise ArtifactError(
                f"{spec.name} is a {spec.kind} model, not a saliency model ({', '.join(SALIENCY_KINDS)})"
            )
        by_role: Dict[str, TensorSpec] = {}
        for tensor in spec.inputs:
            role = role_of(tensor)
            if role not in ("rgb", "depth") or role in by_role:
                raise ArtifactError(
                    f"{spec.name}'s spec gives input {tensor.name!r} the role {role or 'none'!r}; a saliency model "
                    "has one rgb input and at most one depth input: re-import it with a corrected card"
                )
            if tensor.layout not in IMAGE_LAYOUTS:
                raise ArtifactError(f"{spec.name}'s input {tensor.name!r} has layout {tensor.layout!r}; re-import it")
            by_role[role] = tensor
        if "rgb" not in by_role:
            raise ArtifactError(f"{spec.name}'s spec has no rgb input; re-import it with a card that names one")
        wanted = spec.postprocess.get("output_name") or spec.outputs[0].name
        output = next((t for t in spec.outputs if t.name == wanted), None)
        if output is None or (output.layout or "NCHW") not in MAP_LAYOUTS:
            raise ArtifactError(f"{spec.name}'s spec names no usable saliency output ({wanted!r}); re-import it")
        return cls(
            pre=RgbdPreprocess.from_dict(spec.preprocess),
            rgb=by_role["rgb"],
            depth=by_role.get("depth"),
            output=output,
            logits=spec.postprocess.get("output") == "logits",
            channel=int(spec.postprocess.get("channel", 0)),
        )

    @property
    def size(self) -> Tuple[int, int]:
        return self.pre.size

    # ---- inputs -------------------------------------------------------------------------------

    def _layout(self, chw: np.ndarray, tensor: TensorSpec) -> np.ndarray:
        """(N, C, H, W) -> the tensor's layout and channel count (depth may be repeated to 3)."""
        channels = _channels(tensor)
        if channels is not None and channels != chw.shape[1]:
            chw = np.repeat(chw, channels, axis=1)  # three-channel depth (BBS-Net style)
        if tensor.layout == "NHWC":
            chw = chw.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(chw, dtype=np.float32)

    def arrange(self, rgb: np.ndarray, depth: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
        """Preprocessed (N, 3, H, W) colour and (N, 1, H, W) depth -> feed dict (names, layouts, channels)."""
        feeds = {self.rgb.name: self._layout(rgb, self.rgb)}
        if self.depth is not None:
            if depth is None:
                raise InputError(f"the model's input {self.depth.name!r} needs depth; pass a source with depth")
            feeds[self.depth.name] = self._layout(depth, self.depth)
        return feeds

    def feeds_from_unit(
        self, bgrs: Sequence[np.ndarray], depth_units: Optional[Sequence[np.ndarray]]
    ) -> Dict[str, np.ndarray]:
        """Frames with unit depth ([0, 1], the spec's polarity: a dataset's depth) -> feed dict."""
        rgb = np.stack([preprocess_rgb(b, self.pre) for b in bgrs])
        depth = None
        if self.depth is not None and depth_units is not None:
            depth = np.stack([preprocess_depth(u, self.pre) for u in depth_units])
        return self.arrange(rgb, depth)

    def feeds(
        self, bgrs: Sequence[np.ndarray], depths_m: Optional[Sequence[Optional[np.ndarray]]]
    ) -> Dict[str, np.ndarray]:
        """Camera frames (BGR uint8, depth in metres with 0 = no data) -> feed dict of batch len(bgrs).

        An RGB-only model ignores depth (None allowed); an RGB-D one brings depth of another resolution
        of the same view to the colour size first, as edge_mm.rgbd.preprocess_rgbd does.
        """
        if len(bgrs) == 0:
            raise InputError("no frames given; pass at least one colour image")
        if self.depth is None:
            return self.arrange(np.stack([preprocess_rgb(b, self.pre) for b in bgrs]), None)
        if depths_m is None or len(depths_m) != len(bgrs) or any(d is None for d in depths_m):
            raise InputError(f"the model's input {self.depth.name!r} needs a depth map per colour image")
        pairs = [preprocess_rgbd(b, d, self.pre) for b, d in zip(bgrs, depths_m)]
        return self.arrange(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))

    def blank_feeds(self) -> Dict[str, np.ndarray]:
        """Zeros of the model's input shapes (batch 1), for warm-up runs."""
        h, w = self.size
        blank = np.zeros((1, 3, h, w), np.float32)
        feeds = {self.rgb.name: self._layout(blank, self.rgb)}
        if self.depth is not None:
            feeds[self.depth.name] = self._layout(blank[:, :1], self.depth)
        return feeds

    # ---- output -------------------------------------------------------------------------------

    def maps(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The graph's outputs -> (N, h, w) float32 maps (logits or probabilities, as the graph gives)."""
        if self.output.name not in outputs:
            raise ArtifactError(f"the model returned {sorted(outputs)}, not its saliency output {self.output.name!r}")
        out = np.asarray(outputs[self.output.name])
        layout = self.output.layout or "NCHW"
        if out.ndim != len(layout):
            raise InputError(f"saliency output {self.output.name!r} has shape {out.shape}, not the spec's {layout}")
        if layout == "NHWC":
            out = out[..., self.channel]
        elif layout == "NCHW":
            out = out[:, self.channel]
        return np.ascontiguousarray(out, dtype=np.float32)

    def probability(self, pred: np.ndarray, frame_size: Tuple[int, int]) -> np.ndarray:
        """One (h, w) map from `maps` -> (H, W) probabilities at the frame size."""
        return postprocess_saliency(pred, frame_size, logits=self.logits)
