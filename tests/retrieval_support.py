"""CLIP artifacts for the retrieval CLI and CLIP-stage tests (tests/test_retrieval_cli.py, test_clip_stage.py).

- `tiny_clip_artifact`: a real CLIP artifact (image/ + text/) exported by `python -m export.build_engine
  --model clip:custom` from a tiny random CLIP (ViT 2x64 at 32 px, text 2x64, the real 49408
  vocabulary), fp32 only; seconds to build. Different seeds give different models (weights sha256).
- `demo_clip_artifact`: the same exported from the demo weights edge_mm/weights/clip-demo.pt (a
  small CLIP trained on captioned synthetic scenes), or None while those weights do not exist.

Artifacts are built once per test session under pytest's base temp folder and reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO_CLIP_WEIGHTS = ROOT / "edge_mm" / "weights" / "clip-demo.pt"
TINY = dict(
    embed_dim=32,
    image_resolution=32,
    vision_layers=2,
    vision_width=64,
    vision_patch_size=16,
    context_length=77,
    vocab_size=49408,
    transformer_width=64,
    transformer_heads=1,
    transformer_layers=2,
)


def _export(args: List[str]) -> None:
    from export.build_engine import main

    code = main(
        args + ["--no-engine", "--precision", "fp32", "--calib-count", "2", "--eval-count", "2", "--threads", "2"]
    )
    if code != 0:
        raise RuntimeError(f"export.build_engine {' '.join(args)} failed with exit code {code}")


def tiny_clip_artifact(base: Path, seed: int = 0) -> Path:
    out = Path(base) / f"clip-tiny-s{seed}"
    if (out / "image" / "model.onnx").is_file():
        return out
    import torch

    from edge_mm.clip.model import CLIP

    torch.manual_seed(seed)
    weights = Path(base) / f"clip-tiny-s{seed}.pt"
    torch.save(CLIP(**TINY).eval().state_dict(), weights)
    _export(["--model", "clip:custom", "--weights", str(weights), "--out", str(out)])
    return out


def demo_clip_artifact(base: Path) -> Optional[Path]:
    if not DEMO_CLIP_WEIGHTS.is_file():
        return None
    out = Path(base) / "clip-demo"
    if not (out / "image" / "model.onnx").is_file():
        _export(["--model", "clip-demo", "--out", str(out)])
    return out


def write_scene_images(folder: Path, count: int, seed: int = 7, size=(96, 128)) -> List[Path]:
    """Synthetic scenes as PNG files scene_000.png ...; returns the paths."""
    import cv2

    from edge_mm.synthetic import SceneGenerator

    folder.mkdir(parents=True, exist_ok=True)
    generator = SceneGenerator(size, seed=seed)
    paths = []
    for i in range(count):
        path = folder / f"scene_{i:03d}.png"
        cv2.imwrite(str(path), generator.generate(i).bgr)
        paths.append(path)
    return paths


def write_video(path: Path, frames: int, fps: float, size=(64, 80)) -> Path:
    """An MJPEG .avi whose frame k is a flat grey of value 8k (frames tell themselves apart)."""
    import cv2

    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write MJPEG video here"
    for k in range(frames):
        frame = np.full((h, w, 3), (8 * k) % 256, np.uint8)
        frame[: h // 4, : w // 4] = (0, 0, 255)
        writer.write(frame)
    writer.release()
    return path
