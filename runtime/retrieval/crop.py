"""The salient object's crop that CLIP sees: a padded square around the saliency box (torch-free).

The demo CLIP was trained on exactly this view (edge_mm.train.clip_data.crop_box: a square centred
on the box, its side the box's longer side x (1 + 2 pad), the border replicated where the square
leaves the frame), so the runtime cuts crops the same way; tests/test_clip_stage.py checks the two
agree pixel for pixel. A square keeps all of the object inside CLIP's centre crop.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_mm.errors import InputError

DEFAULT_PAD = 0.25  # the crop extends this fraction of the box's longer side beyond each edge

Box = Tuple[int, int, int, int]


def clamp_box(box: Sequence[float], size: Tuple[int, int]) -> Optional[Box]:
    """(x0, y0, x1, y1) rounded and clipped to an (H, W) frame; None when nothing is left."""
    height, width = size
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
    y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def padded_square_crop(bgr: np.ndarray, box: Sequence[float], pad: float = DEFAULT_PAD) -> np.ndarray:
    """A square crop (H = W) centred on `box`, side = longer box side x (1 + 2 pad), border replicated."""
    if not pad >= 0 or not math.isfinite(pad):
        raise InputError(f"crop padding {pad!r} must be a finite number >= 0, e.g. 0.25")
    if bgr.ndim != 3 or bgr.shape[0] < 1 or bgr.shape[1] < 1:
        raise InputError(f"crop needs an (H, W, C) image, got shape {tuple(bgr.shape)}")
    clipped = clamp_box(box, bgr.shape[:2])
    if clipped is None:
        raise InputError(f"box {tuple(box)} is empty or outside the {bgr.shape[1]}x{bgr.shape[0]} frame")
    x0, y0, x1, y1 = clipped
    side = max(int(math.ceil(max(x1 - x0, y1 - y0) * (1 + 2 * pad))), 1)
    left = (x0 + x1 - side) // 2
    top = (y0 + y1 - side) // 2
    height, width = bgr.shape[:2]
    inside = bgr[max(top, 0) : min(top + side, height), max(left, 0) : min(left + side, width)]
    borders = (max(-top, 0), max(top + side - height, 0), max(-left, 0), max(left + side - width, 0))
    if any(borders):
        inside = cv2.copyMakeBorder(inside, *borders, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(inside)
