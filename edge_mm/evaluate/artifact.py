"""`edge-mm-eval artifact`: any saliency artifact (CDINet export or an import) on the runtime's backends.

    edge-mm-eval artifact --model artifacts/my-sod --data data/NJU2K --out runs/eval-my-sod
    edge-mm-eval cdinet --weights artifacts/my-sod --data data/NJU2K       # the same: a folder is an artifact

Same data, same protocol and same metrics as `edge-mm-eval cdinet` (edge_mm.evaluate.cdinet.PIPELINE),
so a model brought in with `python -m export.import_onnx` is compared with CDINet number for
number. The model's inputs and output come from its spec (edge_mm.saliency_io); it runs on
ONNX Runtime or a TensorRT engine, whichever `--backend` / `--precision` pick. Torch-free.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Dict, Optional

import cv2
import numpy as np
from tqdm import tqdm

from edge_mm.atomic import atomic_dir, write_json
from edge_mm.errors import UsageError
from edge_mm.evaluate.metrics import SodMetrics
from edge_mm.evaluate.samples import SYNTHETIC, FolderSamples, SyntheticSamples, open_folder, parse_data_arg
from edge_mm.rgbd import postprocess_saliency_official
from edge_mm.saliency_io import SaliencyIO

DEFAULT_TEST_SEED = 3  # as edge-mm-eval cdinet: its synthetic test scenes
PIPELINE = "official: spec preprocessing, map -> bilinear (align_corners=False) to GT size, sigmoid if logits, per-image min-max, x255 uint8"


def is_artifact(path: Optional[str]) -> bool:
    """A folder holding an exported or imported saliency graph (model.onnx or a variant)."""
    if path is None or not Path(path).is_dir():
        return False
    return any(Path(path, name).is_file() for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"))


def evaluate_artifact(model: Any, source, metrics, pred_dir: Optional[Path] = None, progress: bool = True) -> Dict:
    """model: runtime.saliency.SaliencyModel. metrics.step(pred_u8, gt_u8) per image; returns metrics.results()."""
    io: SaliencyIO = model.io
    for index in tqdm(range(len(source)), desc="eval", unit="img", disable=None if progress else True, leave=False):
        bgr, unit, gt = source.read_raw(index)
        maps = model.infer(io.feeds_from_unit([bgr], [unit]))
        probability = postprocess_saliency_official(maps[0], gt.shape, logits=io.logits)
        pred = np.rint(probability * 255.0).astype(np.uint8)
        metrics.step(pred, gt)
        if pred_dir is not None:
            ok, data = cv2.imencode(".png", pred)
            if not ok:
                raise UsageError(f"OpenCV could not encode the prediction for {source.name(index)}")
            data.tofile(str(pred_dir / f"{source.name(index)}.png"))
    return metrics.results()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="saliency artifact folder (export.build_engine or import_onnx)")
    parser.add_argument("--data", required=True, help="dataset folder (RGB/ depth/ GT/), or synthetic[:SEED]")
    parser.add_argument("--out", type=Path, default=None, help="folder for pred/<name>.png and metrics.json")
    parser.add_argument("--count", type=int, default=200, help="synthetic scenes to evaluate (default 200)")
    parser.add_argument("--scene-size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    add_backend_arguments(parser)
    parser.add_argument("--weighted-f", action="store_true", help="also compute the weighted F-measure (slow)")
    parser.add_argument(
        "--depth-far-is-bright", action="store_true", help="the folder's 8-bit depth images are bright far away"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="auto", help="auto, tensorrt, ort-cuda or ort-cpu (default auto)")
    parser.add_argument("--precision", default="fp32", help="fp32, fp16, int8 or auto (default fp32)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads")


def run(args: argparse.Namespace, model_dir: Optional[str] = None) -> int:
    from edge_mm.artifact import Artifact
    from runtime.backends.select import select_backend
    from runtime.saliency import SaliencyModel

    model_dir = model_dir or args.model
    selection = select_backend(Artifact(model_dir), args.backend, args.precision, threads=args.threads)
    try:
        model = SaliencyModel(selection.backend, threshold=None)
        pre = model.io.pre
        data = parse_data_arg(args.data)
        if data.kind == SYNTHETIC:
            seed = DEFAULT_TEST_SEED if data.seed is None else data.seed
            source = SyntheticSamples(seed, args.count, pre, scene_size=tuple(args.scene_size))
        else:
            source = FolderSamples(open_folder(data.path, pre, depth_near_is_bright=not args.depth_far_is_bright))
        metrics = SodMetrics(weighted_f=args.weighted_f)
        start = time.perf_counter()
        if args.out is not None:
            with atomic_dir(Path(args.out) / "pred") as pred_dir:
                results = evaluate_artifact(model, source, metrics, pred_dir, not args.quiet)
        else:
            results = evaluate_artifact(model, source, metrics, None, not args.quiet)
        seconds = time.perf_counter() - start
    finally:
        selection.backend.deactivate()
    report = {
        "model": {
            "artifact": str(model_dir),
            "name": model.spec.name,
            "kind": model.spec.kind,
            "backend": selection.label,
        },
        "data": source.describe(),
        "preprocess": model.spec.preprocess,
        "pipeline": PIPELINE,
        "metrics": results,
        "seconds": round(seconds, 2),
    }
    if args.out is not None:
        write_json(Path(args.out) / "metrics.json", report, indent=1)
    names = ("s_measure", "max_f", "mean_f", "max_e", "mean_e", "mae") + (("weighted_f",) if args.weighted_f else ())
    print(
        f"{model.spec.name} ({model.spec.kind}, {selection.label}) on {source.describe()['kind']} x{results['count']}: "
        + "  ".join(f"{n}={results[n]:.4f}" for n in names)
    )
    return 0
