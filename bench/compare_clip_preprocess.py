"""CLIP preprocessing: edge_mm (numpy, Pillow's filter) vs open_clip's PIL transform vs plain OpenCV.

    python bench/compare_clip_preprocess.py [--json bench/results/clip_preprocess.json]

On 20 synthetic images (gradients, noise, shapes, stripes near Nyquist, multi-scale textures, text;
sizes from 37x300 to 1500x2000, up- and down-scaling, landscape and portrait) it reports, per method,
the max / mean absolute difference of the (3, 224, 224) tensors from open_clip's
`image_transform(224, is_train=False)`, the minimum cosine between ViT-B-32-quickgelu (random
weights) image embeddings of the two inputs, and the time per image. The OpenCV variants are the
candidates we rejected: cv2.INTER_CUBIC (no antialiasing, a = -0.75), cv2.INTER_AREA, and
INTER_AREA down to twice the size followed by INTER_CUBIC.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_mm.atomic import write_json  # noqa: E402
from edge_mm.cli_support import run_cli  # noqa: E402
from edge_mm.clip.preprocess import (  # noqa: E402
    OPENAI_MEAN,
    OPENAI_STD,
    ClipPreprocess,
    center_crop_offset,
    preprocess_image,
    resized_size,
)

SIZES = [
    (480, 640),
    (720, 1280),
    (1080, 1920),
    (640, 480),
    (1000, 333),
    (333, 1000),
    (150, 100),
    (37, 300),
    (229, 224),
    (224, 231),
    (224, 224),
    (90, 90),
    (300, 300),
    (2000, 1500),
    (64, 64),
    (512, 384),
    (800, 200),
    (200, 800),
    (100, 1200),
    (250, 250),
]
KINDS = ["gradient", "noise", "shapes", "stripes", "texture"]


def synthetic_image(kind: str, height: int, width: int, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "gradient":
        image = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), 128 + 0 * x], -1)
    elif kind == "noise":
        image = rng.uniform(0, 255, (height, width, 3))
    elif kind == "shapes":
        image = np.full((height, width, 3), 235.0)
        canvas = image.astype(np.uint8)
        for _ in range(12):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.circle(canvas, centre, int(rng.integers(2, max(min(height, width) // 3, 3))), colour, -1)
            cv2.rectangle(canvas, centre, (int(rng.integers(0, width)), int(rng.integers(0, height))), colour, 2)
        cv2.putText(
            canvas, "CLIP 2021", (2, height // 2), cv2.FONT_HERSHEY_SIMPLEX, max(width / 400, 0.3), (0, 0, 0), 1
        )
        return canvas
    elif kind == "stripes":
        image = np.stack(
            [127 + 127 * np.sin(x * 2.9), 127 + 127 * np.sin(y * 2.1), 127 + 127 * np.sin((x + y) / 3)], -1
        )
    else:  # multi-scale smoothed noise, roughly the spectrum of natural images
        image = np.zeros((height, width, 3), np.float32)
        for octave in range(6):
            step = 2**octave
            small = rng.normal(0, 1, (max(height // step, 1), max(width // step, 1), 3)).astype(np.float32)
            image += step * cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        image = 128 + 100 * image / (np.abs(image).max() + 1e-6)
    return np.clip(image, 0, 255).astype(np.uint8)


def _normalize(rgb: np.ndarray) -> np.ndarray:
    chw = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return (chw - np.float32(OPENAI_MEAN)[:, None, None]) / np.float32(OPENAI_STD)[:, None, None]


def opencv_variant(mode: str, n: int = 224) -> Callable[[np.ndarray], np.ndarray]:
    import cv2

    def run(bgr: np.ndarray) -> np.ndarray:
        height, width = bgr.shape[:2]
        out_h, out_w = resized_size(height, width, n)
        if mode == "cubic":
            resized = cv2.resize(bgr, (out_w, out_h), interpolation=cv2.INTER_CUBIC)
        elif mode == "area":
            resized = cv2.resize(bgr, (out_w, out_h), interpolation=cv2.INTER_AREA)
        else:  # area to 2x the target, then cubic
            if height > 2 * out_h:
                bgr = cv2.resize(bgr, (2 * out_w, 2 * out_h), interpolation=cv2.INTER_AREA)
            resized = cv2.resize(bgr, (out_w, out_h), interpolation=cv2.INTER_CUBIC)
        top, left = center_crop_offset(out_h, n), center_crop_offset(out_w, n)
        return _normalize(resized[top : top + n, left : left + n, ::-1])

    return run


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "clip_preprocess.json")
    args = parser.parse_args(argv)

    import open_clip
    import PIL
    import torch
    from PIL import Image

    torch.set_num_threads(2)
    torch.manual_seed(0)
    transform = open_clip.image_transform(224, is_train=False)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    spec = ClipPreprocess()
    methods: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "edge_mm": lambda bgr: preprocess_image(bgr, spec),
        "cv2_cubic": opencv_variant("cubic"),
        "cv2_area": opencv_variant("area"),
        "cv2_area2x_cubic": opencv_variant("area2x_cubic"),
    }
    per_image: List[Dict] = []
    timings: Dict[str, List[float]] = {name: [] for name in list(methods) + ["open_clip_pil"]}
    for i, (height, width) in enumerate(SIZES):
        bgr = synthetic_image(KINDS[i % len(KINDS)], height, width, seed=i)
        start = time.perf_counter()
        reference = transform(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))).numpy()
        timings["open_clip_pil"].append(time.perf_counter() - start)
        outputs = {}
        for name, fn in methods.items():
            start = time.perf_counter()
            outputs[name] = fn(bgr)
            timings[name].append(time.perf_counter() - start)
        with torch.no_grad():
            batch = torch.from_numpy(np.stack([reference] + list(outputs.values())))
            embeds = torch.nn.functional.normalize(model.encode_image(batch), dim=-1)
        row = {"image": i, "kind": KINDS[i % len(KINDS)], "height": height, "width": width}
        for j, (name, out) in enumerate(outputs.items()):
            diff = np.abs(out - reference)
            row[name] = {
                "max_abs": float(diff.max()),
                "mean_abs": float(diff.mean()),
                "cosine": float(embeds[0] @ embeds[j + 1]),
            }
        per_image.append(row)
        print(
            f"{i:2d} {row['kind']:<9} {height:>4}x{width:<4} "
            + "  ".join(
                f"{name}: max {row[name]['max_abs']:.4f} mean {row[name]['mean_abs']:.5f} cos {row[name]['cosine']:.6f}"
                for name in ("edge_mm", "cv2_cubic")
            )
        )

    summary = {}
    print(f"\n{'method':<18} {'max abs':>9} {'mean abs':>10} {'min cosine':>11} {'ms/image':>9}")
    for name in methods:
        summary[name] = {
            "max_abs": max(r[name]["max_abs"] for r in per_image),
            "mean_abs": float(np.mean([r[name]["mean_abs"] for r in per_image])),
            "min_cosine": min(r[name]["cosine"] for r in per_image),
            "ms_per_image": 1000 * float(np.mean(timings[name])),
        }
        s = summary[name]
        print(
            f"{name:<18} {s['max_abs']:>9.4f} {s['mean_abs']:>10.6f} {s['min_cosine']:>11.7f} {s['ms_per_image']:>9.2f}"
        )
    summary["open_clip_pil"] = {"ms_per_image": 1000 * float(np.mean(timings["open_clip_pil"]))}
    print(f"{'open_clip_pil':<18} {'':>9} {'':>10} {'':>11} {summary['open_clip_pil']['ms_per_image']:>9.2f}")
    report = {"summary": summary, "images": per_image, "pillow": PIL.__version__, "open_clip": open_clip.__version__}
    write_json(args.json, report, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
