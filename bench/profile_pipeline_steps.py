"""Where the pipeline's own CPU goes: each step of one frame, timed as thread CPU per call.

    python bench/profile_pipeline_steps.py [--size 640x480] [--calls 100] [--keep-freed-memory]

The steps the pipeline runs around the model for a 640x480 synthetic frame and a 128x128 model
output: preprocessing (colour resize, depth normalisation, depth resize), the salient-region
analysis, the heat-map blend, the text panel, the box, and one mp4v frame encoded. Thread CPU time
(time.thread_time) rather than wall time, so other jobs on a shared machine disturb it less; one
OpenCV thread. It uses only functions that exist before and after the changes of issue 12, so
`PYTHONPATH=<other checkout> python bench/profile_pipeline_steps.py` profiles that checkout (the
README's before/after table). --keep-freed-memory calls runtime.memory.keep_freed_memory() first, as edge-mm-run does.
Printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

try:  # PYTHONPATH=<checkout> profiles that checkout; otherwise this one
    import runtime  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cpu_ms(fn: Callable[[], object], calls: int) -> float:
    fn()  # warm
    start = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - start) / calls * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="640x480", help="frame WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--calls", type=int, default=100, help="calls per step (default 100)")
    parser.add_argument("--keep-freed-memory", action="store_true", help="as edge-mm-run does (runtime.memory)")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    cv2.setNumThreads(1)
    if args.keep_freed_memory:
        from runtime.memory import keep_freed_memory

        print(f"keep_freed_memory: {keep_freed_memory()}")

    from edge_mm.rgbd import RgbdPreprocess, depth_to_unit, preprocess_depth, preprocess_rgb
    from runtime.overlay import blend_heatmap, draw_box, draw_text_panel
    from runtime.saliency import analyse_saliency
    from runtime.sources import open_source

    with open_source("synthetic:0", size=(h, w), count=2) as source:
        frame = list(source)[1]
    spec = RgbdPreprocess(size=(128, 128), depth_range_m=(0.2, 6.0), quantize_depth_8bit=True)
    # A model-sized map that follows the scene's object, as a trained model's does.
    pred = cv2.resize((frame.meta["mask"] > 127).astype(np.float32), (128, 128), interpolation=cv2.INTER_AREA)
    pred = pred[None, None]
    result = analyse_saliency(pred, (h, w), frame.depth_m)
    unit = depth_to_unit(frame.depth_m, spec)
    image = frame.color.copy()
    lines = ["30.0 FPS | latency p50 40 / p95 50 ms", "ms: cap 0.1 | pre 2.9 | infer 20.1 | post 1.2", "ort-cpu int8"]
    with tempfile.TemporaryDirectory() as tmp:
        writer = cv2.VideoWriter(str(Path(tmp) / "x.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
        steps = {
            "preprocess: colour (antialiased resize, normalise)": lambda: preprocess_rgb(frame.color, spec),
            "preprocess: depth to unit range": lambda: depth_to_unit(frame.depth_m, spec),
            "preprocess: depth resize": lambda: preprocess_depth(unit, spec),
            "postprocess: map to frame size, region, score, distance": lambda: analyse_saliency(
                pred, (h, w), frame.depth_m
            ),
            "render: heat-map blend": lambda: blend_heatmap(frame.color, result.prob),
            "render: text panel (3 lines)": lambda: draw_text_panel(image, lines),
            "render: box and label": lambda: draw_box(image, result),
            "output: one mp4v frame": lambda: writer.write(image),
        }
        times = {name: cpu_ms(fn, args.calls) for name, fn in steps.items()}
        writer.release()
    for name, ms in times.items():
        print(f"{name:<58} {ms:6.2f} ms")
    print(f"{'total per frame':<58} {sum(times.values()):6.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
