"""Small JPEG thumbnails of indexed crops, stored with their rows for a results page (torch-free, OpenCV).

A thumbnail is the crop scaled so its longest side is at most THUMBNAIL_SIDE px (never enlarged),
JPEG-encoded; if it still exceeds the store's byte cap the quality steps down until it fits.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_mm.errors import InputError
from runtime.retrieval.store import MAX_THUMBNAIL_BYTES

THUMBNAIL_SIDE = 128
_QUALITIES = (85, 70, 50, 30)


def make_thumbnail(image_bgr: np.ndarray, side: int = THUMBNAIL_SIDE, max_bytes: int = MAX_THUMBNAIL_BYTES) -> bytes:
    """JPEG bytes of `image_bgr` (H, W, 3 uint8, or H, W gray) with the longest side <= `side`."""
    image = np.asarray(image_bgr)
    if image.ndim not in (2, 3) or image.size == 0 or image.dtype != np.uint8:
        raise InputError(f"a thumbnail needs a non-empty uint8 image, got shape {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    for quality in _QUALITIES:
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(data) <= max_bytes:
            return data.tobytes()
    raise InputError(f"cannot fit a {side} px thumbnail in {max_bytes} bytes; pass a smaller side")
