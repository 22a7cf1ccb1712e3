"""PyTorch eager FP32 against ONNX Runtime FP32 / FP16 / INT8 on the CPU, side by side in one run.

    python bench/bench_export.py                      # artifacts from python -m export.build_engine
    python bench/bench_export.py --cdinet /tmp/edge_mm_artifacts/cdinet-256 --clip /tmp/edge_mm_artifacts/clip-vit-b-32

For CDINet (its artifact's size) and CLIP's image and text encoders, at batch 1 and 8: median and
p90 latency per call, items per second, and the ratio against PyTorch eager FP32 and against ONNX
Runtime FP32. The torch model is rebuilt from the weights recorded in the artifact's report.json,
wrapped exactly as exported (sigmoid / L2-normalize inside). For each ONNX Runtime session the op
types of the graph ORT actually runs (after its optimizer) are counted, so a slow INT8 graph shows
whether its Q/DQ pairs were fused into integer kernels (QLinearConv, MatMulIntegerToFloat, ...).
Writes bench/results/export.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIN_RUNS = 3
RESULTS = ROOT / "bench" / "results" / "export.json"
from edge_mm.artifact import VARIANT_FILES as FILES  # noqa: E402  (the artifact contract's file names)

INTEGER_KERNELS = (
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "ConvInteger",
    "QLinearAdd",
    "QLinearMul",
    "QLinearSigmoid",
    "QLinearGlobalAveragePool",
    "QLinearConcat",
)


def timed(fn: Callable[[], Any], min_runs: int, max_seconds: float) -> List[float]:
    for _ in range(2):  # warm-up: allocation, ORT's first-run kernel selection
        fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < max_seconds and len(times) < 200):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
        if time.perf_counter() - start > 4 * max_seconds:
            break
    return times


def stats(times: List[float], batch: int) -> Dict[str, float]:
    ordered = sorted(times)
    median = statistics.median(ordered)
    return {
        "median_ms": round(median, 2),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
        "runs": len(times),
        "items_per_s": round(batch * 1000 / median, 2),
    }


def ort_session(path: Path, threads: int, optimized: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def op_summary(optimized: Path) -> Dict[str, int]:
    import onnx

    model = onnx.load(str(optimized), load_external_data=False)
    counts = collections.Counter(node.op_type for node in model.graph.node)
    keep = set(INTEGER_KERNELS) | {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "Cast",
        "Conv",
        "FusedConv",
        "MatMul",
        "FusedMatMul",
        "Gemm",
        "LayerNormalization",
        "Attention",
    }
    return {op: n for op, n in sorted(counts.items()) if op in keep}


def torch_model(artifact: Path, role: str):
    """The exported wrapper module, rebuilt from report.json's weights, with the artifact's own spec."""
    from edge_mm.artifact import read_onnx_spec
    from edge_mm.registry import parse_model_name
    from export.models import load_model
    from export.onnx import graphs_for

    folder = artifact if role == "model" else artifact / role
    report = json.loads((folder / "report.json").read_text())
    weights = report["weights"]
    source = (
        f"random:{weights['seed']}" if weights["source"] == "random" else weights.get("path") or weights.get("name")
    )
    loaded = load_model(parse_model_name(report["model"]), source)
    graph = next(g for g in graphs_for(loaded) if g.role == role)
    graph.spec = read_onnx_spec(folder / "model.onnx")  # its preprocessing decides the input size
    return graph


def inputs_for(spec, batch: int) -> Dict[str, np.ndarray]:
    from calib.sampling import sample

    return sample(spec, "synthetic", batch, 777, progress=False)


def bench_graph(
    name: str, artifact: Path, role: str, batches: List[int], threads: int, max_seconds: float
) -> List[Dict[str, Any]]:
    """Time torch first, then one ONNX Runtime session at a time (full CDINet at batch 8 needs
    several GB per session: holding all of them at once ran this 23 GB machine out of memory)."""
    import gc

    import torch

    folder = artifact if role == "model" else artifact / role
    graph = torch_model(artifact, role)
    feeds = {batch: inputs_for(graph.spec, batch) for batch in batches}
    results: Dict[int, Dict[str, Any]] = {batch: {} for batch in batches}
    references = {}
    for batch in batches:
        tensors = [torch.from_numpy(feeds[batch][n]) for n in graph.input_names]

        def run_torch():
            with torch.no_grad():
                return graph.module(*tensors)

        references[batch] = run_torch().numpy()
        results[batch]["pytorch_fp32"] = stats(timed(run_torch, MIN_RUNS, max_seconds), batch)
    ops = {}
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        for precision, file in FILES.items():
            if not (folder / file).is_file():
                continue
            optimized = Path(tmp) / f"{precision}.opt.onnx"
            session = ort_session(folder / file, threads, optimized)
            ops[precision] = op_summary(optimized)
            for batch in batches:
                diff = float(np.abs(session.run(None, feeds[batch])[0] - references[batch]).max())
                timing = stats(timed(lambda: session.run(None, feeds[batch]), MIN_RUNS, max_seconds), batch)
                results[batch][f"ort_{precision}"] = dict(timing, max_abs_vs_torch=round(diff, 6))
            session = None  # release its memory arena before the next variant
            gc.collect()
    rows = []
    for batch in batches:
        entry = results[batch]
        base = entry["pytorch_fp32"]["median_ms"]
        ort32 = entry.get("ort_fp32", {}).get("median_ms")
        for value in entry.values():
            value["speedup_vs_pytorch"] = round(base / value["median_ms"], 2)
            if ort32:
                value["speedup_vs_ort_fp32"] = round(ort32 / value["median_ms"], 2)
        rows.append({"model": name, "graph": role, "batch": batch, "results": entry})
        line = "  ".join(f"{k} {v['median_ms']:.1f} ms (x{v['speedup_vs_pytorch']:.2f})" for k, v in entry.items())
        print(f"{name:>12} {role:>5} b{batch}: {line}", flush=True)
    rows.append({"model": name, "graph": role, "ort_ops_after_optimization": ops})
    return rows


def table(rows: List[Dict[str, Any]]) -> str:
    header = "| model | graph | batch | PyTorch FP32 ms | ORT FP32 ms (x) | ORT FP16 ms (x) | ORT INT8 ms (x) | INT8 vs ORT FP32 |"
    lines = [header, "|" + "---|" * 8]
    for row in rows:
        if "results" not in row:
            continue
        r = row["results"]

        def cell(key):
            return f"{r[key]['median_ms']:.1f} ({r[key]['speedup_vs_pytorch']:.2f})" if key in r else "-"

        int8_vs = f"{r['ort_int8']['speedup_vs_ort_fp32']:.2f}" if "ort_int8" in r else "-"
        lines.append(
            f"| {row['model']} | {row['graph']} | {row['batch']} | {r['pytorch_fp32']['median_ms']:.1f} | "
            f"{cell('ort_fp32')} | {cell('ort_fp16')} | {cell('ort_int8')} | {int8_vs} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cdinet", type=Path, default=Path("/tmp/edge_mm_artifacts/cdinet-256"))
    parser.add_argument("--clip", type=Path, default=Path("/tmp/edge_mm_artifacts/clip-vit-b-32"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads (default 2)")
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="time budget per measurement (at least 3 runs after 2 warm-ups)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows: List[Dict[str, Any]] = []
    if (args.cdinet / "model.onnx").is_file():
        rows += bench_graph("cdinet", args.cdinet, "model", args.batches, args.threads, args.seconds)
    if (args.clip / "image" / "model.onnx").is_file():
        for role in ("image", "text"):
            rows += bench_graph("clip", args.clip, role, args.batches, args.threads, args.seconds)
    if not rows:
        print("no artifacts found; export them with python -m export.build_engine first", file=sys.stderr)
        return 2
    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "avx512_vnni": "avx512_vnni" in Path("/proc/cpuinfo").read_text()
            if Path("/proc/cpuinfo").exists()
            else None,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "threads": args.threads,
        "artifacts": {"cdinet": str(args.cdinet), "clip": str(args.clip)},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(rows))
    print(
        f"load average before {result['machine']['load_average_before']}, after {result['machine']['load_average_after']}"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
