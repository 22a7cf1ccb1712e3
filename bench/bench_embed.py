"""CLIP image-embedding throughput of an artifact, per backend, precision and batch size.

    python bench/bench_embed.py --artifact artifacts/clip-demo
    python bench/bench_embed.py --build clip:ViT-B/32          # exports ViT-B/32 with random weights first
        [--backends ort-cpu,ort-cuda,tensorrt] [--precisions fp32,fp16,int8] [--batches 1,8,32]
        [--seconds 2] [--threads N] [--json bench/results/embed.json]

bench/results/embed.json holds ViT-B/32 (random weights, 224 px), embed_demo.json the demo CLIP (64 px).

What runs is what `edge-mm-index` and the CLIP stage run: runtime.backends.select starts the
backend (TensorRT needs an engine in the artifact built on this machine; ONNX Runtime CUDA needs
onnxruntime-gpu), and ClipEmbedder feeds it (a TensorRT engine's profile may cap a batch, then the
batch runs in engine-sized chunks, as in use). Per configuration:

- model images/s: preprocessed batches through the backend (median ms per batch over >= 3 timed
  runs after 2 warm-up runs, or as many as fit in --seconds);
- end-to-end images/s: BGR frames (480x640 synthetic scenes) -> CLIP preprocessing -> embeddings,
  i.e. what an `add` achieves with one thread doing both;
- cosine_min vs fp32: each variant's embeddings against the ONNX Runtime CPU fp32 ones on the
  same inputs (a variant that is fast but wrong shows here).

A backend that cannot run here is listed with the reason instead of numbers; nothing is faked.
Random weights time the same as trained ones (the same graph), but their cosine numbers only say
the variant computes the same function.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_mm.atomic import write_json  # noqa: E402
from edge_mm.cli_support import run_cli  # noqa: E402
from edge_mm.errors import EdgeMMError, UsageError  # noqa: E402

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "embed.json"
FRAME_SIZE = (480, 640)


def _list(text: str, allowed: Optional[Sequence[str]] = None, cast=str) -> List[Any]:
    items = [cast(p.strip()) for p in text.split(",") if p.strip()]
    if not items or (allowed and any(i not in allowed for i in items)):
        raise UsageError(f"{text!r}: give a comma list of {', '.join(allowed) if allowed else 'values'}")
    return items


def build_artifact(model: str, work: Path, threads: int) -> Path:
    """Export `model` with random weights (export needs torch; the timed code does not)."""
    out = work / model.replace(":", "-").replace("/", "-")
    if (out / "image" / "model.int8.onnx").is_file():
        return out
    from export.build_engine import main as build

    args = ["--model", model, "--out", str(out), "--calib-count", "16", "--eval-count", "8"]
    if model != "clip-demo":
        args += ["--weights", "random"]
    if threads:
        args += ["--threads", str(threads)]
    if build(args) != 0:
        raise UsageError(f"exporting {model} failed; see the messages above")
    return out


def time_runs(fn, seconds: float, min_runs: int = 3, warmup: int = 2) -> List[float]:
    for _ in range(warmup):
        fn()
    times: List[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_one(
    embedder, frames: List[np.ndarray], pixels: np.ndarray, reference: np.ndarray, batch: int, seconds: float
) -> Dict[str, Any]:
    chunk = pixels[:batch]
    model = time_runs(lambda: embedder.embed_preprocessed(chunk), seconds)
    end_to_end = time_runs(lambda: embedder.embed_images(frames[:batch]), seconds, min_runs=2, warmup=1)
    got = embedder.embed_preprocessed(chunk)
    ms = statistics.median(model) * 1000
    e2e_ms = statistics.median(end_to_end) * 1000
    return {
        "batch": batch,
        "ms_per_batch": round(ms, 3),
        "model_images_per_s": round(batch / (ms / 1000), 1),
        "end_to_end_images_per_s": round(batch / (e2e_ms / 1000), 1),
        "timed_runs": len(model),
        "chunk": embedder.image_batch,
        "cosine_min_vs_fp32": round(float(np.min(np.sum(got * reference[:batch], axis=1))), 6),
    }


def run(args: argparse.Namespace) -> Dict[str, Any]:
    from edge_mm.artifact import Artifact
    from edge_mm.clip.preprocess import ClipPreprocess, preprocess_batch
    from edge_mm.synthetic import SceneGenerator
    from runtime.backends.select import select_backend
    from runtime.retrieval.embed import ClipEmbedder, locate_clip_artifact

    if args.build:
        work = Path(args.work or tempfile.mkdtemp(prefix="bench-embed-"))
        artifact = build_artifact(args.build, work, args.threads or 0)
    elif args.artifact:
        artifact = Path(args.artifact)
    else:
        raise UsageError("give --artifact DIR (a CLIP artifact) or --build MODEL (e.g. clip:ViT-B/32)")
    paths = locate_clip_artifact(artifact)
    image = Artifact(paths.image)
    spec = image.spec
    batches = args.batches
    generator = SceneGenerator(FRAME_SIZE, seed=0)
    frames = [generator.generate(i).bgr for i in range(max(batches))]
    preprocess = ClipPreprocess.from_dict(spec.preprocess)
    start = time.perf_counter()
    pixels = preprocess_batch(frames, preprocess)
    preprocess_ms = (time.perf_counter() - start) * 1000 / len(frames)

    reference_sel = select_backend(image, "ort-cpu", "fp32", threads=args.threads)
    with ClipEmbedder(reference_sel.backend) as ref:
        reference = ref.embed_preprocessed(pixels)

    rows: List[Dict[str, Any]] = []
    for backend in args.backends:
        for precision in args.precisions:
            label = f"{backend} {precision}"
            if precision not in image.variants():
                rows.append(
                    {"backend": backend, "precision": precision, "unavailable": f"artifact has no {precision} variant"}
                )
                continue
            try:
                selection = select_backend(image, backend, precision, threads=args.threads, warn=lambda _: None)
            except EdgeMMError as exc:
                rows.append({"backend": backend, "precision": precision, "unavailable": str(exc)})
                print(f"{label}: not here ({str(exc)[:120]})", flush=True)
                continue
            with ClipEmbedder(selection.backend, batch_size=max(batches)) as embedder:
                for batch in batches:
                    row = {
                        "backend": selection.kind,
                        "precision": selection.precision,
                        **bench_one(embedder, frames, pixels, reference, batch, args.seconds),
                    }
                    provider = getattr(selection.backend, "provider", None)
                    if provider:
                        row["provider"] = provider
                    rows.append(row)
                    print(
                        f"{label} b{batch}: {row['ms_per_batch']:.2f} ms/batch, {row['model_images_per_s']:.1f} img/s "
                        f"(end to end {row['end_to_end_images_per_s']:.1f}), cos vs fp32 {row['cosine_min_vs_fp32']:.5f}",
                        flush=True,
                    )
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": __import__("onnxruntime").__version__,
            "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
        },
        "artifact": str(paths.root),
        "model": spec.name,
        "image_size": preprocess.image_size,
        "weights": spec.extra.get("weights", {}),
        "threads": args.threads,
        "frame_size": list(FRAME_SIZE),
        "preprocess_ms_per_image": round(preprocess_ms, 3),
        "rows": rows,
    }


def format_table(result: Dict[str, Any]) -> str:
    lines = [
        f"CLIP image embedding: {result['model']} at {result['image_size']} px, "
        f"preprocessing {result['preprocess_ms_per_image']:.2f} ms/image ({result['frame_size'][1]}x{result['frame_size'][0]} frames)",
        f"{'backend':<10} {'prec':<5} {'batch':>5} {'ms/batch':>10} {'img/s':>9} {'e2e img/s':>10} {'cos vs fp32':>12}",
    ]
    for row in result["rows"]:
        if "unavailable" in row:
            lines.append(f"{row['backend']:<10} {row['precision']:<5} {'':>5} not here: {row['unavailable'][:90]}")
            continue
        lines.append(
            f"{row['backend']:<10} {row['precision']:<5} {row['batch']:>5} {row['ms_per_batch']:>10.2f} "
            f"{row['model_images_per_s']:>9.1f} {row['end_to_end_images_per_s']:>10.1f} {row['cosine_min_vs_fp32']:>12.5f}"
        )
    return "\n".join(lines)


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/bench_embed.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--artifact", help="CLIP artifact folder (with image/ and text/)")
    parser.add_argument("--build", help="export this model with random weights first, e.g. clip:ViT-B/32 (needs torch)")
    parser.add_argument("--work", help="folder for the exported artifact (default: a temporary folder)")
    parser.add_argument(
        "--backends",
        type=lambda t: _list(t, ("ort-cpu", "ort-cuda", "tensorrt")),
        default=["ort-cpu", "ort-cuda", "tensorrt"],
    )
    parser.add_argument(
        "--precisions", type=lambda t: _list(t, ("fp32", "fp16", "int8")), default=["fp32", "fp16", "int8"]
    )
    parser.add_argument("--batches", type=lambda t: _list(t, cast=int), default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per configuration (default 2)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime CPU threads (default: its own)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"write results here (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    if any(b < 1 for b in args.batches):
        raise UsageError("--batches must be positive")
    result = run(args)
    print(format_table(result))
    write_json(args.json, result, indent=1, sort_keys=True)
    print(f"wrote {args.json}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
