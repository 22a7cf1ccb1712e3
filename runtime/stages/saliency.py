"""The saliency stage: a CDINet artifact on a backend -> a mask, a box, a score, a distance; and its overlay.

    stage = SaliencyStage(SaliencyModel(backend), alpha=0.5, colormap="jet")
    reads: frame (colour, depth)       adds: "saliency" (runtime.saliency.SaliencyResult)
    draws: the heat map (o turns it off) and the object's box with its score and distance
    event: box, score, depth_m, area_frac, and iou when the source has ground truth (synthetic scenes)
    metric: iou_vs_ground_truth (summarised by the run's statistics)

Depth is used for the distance only when the source says it is metric (`frame.meta["depth_kind"]`,
default "metric"); a folder of relative depth images gives no distance.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from runtime.overlay import blend_heatmap_into, draw_box
from runtime.saliency import SaliencyModel, SaliencyResult, mask_iou
from runtime.stages.base import FrameResult, Stage


class SaliencyStage(Stage):
    name = "saliency"
    reads = ("frame",)
    adds = ("saliency",)

    def __init__(
        self, model: SaliencyModel, *, alpha: float = 0.5, colormap: str = "jet", label: str = "", info: Any = None
    ) -> None:
        self.model = model
        self.alpha = alpha
        self.colormap = colormap
        self.label = label  # e.g. "ort-cpu int8 | cdinet-s", shown in the text panel
        self._info: Dict[str, Any] = dict(info or {})

    def prepare(self, frame: Any) -> Dict[str, np.ndarray]:
        return self.model.preprocess(frame.color, frame.depth_m)

    def infer(self, prepared: Dict[str, np.ndarray]) -> np.ndarray:
        return self.model.infer(prepared)

    def finish(self, result: FrameResult, pred: np.ndarray) -> None:
        frame = result.frame
        depth = frame.depth_m if frame.meta.get("depth_kind", "metric") == "metric" else None
        saliency = self.model.postprocess(pred, frame.size, depth)
        result.values["saliency"] = saliency
        gt = frame.meta.get("mask")
        if isinstance(gt, np.ndarray) and saliency.mask is not None and gt.shape == saliency.mask.shape:
            result.metrics["iou_vs_ground_truth"] = mask_iou(saliency.mask, gt)

    def draw(self, image: np.ndarray, result: FrameResult, overlay: bool) -> None:
        saliency: SaliencyResult = result.values["saliency"]
        if overlay:
            blend_heatmap_into(image, saliency, self.alpha, self.colormap)
        draw_box(image, saliency)

    def text_lines(self, result: FrameResult) -> List[str]:
        return [self.label] if self.label else []

    def event_fields(self, result: FrameResult) -> Dict[str, Any]:
        fields = result.values["saliency"].to_event()
        iou = result.metrics.get("iou_vs_ground_truth")
        if iou is not None:
            fields["iou"] = round(iou, 4)
        return fields

    def snapshot_images(self, result: FrameResult) -> Dict[str, np.ndarray]:
        return {"saliency": cv2.convertScaleAbs(result.values["saliency"].prob, alpha=255.0)}

    def measure_alone(self) -> Optional[Dict[str, Any]]:
        """The model's own speed, timed before the run with nothing else running (it doubles as the
        backend's warm-up), so the summary's pipeline/model ratio compares two real measurements."""
        from runtime.stats import measure_model_alone

        height, width = self.model.preprocess_spec.size
        feeds = self.model.preprocess(np.zeros((height, width, 3), np.uint8), np.ones((height, width), np.float32))
        return measure_model_alone(lambda: self.model.infer(feeds))

    def info(self) -> Dict[str, Any]:
        return dict(self._info)

    def describe(self) -> str:
        return f"saliency ({self.model.spec.name})"

    def close(self) -> None:
        self.model.backend.deactivate()


NAME = "saliency"


def add_arguments(parser: Any) -> None:
    """The saliency stage's options are edge-mm-run's model options (--model, --backend, ...): nothing to add."""


def from_args(args: Any, ctx: Any) -> Optional[SaliencyStage]:
    """The saliency stage for edge-mm-run's --model (artifact), --backend, --precision, --threads, --threshold."""
    from runtime.backends.select import select_backend

    artifact = ctx.open_artifact(ctx.model_path)
    selection = select_backend(
        artifact, args.backend, args.precision, threads=args.threads, warn=ctx.warn, **ctx.backend_options
    )
    backend = selection.backend
    try:
        model = SaliencyModel(backend, threshold=args.threshold or None)
        size = model.preprocess_spec.size
        provider = getattr(backend, "provider", None)
        ctx.say(f"model: {artifact.path} ({model.spec.name}, input {size[0]}x{size[1]})")
        ctx.say(f"backend: {selection.label}{f' [{provider}]' if provider else ''} - {selection.reason}")
        model.warm_up()
    except BaseException:
        backend.deactivate()
        raise
    info = {
        "model": model.spec.name,
        "artifact": str(artifact.path),
        "backend": selection.label,
        "backend_reason": selection.reason,
        "backend_kind": selection.kind,
        "provider": provider,
        "input_size": list(size),
    }
    return SaliencyStage(
        model, alpha=args.alpha, colormap=args.colormap, label=f"{selection.label} | {model.spec.name}", info=info
    )
