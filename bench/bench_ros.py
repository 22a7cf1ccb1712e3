"""ROS bags in and ROS 2 messages out, per 640x480 frame, side by side in one process.

    python bench/bench_ros.py [--frames 60] [--repeat 3]

Reading (frames/s through the runtime's Source interface, colour + depth converted):
- rosbag2 sqlite3, rosbag2 mcap and rosbag1 bags of the same synthetic scenes (rgb8 + 16UC1,
  realsense-ros topics), against the synthetic source generating those scenes.
Writing (results/s through the sink interface, same FrameResults):
- --out run.mcap (raw bgr8 image), run.mcap with a JPEG CompressedImage, run.rosbag2, against the
  mp4 VideoSink.
Each row keeps the best of --repeat rounds; ratios are against the first row of each table.
Torch-free.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from ros_support import synthetic_frames, write_bag  # noqa: E402

from runtime.pipeline import FrameResult  # noqa: E402
from runtime.saliency import analyse_saliency  # noqa: E402
from runtime.sinks.mcap import RosResultsSink  # noqa: E402
from runtime.sinks.video import VideoSink  # noqa: E402
from runtime.sources import open_source  # noqa: E402


def best_rate(run, count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        done = run()
        best = min(best, time.perf_counter() - start)
        assert done == count, (done, count)
    return count / best


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n = args.frames
    frames = synthetic_frames(n, size=(480, 640), seed=1)
    print(f"{platform.processor() or platform.machine()}, {n} frames of 640x480, best of {args.repeat}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bags = {
            s: write_bag(tmp / ("b.bag" if s == "ros1" else f"b-{s}"), frames, s) for s in ("sqlite3", "mcap", "ros1")
        }

        def read(uri, **options):
            def run():
                with open_source(uri, **options) as source:
                    return sum(1 for _ in source)

            return run

        rows = [("synthetic source (generates the scenes)", read("synthetic:1", size=(480, 640), count=n))]
        rows += [(f"rosbag {s}", read(f"rosbag:{p}")) for s, p in bags.items()]
        print("\nread          frames/s   x first row")
        base = None
        for name, run in rows:
            rate = best_rate(run, n, args.repeat)
            base = base or rate
            print(f"{name:44s} {rate:8.1f}   {rate / base:5.2f}")

        with open_source(f"rosbag:{bags['mcap']}") as source:
            source_frames = list(source)
        rng = np.random.default_rng(0)
        results = []
        for frame in source_frames:
            pred = rng.random((1, 1, 64, 64), dtype=np.float32)
            saliency = analyse_saliency(pred, frame.size, frame.depth_m)
            results.append(FrameResult(frame, values={"saliency": saliency}, image=frame.color.copy()))

        def write(make):
            def run():
                sink = make()
                for result in results:
                    sink.write(result)
                sink.close()
                return len(results)

            return run

        counter = iter(range(10**6))
        sinks = [
            ("mp4 video (VideoSink)", lambda: VideoSink(tmp / f"v{next(counter)}.mp4", fps=30)),
            ("run.mcap, raw bgr8 image", lambda: RosResultsSink(tmp / f"r{next(counter)}.mcap")),
            ("run.mcap, JPEG CompressedImage", lambda: RosResultsSink(tmp / f"j{next(counter)}.mcap", jpeg=True)),
            ("run.rosbag2 (metadata.yaml + MCAP)", lambda: RosResultsSink(tmp / f"f{next(counter)}.rosbag2")),
        ]
        print("\nwrite         results/s  x first row  KB/result  (image, mask, map, depth, detections)")
        base = None
        for name, make in sinks:
            before = set(tmp.iterdir())
            rate = best_rate(write(make), len(results), args.repeat)
            base = base or rate
            (newest, *_) = sorted(set(tmp.iterdir()) - before, key=lambda p: p.stat().st_mtime, reverse=True)
            files = [newest] if newest.is_file() else list(newest.iterdir())
            size_kb = sum(f.stat().st_size for f in files) / len(results) / 1024
            print(f"{name:44s} {rate:8.1f}   {rate / base:5.2f}   {size_kb:9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
