#!/usr/bin/env python3
"""PyTorch on a CUDA GPU: CDINet and CLIP ViT-B/32 latency in FP32 and FP16, and FP16 drift.

Random weights (the numbers are about speed and numerics, not accuracy). Side by side in one run:
fp32 eager vs fp16 eager (`.half()`, the precision a TensorRT FP16 engine computes in), batch 1
and 8, timed with CUDA events after warm-up. Prints a table with ratios; `--json` writes it.

    python bench/gpu_torch.py --json gpu_torch.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from edge_mm.cdinet.model import build as build_cdinet  # noqa: E402
from edge_mm.clip.model import CLIP  # noqa: E402
from export.models import CLIP_ARCHITECTURES  # noqa: E402


def cuda_ms(fn, warmup: int = 5, runs: int = 30) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def drift(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.float().flatten(1), b.float().flatten(1)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).min().item()
    return {"max_abs": (a - b).abs().max().item(), "cosine_min": cos}


@torch.inference_mode()
def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 1
    device = torch.device("cuda")
    torch.manual_seed(0)
    rows = []

    def measure(name, model, make_inputs, run, post=lambda t: t):
        model32 = model.to(device).eval()
        for batch in (1, 8):
            inputs = make_inputs(batch)
            ms32 = cuda_ms(lambda: run(model32, inputs))
            ref = post(run(model32, inputs))
            model16 = model32.half()
            inputs16 = [t.half() if t.is_floating_point() else t for t in inputs]
            ms16 = cuda_ms(lambda: run(model16, inputs16))
            out16 = post(run(model16, inputs16))
            model32 = model16.float()
            row = {
                "model": name,
                "batch": batch,
                "fp32_ms": ms32,
                "fp16_ms": ms16,
                "speedup": ms32 / ms16,
                "fp16_vs_fp32": drift(ref, out16),
            }
            rows.append(row)
            print(
                f"{name:22s} b{batch}: fp32 {ms32:7.2f} ms  fp16 {ms16:7.2f} ms  x{ms32 / ms16:4.2f}  "
                f"max|d| {row['fp16_vs_fp32']['max_abs']:.2e}  cos {row['fp16_vs_fp32']['cosine_min']:.6f}",
                flush=True,
            )

    for variant in ("cdinet", "cdinet-s"):
        measure(
            f"{variant} 256x256",
            build_cdinet(variant),
            lambda n: [torch.randn(n, 3, 256, 256, device=device), torch.randn(n, 1, 256, 256, device=device)],
            lambda m, x: m(*x),
            post=torch.sigmoid,
        )
    clip = CLIP(**CLIP_ARCHITECTURES["ViT-B/32"])
    measure(
        "clip ViT-B/32 image",
        clip,
        lambda n: [torch.randn(n, 3, 224, 224, device=device)],
        lambda m, x: m.encode_image(*x),
    )
    ids = lambda n: [
        torch.cat(
            [
                torch.full((n, 1), 49406),
                torch.randint(1, 49000, (n, 10)),
                torch.full((n, 1), 49407),
                torch.zeros(n, 65, dtype=torch.long),
            ],
            1,
        ).to(device)
    ]  # noqa: E731
    measure("clip ViT-B/32 text", clip, ids, lambda m, x: m.encode_text(*x))

    result = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
