"""`synthetic[:SEED]`: edge_mm.synthetic's RGB-D scenes played as a camera, with ground truth.

Each frame carries the scene's saliency mask and object list in meta["mask"] / meta["objects"],
so a whole pipeline can be scored (IoU, MAE) without a camera or a dataset.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from edge_mm.errors import UsageError

from .base import Frame, Source


class SyntheticSource(Source):
    """Frames generator.generate(0), generate(1), ... of a seeded SceneGenerator.

    size:  (H, W) of the frames (default 480x640 like the camera).
    count: stop after this many frames (None: never).
    fps:   pace frames like a camera (and make the source live); None = as fast as generated.
    generator_options: keyword arguments for SceneGenerator (max_objects, depth_noise, holes, clutter, blur).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        size: Tuple[int, int] = (480, 640),
        count: Optional[int] = None,
        fps: Optional[float] = None,
        generator_options: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__()
        from edge_mm.synthetic import SceneGenerator

        if count is not None and int(count) < 0:
            raise UsageError(f"count must be >= 0, got {count}")
        if fps is not None and fps <= 0:
            raise UsageError(f"fps must be positive, got {fps}")
        self.seed = int(seed)
        self.count = None if count is None else int(count)
        self.fps = fps
        self.live = fps is not None
        try:
            self.generator = SceneGenerator(size=tuple(size), seed=self.seed, **dict(generator_options or {}))
        except TypeError as exc:  # an unknown generator option
            raise UsageError(f"bad synthetic generator option ({exc}); see edge_mm.synthetic.SceneGenerator") from None
        self._next_due = 0.0

    @property
    def name(self) -> str:
        return f"synthetic:{self.seed}"

    def _open(self) -> None:
        self._next_due = time.perf_counter()

    def _close(self) -> None:
        pass

    def _read(self) -> Optional[Frame]:
        index = self._next_index
        if self.count is not None and index >= self.count:
            return None
        if self.fps is not None:
            self._next_due += 1.0 / self.fps
            if not self._sleep_until(self._next_due):
                return None  # interrupted: the capture thread is stopping
        scene = self.generator.generate(index)
        capture_time = time.perf_counter()
        meta = {
            "source": "synthetic",
            "seed": self.seed,
            "scene": scene.name,
            "mask": scene.mask,
            "objects": scene.objects,
            "depth_scale": 0.001,  # the generator quantises depth to millimetres like z16
        }
        period_ms = 1000.0 / (self.fps or 30.0)
        return Frame(
            np.ascontiguousarray(scene.bgr),
            scene.depth_m.astype(np.float32, copy=False),
            index * period_ms,
            capture_time,
            meta=meta,
        )
