"""CDINet evaluation with the authors' test pipeline, and `edge-mm-eval cdinet`.

Pipeline (research: cdinet.md 2.5): preprocess to the spec size, run, resize the logits to the
GT size (bilinear, align_corners=False), sigmoid, per-image min-max, x255 -> uint8 PNG; the
metrics are computed on those uint8 maps against the GT, as the community scripts do.

Weights (`--weights`): the demo cdinet-s (default), an official state dict or an edge-mm-train
checkpoint, or `random`; edge_mm.cdinet.checkpoint.load_cdinet resolves them.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, Optional

import cv2
import numpy as np
import torch
from tqdm import tqdm

from edge_mm.atomic import atomic_dir, write_json
from edge_mm.cdinet.checkpoint import LoadedCdinet, load_cdinet
from edge_mm.errors import UsageError
from edge_mm.evaluate.metrics import QuickMetrics, SodMetrics
from edge_mm.evaluate.samples import SYNTHETIC, FolderSamples, SyntheticSamples, open_folder, parse_data_arg
from edge_mm.rgbd import RgbdPreprocess, postprocess_saliency_official, preprocess_depth, preprocess_rgb

DEFAULT_TEST_SEED = 3  # synthetic test scenes; edge-mm-train uses seeds 1 (train) and 2 (validation)
PIPELINE = "official: resize to spec size, logits -> bilinear (align_corners=False) to GT size, sigmoid, per-image min-max, x255 uint8"


def with_size(spec: RgbdPreprocess, size: Optional[int]) -> RgbdPreprocess:
    return spec if not size else dataclasses.replace(spec, size=(int(size), int(size)))


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(N,3,H,W) and (N,1,H,W) float32 arrays -> (N,1,H,W) float32 logits."""
    device = next(model.parameters(), torch.empty(0)).device  # a model trained on a GPU is validated there
    return model(torch.from_numpy(rgb).to(device), torch.from_numpy(depth).to(device)).float().cpu().numpy()


def to_saliency_png(logits: np.ndarray, gt_size) -> np.ndarray:
    """One (h, w) logit map -> the uint8 saliency map at GT size that the official script saves."""
    probability = postprocess_saliency_official(logits, tuple(gt_size), logits=True)
    return np.rint(probability * 255.0).astype(np.uint8)


def evaluate_model(
    model: torch.nn.Module,
    samples,
    spec: RgbdPreprocess,
    metrics,
    batch_size: int = 4,
    pred_dir: Optional[Path] = None,
    progress: bool = True,
    desc: str = "eval",
) -> Dict[str, Any]:
    """Run `model` over every sample of `samples`; metrics.step(pred_u8, gt_u8) per image.

    Predictions are written as <pred_dir>/<name>.png when pred_dir is given. Returns metrics.results().
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size} must be >= 1")
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=len(samples), desc=desc, unit="img", disable=None if progress else True, leave=False)
        for first in range(0, len(samples), batch_size):
            indices = range(first, min(first + batch_size, len(samples)))
            raws = [samples.read_raw(i) for i in indices]
            rgb = np.stack([preprocess_rgb(bgr, spec) for bgr, _, _ in raws])
            depth = np.stack([preprocess_depth(unit, spec) for _, unit, _ in raws])
            logits = predict_logits(model, rgb, depth)
            for j, (index, (_, _, gt)) in enumerate(zip(indices, raws)):
                pred = to_saliency_png(logits[j, 0], gt.shape)
                metrics.step(pred, gt)
                if pred_dir is not None:
                    ok, data = cv2.imencode(".png", pred)
                    if not ok:
                        raise UsageError(f"OpenCV could not encode the prediction for {samples.name(index)}")
                    data.tofile(str(pred_dir / f"{samples.name(index)}.png"))
            bar.update(len(indices))
        bar.close()
    finally:
        model.train(was_training)
    return metrics.results()


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        help="dataset folder (RGB/ depth/ GT/), or synthetic[:SEED] (default seed %d)" % DEFAULT_TEST_SEED,
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="cdinet-s (demo, default), a .pth path (official or edge-mm-train checkpoint), 'random', "
        "or an artifact folder (export.build_engine / export.import_onnx; run on ONNX Runtime FP32)",
    )
    parser.add_argument(
        "--variant",
        default=None,
        help="CDINet variant of an official-style state dict (default cdinet) or of 'random' (default cdinet-s)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="input side in pixels (multiple of 16); default: the weights' spec (256 for the official)",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for pred/<name>.png and metrics.json")
    parser.add_argument("--count", type=int, default=200, help="synthetic scenes to evaluate (default 200)")
    parser.add_argument(
        "--scene-size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"), help="synthetic scene size"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed for --weights random")
    parser.add_argument("--weighted-f", action="store_true", help="also compute the weighted F-measure (slow)")
    parser.add_argument(
        "--depth-far-is-bright", action="store_true", help="the folder's 8-bit depth images are bright far away"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from edge_mm.evaluate import artifact

    if artifact.is_artifact(args.weights):  # an exported or imported model folder: its spec, the runtime's backends
        args.backend, args.precision = "auto", "fp32"
        return artifact.run(args, model_dir=args.weights)
    if args.threads:
        torch.set_num_threads(int(args.threads))
    data = parse_data_arg(args.data)
    loaded = load_cdinet(args.weights, args.variant, seed=args.seed)
    spec = with_size(loaded.spec, args.size)
    if data.kind == SYNTHETIC:
        seed = DEFAULT_TEST_SEED if data.seed is None else data.seed
        samples = SyntheticSamples(seed, args.count, spec, scene_size=tuple(args.scene_size))
    else:
        samples = FolderSamples(open_folder(data.path, spec, depth_near_is_bright=not args.depth_far_is_bright))

    metrics = SodMetrics(weighted_f=args.weighted_f)
    start = time.perf_counter()
    if args.out is not None:
        with atomic_dir(Path(args.out) / "pred") as pred_dir:
            results = evaluate_model(loaded.model, samples, spec, metrics, args.batch_size, pred_dir, not args.quiet)
    else:
        results = evaluate_model(loaded.model, samples, spec, metrics, args.batch_size, None, not args.quiet)
    seconds = time.perf_counter() - start

    report = {
        "model": loaded.describe(),
        "data": samples.describe(),
        "preprocess": spec.to_dict(),
        "pipeline": PIPELINE,
        "metrics": results,
        "seconds": round(seconds, 2),
    }
    if args.out is not None:
        write_json(Path(args.out) / "metrics.json", report, indent=2, sort_keys=True)
    names = ("s_measure", "max_f", "mean_f", "max_e", "mean_e", "mae") + (("weighted_f",) if args.weighted_f else ())
    print(
        f"{loaded.variant} ({loaded.kind}) on {samples.describe()['kind']} x{results['count']}: "
        + "  ".join(f"{n}={results[n]:.4f}" for n in names)
    )
    if args.out is not None:
        print(f"wrote {args.out}/metrics.json and {results['count']} predictions in {args.out}/pred")
    return 0


__all__ = [
    "LoadedCdinet",
    "load_cdinet",
    "evaluate_model",
    "predict_logits",
    "to_saliency_png",
    "QuickMetrics",
    "SodMetrics",
]
