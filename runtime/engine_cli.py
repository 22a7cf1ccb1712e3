"""`edge-mm-engine`: TensorRT engines from an existing artifact, on the machine that runs them (no torch).

    edge-mm-engine build artifacts/cdinet-s                          # every precision, this GPU
    edge-mm-engine build artifacts/cdinet-s --precision fp16,int8 --flavour tensorrt_rtx --target-sm 86
    edge-mm-engine build artifacts/cdinet-256 --dla-core 0            # Jetson DLA
    edge-mm-engine list artifacts/cdinet-s                            # each engine, and whether it runs here

`build` compiles the artifact's own ONNX files (model.onnx, model.fp16.onnx, model.int8.onnx; CLIP:
image/ and text/) with the runtime's TensorRT builder and writes each engine beside its ONNX with
its sidecar; an engine whose inputs did not change is reused. The optimization profile is the one
in the model's spec (its native size and the batch the runtime uses) unless --max-side /
--max-batch widen or narrow it. `list` reads only the sidecars.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edge_mm.artifact import PRECISIONS, Artifact, engine_problems, graph_folders
from edge_mm.cli_support import CliParser, run_cli
from edge_mm.errors import ArtifactError, UsageError


def _precisions(text: str) -> List[str]:
    items = [p.strip() for p in text.split(",") if p.strip()]
    if not items or any(p not in PRECISIONS for p in items):
        raise argparse.ArgumentTypeError(f"{text!r}: use fp32, fp16, int8 or a comma list such as fp16,int8")
    return list(dict.fromkeys(items))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="edge-mm-engine", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build (or reuse) the artifact's engines here")
    build.add_argument("artifact", type=Path, help="artifact folder (from python -m export.build_engine)")
    build.add_argument(
        "--precision",
        type=_precisions,
        default=list(PRECISIONS),
        help="comma-separated: fp32,fp16,int8 (default: every variant the artifact has)",
    )
    build.add_argument(
        "--flavour", choices=("tensorrt", "tensorrt_rtx", "trtexec"), help="which TensorRT builds (default: the best)"
    )
    build.add_argument(
        "--target-sm", action="append", metavar="N", help="TensorRT-RTX ahead-of-time target: 86, 89, 120 (repeatable)"
    )
    build.add_argument("--dla-core", type=int, metavar="N", help="Jetson DLA core (TensorRT only)")
    build.add_argument("--max-side", type=_positive, metavar="N", help="CDINet: largest H and W (default: the spec's)")
    build.add_argument("--max-batch", type=_positive, metavar="N", help="largest batch (default: the spec's)")
    build.add_argument("--workspace-mb", type=_positive, default=1024, help="builder workspace in MiB (default 1024)")
    build.add_argument("--force", action="store_true", help="rebuild even if nothing changed")
    listing = commands.add_parser("list", help="each engine, its sidecar, and whether it runs here")
    listing.add_argument("artifact", type=Path, help="artifact folder")
    return parser


def profile_override(artifact: Artifact, max_side: Optional[int], max_batch: Optional[int]) -> Dict[str, List[int]]:
    """Axis ranges that replace the spec's maxima (opt stays the native size; min never exceeds max)."""
    override: Dict[str, List[int]] = {}
    profile = artifact.spec.profile or {}
    axes = {"batch": max_batch}
    if max_side is not None:
        if artifact.spec.kind != "cdinet":
            raise UsageError(f"--max-side applies to CDINet; {artifact.path} is a {artifact.spec.kind} graph")
        if max_side % 16:
            raise UsageError(f"--max-side {max_side} must be a multiple of 16 (CDINet downsamples four times)")
        axes.update(height=max_side, width=max_side)
    for axis, top in axes.items():
        if top is None or axis not in profile:
            continue
        lo, opt, _ = (int(v) for v in profile[axis])
        override[axis] = [min(lo, top), min(opt, top), top]
    return override


def build(args: argparse.Namespace) -> int:
    from runtime.backends.trt.builder import build_or_reuse, describe_ranges
    from runtime.backends.trt.engines import builder_here

    root = Artifact(args.artifact)
    here = builder_here(args.flavour, args.target_sm)
    if here.flavour is None:
        raise UsageError(f"cannot build engines here: {here.reason}")
    print(f"building with {here.flavour.name} {here.flavour.version_string} ({here.flavour.tool})")
    built = 0
    for folder in graph_folders(root.path):
        artifact = Artifact(folder)
        present = artifact.variants()
        if not present:
            raise ArtifactError(f"{folder} holds no ONNX file; export it with `{root.export_command()}`")
        override = profile_override(artifact, args.max_side, args.max_batch)
        if override:
            print(f"{folder.name}: profile {describe_ranges({**(artifact.spec.profile or {}), **override})}")
        for precision in args.precision:
            if precision not in present:
                print(f"{folder}: no {precision} variant, skipped")
                continue
            outcome = build_or_reuse(
                artifact.onnx_path(precision),
                precision,
                folder,
                flavour=args.flavour,
                target_sm=args.target_sm,
                dla_core=args.dla_core,
                profile=override or None,
                workspace_mib=args.workspace_mb,
                force=args.force,
            )
            built += 1
            print(f"{'reused' if outcome.reused else 'built'} {outcome.engine_path} ({outcome.seconds:.1f} s)")
    if not built:
        raise UsageError(
            f"{root.path} has none of the variants {', '.join(args.precision)}; export them with `{root.export_command()}`"
        )
    return 0


def describe_engines(artifact_dir: Path) -> List[Dict[str, Any]]:
    """One entry per engine of every graph folder: file, sidecar facts, and the reasons it cannot run here."""
    from runtime.backends.trt.loader import this_machine

    machine = this_machine()
    rows = []
    for folder in graph_folders(artifact_dir):
        for entry in Artifact(folder).engines():
            row: Dict[str, Any] = {"engine": entry.path, "precision": entry.precision}
            if entry.sidecar is None:
                row.update(sidecar=None, problems=[entry.problem])
            else:
                row.update(sidecar=entry.sidecar, problems=engine_problems(entry.sidecar, machine))
            rows.append(row)
    return rows


def list_engines(args: argparse.Namespace) -> int:
    from runtime.backends.trt.loader import this_machine

    root = Artifact(args.artifact)
    rows = describe_engines(root.path)
    print(f"this machine: {this_machine().describe()}")
    if not rows:
        print(f"no engines in {root.path}; build them here with `{root.engine_command()}`")
        return 0
    for row in rows:
        sidecar = row["sidecar"]
        name = row["engine"].relative_to(root.path)
        if sidecar is None:
            print(f"{name}: no usable sidecar; cannot run here: {'; '.join(row['problems'])}")
            continue
        trt = sidecar.get("tensorrt") or {}
        targets = ", ".join(f"sm{t}" for t in sidecar.get("targets") or []) or "?"
        facts = f"{sidecar.get('precision')}, {trt.get('flavour')} {trt.get('version')}, {targets}"
        facts += f", built {sidecar.get('built_at', '?')}"
        verdict = "runs here" if not row["problems"] else "cannot run here: " + "; ".join(row["problems"])
        print(f"{name} ({facts}; sidecar {name}.json): {verdict}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return build(args) if args.command == "build" else list_engines(args)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
