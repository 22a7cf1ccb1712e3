"""Synthetic RGB-D scenes and RGB-D preprocessing throughput on one core.

    python bench/bench_synthetic.py [--count 300] [--repeat 3] [--json bench/results/synthetic.json]

Rows, side by side in one run (OpenCV limited to one thread):
- generate 256x256: SceneGenerator.generate alone (the training/calibration data source);
- generate + as_sample 256: a scene all the way to model inputs through edge_mm.rgbd;
- generate 480x640: the demo camera's frame size;
- preprocess 480x640 -> 256, with and without antialiasing: the runtime's per-frame cost.
Both wall-clock and process CPU time are reported (the CPU figure is steadier on a shared machine);
each row keeps the best of --repeat rounds. Torch-free.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_mm.atomic import write_json  # noqa: E402
from edge_mm.cli_support import run_cli  # noqa: E402
from edge_mm.errors import UsageError  # noqa: E402
from edge_mm.rgbd import RgbdPreprocess, preprocess_rgbd  # noqa: E402
from edge_mm.synthetic import SceneGenerator, as_sample  # noqa: E402


def time_row(name: str, count: int, repeat: int, step: Callable[[int], object]) -> Dict:
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            step(i)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return {
        "case": name,
        "items": count,
        "wall_s": best_wall,
        "cpu_s": best_cpu,
        "items_per_s_wall": count / best_wall,
        "items_per_s_cpu": count / best_cpu,
        "ms_per_item_cpu": 1000 * best_cpu / count,
    }


def run(count: int, repeat: int) -> List[Dict]:
    spec = RgbdPreprocess()
    small = SceneGenerator(size=(256, 256), seed=0)
    camera = SceneGenerator(size=(480, 640), seed=0)
    frames = camera.generate_batch(range(8))
    no_antialias = RgbdPreprocess(antialias=False)
    return [
        time_row("generate 256x256", count, repeat, small.generate),
        time_row("generate + as_sample 256", count, repeat, lambda i: as_sample(small.generate(i), spec)),
        time_row("generate 480x640", max(count // 4, 1), repeat, camera.generate),
        time_row(
            "preprocess 480x640 -> 256 (antialias)",
            count,
            repeat,
            lambda i: preprocess_rgbd(frames[i % 8].bgr, frames[i % 8].depth_m, spec),
        ),
        time_row(
            "preprocess 480x640 -> 256 (no antialias)",
            count,
            repeat,
            lambda i: preprocess_rgbd(frames[i % 8].bgr, frames[i % 8].depth_m, no_antialias),
        ),
    ]


def print_table(rows: List[Dict]) -> None:
    print(f"{'case':<42} {'items/s (cpu)':>14} {'items/s (wall)':>15} {'ms/item (cpu)':>14}")
    for row in rows:
        print(
            f"{row['case']:<42} {row['items_per_s_cpu']:>14.0f} {row['items_per_s_wall']:>15.0f} "
            f"{row['ms_per_item_cpu']:>14.2f}"
        )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="scenes or frames per round")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is kept")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "synthetic.json")
    args = parser.parse_args(argv)
    if args.count < 1 or args.repeat < 1:
        raise UsageError("--count and --repeat must be >= 1")
    cv2.setNumThreads(1)
    rows = run(args.count, args.repeat)
    print_table(rows)
    report = {
        "rows": rows,
        "opencv_threads": 1,
        "opencv": cv2.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }
    write_json(args.json, report, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
