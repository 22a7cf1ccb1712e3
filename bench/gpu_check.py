#!/usr/bin/env python3
"""One-shot check of the cuda-python layer (runtime/backends/trt/cuda.py) on a real GPU.

Needs an NVIDIA GPU and cuda-python (12.x or 13.x); no TensorRT, no torch. It
  1. runs the `gpu` tests: python -m pytest -q -m gpu tests/test_cuda_buffers.py
  2. checks round trips (host -> device -> host) of a few arrays bit for bit,
  3. measures copy bandwidth, pinned vs pageable host memory, both directions (CUDA events),
  4. replays a sequence of small copies eagerly and as one captured CUDA graph, side by side.

    python bench/gpu_check.py [--json results.json] [--skip-pytest]

Exit status 0 only if the tests pass and every round trip is exact. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from runtime.backends.trt import cuda as cb  # noqa: E402

MIB = 1 << 20


def run_gpu_tests() -> Dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_cuda_buffers.py"]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    fallback = lines[-1] if lines else "no output"
    summary = next((ln for ln in reversed(lines) if re.search(r"\d+ (passed|failed|skipped|error)", ln)), fallback)
    return {
        "command": " ".join(cmd[1:]),
        "returncode": out.returncode,
        "summary": str(summary).strip("= "),
        "seconds": round(time.perf_counter() - start, 1),
        "tail": lines[-25:] if out.returncode else [],
    }


def round_trips() -> List[Dict[str, Any]]:
    rng = np.random.default_rng(0)
    arrays = {
        "float32 1x3x512x512": rng.standard_normal((1, 3, 512, 512)).astype(np.float32),
        "float16 8x1x256x256": rng.standard_normal((8, 1, 256, 256)).astype(np.float16),
        "int64 32x77": rng.integers(0, 49408, (32, 77), dtype=np.int64),
        "uint8 720x1280x3": rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8),
        "float32 64 MiB": rng.standard_normal(16 * MIB).astype(np.float32),
    }
    results = []
    for name, array in arrays.items():
        back, ms = cb.round_trip(array)
        results.append({"array": name, "exact": bool(np.array_equal(back, array)), "round_trip_ms": round(ms, 3)})
    return results


def timed_copies(nbytes: int, pinned: bool, to_device: bool, repeats: int) -> float:
    """Median GB/s of one copy of `nbytes` (CUDA events around each copy on one stream)."""
    rt = cb.cudart()
    stream = cb.CudaStream()
    device = cb.DeviceBuffer(nbytes)
    host_pinned = cb.PinnedHostBuffer(nbytes) if pinned else None
    host_pageable = None if pinned else np.ones(nbytes, np.uint8)
    host_ptr = host_pinned.ptr if host_pinned else host_pageable.ctypes.data
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice if to_device else rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    dst, src = (device.ptr, host_ptr) if to_device else (host_ptr, device.ptr)
    start, end = cb.CudaEvent(), cb.CudaEvent()
    rates = []
    try:
        for i in range(repeats + 1):
            start.record(stream)
            cb.check(rt.cudaMemcpyAsync(dst, src, nbytes, kind, stream.raw), "cudaMemcpyAsync")
            end.record(stream)
            end.synchronize()
            if i:  # the first copy warms up
                rates.append(nbytes / (end.elapsed_ms(start) / 1e3) / 1e9)
    finally:
        start.destroy(), end.destroy(), device.free(), stream.destroy()
        if host_pinned:
            host_pinned.free()
    return statistics.median(rates)


def bandwidth(sizes_mib=(1, 16, 64), repeats: int = 10) -> List[Dict[str, Any]]:
    rows = []
    for size in sizes_mib:
        for direction, to_device in (("H2D", True), ("D2H", False)):
            pinned = timed_copies(size * MIB, True, to_device, repeats)
            pageable = timed_copies(size * MIB, False, to_device, repeats)
            rows.append(
                {
                    "size_mib": size,
                    "direction": direction,
                    "pinned_gb_s": round(pinned, 2),
                    "pageable_gb_s": round(pageable, 2),
                    "pinned_speedup": round(pinned / pageable, 2),
                }
            )
    return rows


def graph_vs_eager(copies: int = 8, nbytes: int = 64 * 1024, iterations: int = 300) -> Dict[str, Any]:
    """`copies` H2D+D2H pairs per iteration: enqueued one by one vs one graph launch."""
    stream = cb.CudaStream()
    hosts_in = [cb.PinnedHostBuffer(nbytes) for _ in range(copies)]
    hosts_out = [cb.PinnedHostBuffer(nbytes) for _ in range(copies)]
    devices = [cb.DeviceBuffer(nbytes) for _ in range(copies)]

    def record() -> None:
        for h_in, dev, h_out in zip(hosts_in, devices, hosts_out):
            cb.copy_to_device_async(dev, h_in, nbytes, stream)
            cb.copy_to_host_async(h_out, dev, nbytes, stream)

    def per_iteration_us(step) -> float:
        step()
        stream.synchronize()
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        stream.synchronize()
        return (time.perf_counter() - start) / iterations * 1e6

    graph = cb.CudaGraph.capture(stream, record)
    try:
        for i, h_in in enumerate(hosts_in):
            np.copyto(h_in.view((nbytes,), np.uint8), i + 1)
        eager_us = per_iteration_us(record)
        graph_us = per_iteration_us(lambda: graph.launch(stream))
        for h_out in hosts_out:
            np.copyto(h_out.view((nbytes,), np.uint8), 0)
        for i, h_in in enumerate(hosts_in):
            np.copyto(h_in.view((nbytes,), np.uint8), 200 - i)
        graph.launch(stream)
        stream.synchronize()
        exact = all(bool((h.view((nbytes,), np.uint8) == 200 - i).all()) for i, h in enumerate(hosts_out))
    finally:
        graph.destroy()
        for buffer in hosts_in + hosts_out + devices:
            buffer.free()
        stream.destroy()
    return {
        "copies_per_iteration": 2 * copies,
        "bytes_per_copy": nbytes,
        "eager_us": round(eager_us, 1),
        "graph_us": round(graph_us, 1),
        "graph_speedup": round(eager_us / graph_us, 2),
        "graph_replay_exact": exact,
    }


def versions() -> Dict[str, Any]:
    rt = cb.cudart()
    try:
        import cuda.bindings

        bindings = cuda.bindings.__version__
    except (ImportError, AttributeError):
        bindings = "legacy cuda-python layout"
    return {
        "python": platform.python_version(),
        "cuda_bindings": bindings,
        "module": rt.__name__,
        "driver": cb.check(rt.cudaDriverGetVersion()),
        "runtime": cb.check(rt.cudaRuntimeGetVersion()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--skip-pytest", action="store_true")
    args = parser.parse_args()

    if cb.device_count() == 0:
        print("no CUDA device visible (check nvidia-smi and cuda-python); nothing to check")
        return 2
    cb.set_device(0)
    info = cb.device_info(0)
    results: Dict[str, Any] = {
        "device": {
            "name": info.name,
            "compute_capability": info.compute_capability,
            "memory_gib": round(info.total_memory / 2**30, 1),
        },
        "versions": versions(),
    }
    print(f"device: {info.name} (sm{info.sm}, {results['device']['memory_gib']} GiB); {results['versions']}")

    if not args.skip_pytest:
        results["pytest"] = run_gpu_tests()
        print(
            f"pytest -m gpu tests/test_cuda_buffers.py: {results['pytest']['summary']} ({results['pytest']['seconds']} s)"
        )
        for line in results["pytest"]["tail"]:
            print("   ", line)

    results["round_trips"] = round_trips()
    print("\nround trips (pinned host -> device -> pinned host):")
    for row in results["round_trips"]:
        print(f"  {row['array']:<22} {'exact' if row['exact'] else 'MISMATCH':<9} {row['round_trip_ms']:8.3f} ms")

    results["bandwidth"] = bandwidth()
    print("\ncopy bandwidth, GB/s (median of 10, CUDA events):")
    print(f"  {'size':>7} {'dir':>4} {'pinned':>8} {'pageable':>9} {'speedup':>8}")
    for row in results["bandwidth"]:
        print(
            f"  {row['size_mib']:>4} MiB {row['direction']:>4} {row['pinned_gb_s']:>8.2f} {row['pageable_gb_s']:>9.2f} "
            f"{row['pinned_speedup']:>7.2f}x"
        )

    results["graph"] = graph_vs_eager()
    g = results["graph"]
    print(
        f"\nCUDA graph: {g['copies_per_iteration']} copies of {g['bytes_per_copy'] // 1024} KiB per iteration: "
        f"eager {g['eager_us']} us, graph {g['graph_us']} us ({g['graph_speedup']}x); "
        f"replay with new data {'exact' if g['graph_replay_exact'] else 'MISMATCH'}"
    )

    ok = all(r["exact"] for r in results["round_trips"]) and g["graph_replay_exact"]
    ok = ok and results.get("pytest", {}).get("returncode", 0) == 0
    results["ok"] = ok
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
