"""From the model's saliency map to what a user acts on: a mask, a box, a score and a distance.

The model's output (probabilities at its input size) is resized to the frame, thresholded to a
mask, and the largest connected region of the mask is "the salient object": its bounding box
(x0, y0, x1, y1 with exclusive ends, like numpy slices), its mean probability as a score, and the
mean depth in metres of the pixels under it that have depth. Torch-free (numpy + OpenCV).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from edge_mm.errors import InputError
from edge_mm.rgbd import postprocess_saliency

Box = Tuple[int, int, int, int]


@dataclasses.dataclass
class SaliencyResult:
    """One frame's saliency, at the frame's size.

    prob:      (H, W) float32 in [0, 1].
    mask:      (H, W) bool, prob >= threshold (every region), or None when thresholding is off.
    box:       (x0, y0, x1, y1) of the largest region, or None (no region, or thresholding off).
    score:     mean probability inside the largest region (0 when there is none).
    depth_m:   mean depth of the region's pixels that have depth, metres; None without metric depth.
    area_frac: the largest region's share of the frame.
    """

    prob: np.ndarray
    mask: Optional[np.ndarray] = None
    box: Optional[Box] = None
    score: float = 0.0
    depth_m: Optional[float] = None
    area_frac: float = 0.0
    threshold: Optional[float] = None

    def to_event(self) -> Dict[str, Any]:
        """The JSON-able part (no arrays)."""
        return {
            "box": list(self.box) if self.box is not None else None,
            "score": round(float(self.score), 4),
            "depth_m": None if self.depth_m is None else round(float(self.depth_m), 4),
            "area_frac": round(float(self.area_frac), 5),
        }


def largest_region(mask_u8: np.ndarray, min_area_px: int = 1) -> Optional[Tuple[np.ndarray, Box, int]]:
    """(region mask uint8 {0,1} over its own box, box, area) of the largest 8-connected region, or None."""
    h, w = mask_u8.shape
    # 16-bit labels halve the labelling's memory traffic (about half its time); an 8-connected mask
    # has at most one region per 2x2 cell, so they suffice unless that count passes 65535.
    ltype = cv2.CV_16U if ((h + 1) // 2) * ((w + 1) // 2) < 65535 else cv2.CV_32S
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask_u8, connectivity=8, ltype=ltype)
    if count <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = int(np.argmax(areas)) + 1
    area = int(stats[best, cv2.CC_STAT_AREA])
    if area < min_area_px:
        return None
    x, y = int(stats[best, cv2.CC_STAT_LEFT]), int(stats[best, cv2.CC_STAT_TOP])
    w, h = int(stats[best, cv2.CC_STAT_WIDTH]), int(stats[best, cv2.CC_STAT_HEIGHT])
    region = (labels[y : y + h, x : x + w] == best).view(np.uint8)
    return region, (x, y, x + w, y + h), area


def mean_depth_under(region_u8: np.ndarray, depth_m: np.ndarray) -> Optional[float]:
    """Mean of the depth values > 0 under the region (holes are ignored); None if there are none."""
    if depth_m.shape != region_u8.shape:
        # Depth of another resolution of the same view: bring it to the mask grid without blending holes.
        depth_m = cv2.resize(depth_m, (region_u8.shape[1], region_u8.shape[0]), interpolation=cv2.INTER_NEAREST)
    valid = cv2.bitwise_and(region_u8, (depth_m > 0).view(np.uint8))
    if cv2.countNonZero(valid) == 0:
        return None
    return float(cv2.mean(depth_m, mask=valid)[0])


def analyse_saliency(
    pred: np.ndarray,
    frame_size: Tuple[int, int],
    depth_m: Optional[np.ndarray] = None,
    threshold: Optional[float] = 0.5,
    min_area_frac: float = 0.0005,
    logits: bool = False,
) -> SaliencyResult:
    """Model output -> SaliencyResult at frame_size (H, W).

    threshold None (or 0) skips the mask, box and depth: only the probability map is kept.
    Regions smaller than min_area_frac of the frame are not reported as objects (speckle).
    depth_m: float metres (0 = no data) on the frame grid, or None when the depth is not metric.
    """
    prob = postprocess_saliency(pred, frame_size, logits=logits)
    if not threshold:
        return SaliencyResult(prob)
    if not 0.0 < threshold < 1.0:
        raise InputError(f"saliency threshold {threshold} is outside (0, 1); use e.g. 0.5 (or 0 to turn the mask off)")
    mask_u8 = (prob >= np.float32(threshold)).view(np.uint8)
    result = SaliencyResult(prob, mask=mask_u8.view(bool), threshold=float(threshold))
    min_area_px = max(1, int(round(min_area_frac * prob.size)))
    # Every region lies inside the bounding rectangle of the mask, so the components are found there:
    # the same regions, boxes and means as on the whole frame, for the cost of the salient part.
    x, y, w, h = cv2.boundingRect(mask_u8)
    if w == 0 or h == 0:
        return result
    found = largest_region(mask_u8[y : y + h, x : x + w], min_area_px)
    if found is None:
        return result
    region, (x0, y0, x1, y1), area = found
    x0, y0, x1, y1 = x0 + x, y0 + y, x1 + x, y1 + y  # from the rectangle's grid to the frame's
    result.box = (x0, y0, x1, y1)
    result.area_frac = area / prob.size
    result.score = float(cv2.mean(prob[y0:y1, x0:x1], mask=region)[0])
    if depth_m is not None:
        if depth_m.shape != prob.shape:
            # Depth of another resolution of the same view: to the mask grid, without blending holes.
            depth_m = cv2.resize(depth_m, (prob.shape[1], prob.shape[0]), interpolation=cv2.INTER_NEAREST)
        result.depth_m = mean_depth_under(region, depth_m[y0:y1, x0:x1])
    return result


def mask_iou(mask: np.ndarray, ground_truth: np.ndarray) -> float:
    """Intersection over union of a predicted mask and a ground-truth mask (GT > 127 is salient).

    Two empty masks agree perfectly (1.0).
    """
    pred = np.asarray(mask).astype(bool, copy=False)
    gt = np.asarray(ground_truth) > 127 if np.asarray(ground_truth).dtype != bool else np.asarray(ground_truth)
    if pred.shape != gt.shape:
        raise InputError(f"mask {pred.shape} and ground truth {gt.shape} differ in size; compare them at one size")
    union = int(np.count_nonzero(pred | gt))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(pred & gt)) / union


class SaliencyModel:
    """One saliency artifact on one backend: frame -> model inputs -> saliency map -> SaliencyResult.

    Everything model-specific comes from the artifact's spec through edge_mm.saliency_io: which
    input takes colour and which depth (none for an RGB-only model), layout, size, normalisation,
    depth range and polarity, which output is the map and whether it holds logits. So an imported
    model (python -m export.import_onnx) runs exactly like edge-mm's own CDINet export.
    """

    def __init__(self, backend: Any, threshold: Optional[float] = 0.5, min_area_frac: float = 0.0005) -> None:
        from edge_mm.errors import UsageError
        from edge_mm.saliency_io import SaliencyIO
        from edge_mm.spec import SALIENCY_KINDS

        spec = backend.spec
        if spec.kind not in SALIENCY_KINDS:
            raise UsageError(
                f"edge-mm-run shows saliency ({', '.join(SALIENCY_KINDS)} artifacts); {spec.name} is a {spec.kind} "
                "artifact: use it with edge-mm-index, or point --model at a saliency artifact"
            )
        if threshold and not 0.0 < threshold < 1.0:
            raise UsageError(f"--threshold {threshold} must be in (0, 1), or 0 to turn the mask and box off")
        self.backend = backend
        self.spec = spec
        self.io = SaliencyIO.from_spec(spec)
        self.preprocess_spec = self.io.pre
        self.threshold = threshold
        self.min_area_frac = min_area_frac
        self.output_name = self.io.output.name
        self.logits = self.io.logits

    def preprocess(self, color: np.ndarray, depth_m: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
        return self.io.feeds([color], [depth_m])

    def infer(self, feeds: Dict[str, np.ndarray]) -> np.ndarray:
        """Feeds -> the (1, h, w) map (logits or probabilities, see self.logits)."""
        return self.io.maps(self.backend.infer(feeds))

    def postprocess(
        self, pred: np.ndarray, frame_size: Tuple[int, int], depth_m: Optional[np.ndarray]
    ) -> SaliencyResult:
        return analyse_saliency(pred, frame_size, depth_m, self.threshold, self.min_area_frac, logits=self.logits)

    def warm_up(self, runs: int = 2) -> None:
        """Run the model on blank inputs so the first real frame is not slowed by lazy initialisation."""
        feeds = self.io.blank_feeds()
        for _ in range(runs):
            self.infer(feeds)
