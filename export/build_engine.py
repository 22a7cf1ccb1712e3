"""`python -m export.build_engine`: PyTorch weights -> ONNX artifact (fp32, fp16, int8) -> TensorRT engines.

    python -m export.build_engine --model cdinet-s --out artifacts/cdinet-s            # demo weights
    python -m export.build_engine --model cdinet --weights CDINet.pth --out artifacts/cdinet-256
    python -m export.build_engine --model clip:ViT-B/32 --weights ViT-B/32 --out artifacts/clip-vit-b-32
    python -m export.build_engine --model clip:RN50 --weights random --out /tmp/rn50 --no-engine

The ONNX stage always runs and is written atomically (see export/pipeline.py). The engine stage
then builds one engine per precision with the runtime's TensorRT builder (runtime.backends.trt), if a TensorRT that can build here is
installed; otherwise it says why no engine was built and stops. It never reports an engine it
did not build.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from edge_mm.cli_support import CliParser, install_sigterm_handler, run_cli
from edge_mm.errors import EngineError, UsageError
from edge_mm.registry import known_models, parse_model_name

PRECISION_CHOICES = ("fp32", "fp16", "int8")
MAX_IN_MEMORY_SAMPLES = 4096  # the default calibration and held-out sets are held in memory


@dataclasses.dataclass
class EngineOptions:
    no_engine: bool = False
    flavour: Optional[str] = None  # None: the best installed (tensorrt, tensorrt_rtx, trtexec)
    target_sm: Optional[List[str]] = None  # TensorRT-RTX ahead-of-time targets
    workspace_mb: int = 1024
    dla_core: Optional[int] = None
    timing_cache: Optional[Path] = None  # folder of the timing cache (default: the artifact folder)


def _gpu_count() -> int:
    from runtime.backends.trt.engines import gpu_count

    return gpu_count()


def build_engines(
    artifact_dir: Path, precisions: Sequence[str], options: EngineOptions, say: Callable[[str], None] = print
) -> Dict[str, Any]:
    """The engine stage: the runtime's TensorRT builder on every graph folder and precision, or a plain
    statement of why none was built.

    Returns {"status": "built" | "skipped" | "no-tensorrt" | "cannot-build-here", "reason": ..., "engines": [...]}.
    """
    if options.no_engine:
        say("engines: skipped (--no-engine)")
        return {"status": "skipped", "reason": "--no-engine", "engines": []}
    from runtime.backends.trt.engines import build_artifact_engines, builder_here

    here = builder_here(options.flavour, options.target_sm)
    flavour = here.flavour
    if flavour is None:
        if not here.installed:
            say(f"TensorRT not found: {here.reason}")
            say("no engine was built; the ONNX artifact is complete")
            return {"status": "no-tensorrt", "reason": here.reason, "engines": []}
        say(f"no engine was built: {here.reason}")
        return {"status": "cannot-build-here", "reason": here.reason, "engines": []}

    try:
        builds = build_artifact_engines(
            artifact_dir,
            precisions,
            say=say,
            flavour=options.flavour,
            target_sm=options.target_sm,
            workspace_mib=options.workspace_mb,
            dla_core=options.dla_core,
            timing_cache_dir=options.timing_cache,
        )
    except EngineError as exc:
        raise EngineError(
            f"{exc} (the ONNX artifact in {artifact_dir} is complete; rerun with --no-engine to skip engines)"
        ) from None
    engines = [
        {
            "engine": str(b.outcome.engine_path.relative_to(artifact_dir)),
            "precision": b.precision,
            "reused": b.outcome.reused,
            "seconds": round(b.outcome.seconds, 1),
        }
        for b in builds
    ]
    return {"status": "built", "flavour": f"{flavour.name} {flavour.version_string}", "engines": engines}


def _precisions(text: str) -> List[str]:
    items = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in items if p not in PRECISION_CHOICES]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"{text!r}: use fp32, fp16, int8 or a comma list such as fp16,int8")
    return list(dict.fromkeys(items))


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="python -m export.build_engine", description=__doc__)
    parser.add_argument("--model", required=True, help=f"one of: {', '.join(known_models())}, or clip:custom")
    parser.add_argument(
        "--weights",
        help="checkpoint path, published CLIP name, or random[:SEED]; "
        "may be left out for models with demo weights (cdinet-s, clip-demo)",
    )
    parser.add_argument(
        "--precision",
        type=_precisions,
        default=list(PRECISION_CHOICES),
        help="variants and engines to build, comma-separated (default fp32,fp16,int8); "
        "model.onnx (fp32) is always written as the reference",
    )
    parser.add_argument(
        "--calib",
        type=Path,
        action="append",
        default=[],
        help="stored calibration set (python -m calib.build); once per graph for CLIP; "
        "default: synthetic scenes/captions, seed 0",
    )
    parser.add_argument("--out", type=Path, required=True, help="artifact folder to write (replaced atomically)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace --out even if it holds something other than an artifact of this model family",
    )
    parser.add_argument(
        "--size", type=int, help="CDINet input side (multiple of 16) if not the weights' own (default 256)"
    )
    parser.add_argument(
        "--calib-count", type=int, default=64, help="samples in the default calibration set (default 64)"
    )
    parser.add_argument("--calib-seed", type=int, default=0, help="seed of the default calibration set (default 0)")
    parser.add_argument(
        "--eval-count", type=int, default=32, help="held-out synthetic scenes for report.json (default 32)"
    )
    parser.add_argument("--eval-seed", type=int, default=10_000, help="seed of the held-out set (default 10000)")
    parser.add_argument(
        "--max-batch",
        type=int,
        help="largest batch of the engines' optimization profile (default: the batch the runtime uses, "
        "CDINet 1, CLIP 8)",
    )
    parser.add_argument(
        "--max-side", type=int, help="CDINet: largest H and W of the engines' profile (default: the native size)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for torch and ONNX Runtime (default: their own)"
    )
    engine = parser.add_argument_group("engines (runtime.backends.trt, as edge-mm-engine build)")
    engine.add_argument("--no-engine", action="store_true", help="stop after the ONNX stage")
    engine.add_argument(
        "--flavour",
        choices=("tensorrt", "tensorrt_rtx", "trtexec"),
        help="which TensorRT builds (default: the best installed)",
    )
    engine.add_argument(
        "--target-sm", action="append", help="TensorRT-RTX ahead-of-time target, e.g. 86, 89, 120 (repeatable)"
    )
    engine.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace in MiB (default 1024)")
    engine.add_argument("--dla-core", type=int, help="Jetson DLA core (TensorRT only)")
    engine.add_argument(
        "--timing-cache", type=Path, help="folder of the TensorRT timing cache (default: the artifact folder)"
    )
    engine.add_argument(
        "--verify",
        action="store_true",
        help="run each engine on held-out inputs against ONNX Runtime FP32 and add the numbers to report.json",
    )
    return parser


def load_for_export(model: str, weights: Optional[str], size: Optional[int]):
    """Parse the name, load the weights, apply --size (CDINet only)."""
    import dataclasses as dc

    from export.models import load_model

    name = parse_model_name(model)
    if size is not None:
        if name.family != "cdinet":
            raise UsageError("--size applies to CDINet only; a CLIP model's input size comes from its weights")
        if size < 32 or size % 16:
            raise UsageError(f"--size {size} must be a multiple of 16 and at least 32 (CDINet downsamples four times)")
    loaded = load_model(name, weights)
    if size is not None:
        loaded.preprocess = dc.replace(loaded.preprocess, size=(size, size))
    return loaded


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from export.onnx import Profile
    from export.pipeline import ExportOptions, check_out_dir, export_artifact

    parse_model_name(args.model)  # unknown names fail before anything is loaded
    check_out_dir(args.out, args.model, args.force)
    if args.threads < 0 or args.calib_count < 1 or args.eval_count < 1 or (args.max_batch or 1) < 1:
        raise UsageError("--threads must be >= 0 and --calib-count, --eval-count, --max-batch >= 1")
    if args.calib_count > MAX_IN_MEMORY_SAMPLES or args.eval_count > MAX_IN_MEMORY_SAMPLES:
        raise UsageError(
            f"--calib-count and --eval-count are built in memory: at most {MAX_IN_MEMORY_SAMPLES}; "
            "for a larger calibration set stream one to a file with python -m calib.build and pass --calib"
        )
    if args.max_side is not None and (args.max_side < 32 or args.max_side % 16):
        raise UsageError(f"--max-side {args.max_side} must be a multiple of 16 and at least 32")
    if args.size is not None:
        from edge_mm.rgbd import MAX_INPUT_SIDE

        largest, what = (args.max_side, "--max-side") if args.max_side else (MAX_INPUT_SIDE, "the largest model input")
        if args.size > largest:
            raise UsageError(f"--size {args.size} is above {what} ({largest}); lower --size")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    print(f"[0/5] model: loading {args.model} ({args.weights or 'demo weights'})")
    loaded = load_for_export(args.model, args.weights, args.size)
    print(
        f"      {loaded.parameters / 1e6:.2f} M parameters, weights: {loaded.weights['source']} in {time.perf_counter() - start:.1f} s"
    )
    options = ExportOptions(
        precisions=args.precision,
        calib_paths=args.calib,
        calib_count=args.calib_count,
        calib_seed=args.calib_seed,
        eval_count=args.eval_count,
        eval_seed=args.eval_seed,
        threads=args.threads,
        profile=Profile(max_batch=args.max_batch, max_side=args.max_side),
        force=args.force,
    )
    summary = export_artifact(loaded, args.out, options)
    print(f"wrote {args.out} ({', '.join(p for p in args.precision)}) in {time.perf_counter() - start:.1f} s")
    _print_summary(summary)

    engine_options = EngineOptions(
        no_engine=args.no_engine,
        flavour=args.flavour,
        target_sm=args.target_sm,
        workspace_mb=args.workspace_mb,
        dla_core=args.dla_core,
        timing_cache=args.timing_cache,
    )
    result = build_engines(args.out, args.precision, engine_options)
    for entry in result["engines"]:
        print(f"engine: {args.out / entry['engine']} ({'reused' if entry['reused'] else 'built'})")
    if args.verify:
        verify_engines(args.out, result)
    return 0


def verify_engines(artifact_dir: Path, result: Dict[str, Any], say: Callable[[str], None] = print) -> None:
    """--verify: each built engine against ONNX Runtime FP32, numbers into each graph's report.json."""
    if not result["engines"]:
        say(f"verify: no engine to verify ({result.get('reason') or result['status']})")
        return
    from export.verify import verify_folder

    by_folder: Dict[Path, List[Dict[str, Any]]] = {}
    for entry in result["engines"]:
        by_folder.setdefault((artifact_dir / entry["engine"]).parent, []).append(entry)
    for folder, entries in by_folder.items():
        verify_folder(folder, entries, say=say)


def _print_summary(summary: Dict[str, Any]) -> None:
    if summary.get("kind") == "cdinet":
        for precision, entry in summary["variants"].items():
            s = entry["sod"].get("s_measure")
            line = f"  {precision}: S-measure {s:.4f}" if s is not None else f"  {precision}:"
            if "vs_fp32" in entry:
                line += f", MAE vs fp32 {entry['vs_fp32']['mae']:.5f}, S drop {entry['s_measure_drop']:+.4f}"
            print(line)
    elif "combined" in summary:
        for precision, entry in summary["combined"].items():
            print(
                f"  {precision}: zero-shot top-1 agreement {entry['zero_shot_top1_agreement']:.3f}, "
                f"recall@1 agreement {entry['retrieval_recall_at_1_agreement']:.3f}"
            )


def cli(argv: Optional[List[str]] = None) -> int:
    install_sigterm_handler()  # `kill` behaves like Ctrl-C (exit 143): the temporary artifact folder is removed
    return run_cli(main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
