"""`folder:DIR`: RGB + depth image pairs in the dataset layout, played as a camera.

DIR/RGB/<name>.jpg|png, DIR/depth/<name>.png and optionally DIR/GT/<name>.png, paired by name with
edge_mm.datasets (a missing or extra file is a DatasetError that lists them).
- 16-bit depth PNGs hold millimetres (0 = no data): depth_m = value * depth_scale_m (0.001).
- Float TIFF depth holds metres.
- 8-bit depth images hold relative depth (the RGB-D SOD benchmark sets). They carry no metric
  scale and no hole marker, so depth_m holds a stand-in that grows with distance, in (0, 1], and
  meta["depth_kind"] = "relative" with the original image in meta["depth_png"] for consumers
  that want the dataset convention (edge_mm.rgbd.depth_png_to_unit).
With a GT/ folder, meta["mask"] holds the ground truth (like the synthetic source).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional

import cv2
import numpy as np

from edge_mm.datasets import DEPTH_DIR, GT_DIR, RGB_DIR, RgbdFolderDataset, depth_to_single_channel, read_image
from edge_mm.errors import SourceError, UsageError

from .base import Frame, Source


class FolderSource(Source):
    """Frames from DIR/RGB + DIR/depth (+ DIR/GT), in name order.

    depth_scale_m:      metres per unit of 16-bit depth images (0.001: millimetres).
    png_near_is_bright: polarity of 8-bit relative depth images (the SOD datasets: near is bright).
    loop:               start over at the end.
    fps:                pace frames like a camera (and make the source live); None = as fast as read.
    """

    def __init__(
        self,
        root: str,
        *,
        depth_scale_m: float = 0.001,
        png_near_is_bright: bool = True,
        loop: bool = False,
        fps: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        if depth_scale_m <= 0:
            raise UsageError(f"depth_scale_m must be positive, got {depth_scale_m}")
        if fps is not None and fps <= 0:
            raise UsageError(f"fps must be positive, got {fps}")
        self.depth_scale_m = float(depth_scale_m)
        self.png_near_is_bright = bool(png_near_is_bright)
        self.loop = bool(loop)
        self.fps = fps
        self.live = fps is not None
        self.dataset: Optional[RgbdFolderDataset] = None
        self._position = 0
        self._next_due = 0.0

    @property
    def name(self) -> str:
        return f"folder:{self.root}"

    def _open(self) -> None:
        if not self.root.is_dir():
            raise SourceError(f"folder {self.root} does not exist; give a folder with RGB/ and depth/ inside")
        has_gt = any(p.is_dir() and p.name.lower() == GT_DIR.lower() for p in self.root.iterdir())
        self.dataset = RgbdFolderDataset(self.root, with_gt=has_gt)  # pairs by name, or DatasetError
        self._position = 0
        self._next_due = time.perf_counter()

    def _close(self) -> None:
        self.dataset = None

    def _read(self) -> Optional[Frame]:
        if self._position >= len(self.dataset):
            if not self.loop:
                return None
            self._position = 0
        paths = self.dataset.paths(self._position)
        self._position += 1
        if self.fps is not None:
            self._next_due += 1.0 / self.fps
            if not self._sleep_until(self._next_due):
                return None  # interrupted: the capture thread is stopping
        bgr = read_image(paths[RGB_DIR], cv2.IMREAD_COLOR)
        raw = depth_to_single_channel(read_image(paths[DEPTH_DIR], cv2.IMREAD_UNCHANGED), paths[DEPTH_DIR])
        capture_time = time.perf_counter()
        meta: Dict[str, Any] = {"source": "folder", "name": paths[RGB_DIR].stem, "rgb_path": str(paths[RGB_DIR])}
        if raw.dtype == np.uint16:
            depth_m = raw.astype(np.float32) * np.float32(self.depth_scale_m)
            meta.update(depth_kind="metric", depth_scale=self.depth_scale_m)
        elif raw.dtype.kind == "f":
            depth_m = np.nan_to_num(raw.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0).clip(0, None)
            meta.update(depth_kind="metric")
        elif raw.dtype == np.uint8:
            far_is_high = 255 - raw if self.png_near_is_bright else raw
            depth_m = (far_is_high.astype(np.float32) + 1.0) / np.float32(256.0)  # (0, 1]: nothing reads as a hole
            meta.update(depth_kind="relative", depth_png=raw, png_near_is_bright=self.png_near_is_bright)
        else:
            raise SourceError(f"depth image {paths[DEPTH_DIR]} is {raw.dtype}; use 8/16-bit PNG or float TIFF")
        if depth_m.shape != bgr.shape[:2]:
            # The same view at another resolution: nearest keeps holes as holes.
            depth_m = cv2.resize(depth_m, (bgr.shape[1], bgr.shape[0]), interpolation=cv2.INTER_NEAREST)
        if GT_DIR in paths:
            meta["mask"] = read_image(paths[GT_DIR], cv2.IMREAD_GRAYSCALE)
        period_ms = 1000.0 / (self.fps or 30.0)
        meta["timestamp_kind"] = "nominal"  # image files carry no capture time: derived from the index
        return Frame(np.ascontiguousarray(bgr), depth_m, self._next_index * period_ms, capture_time, meta=meta)
