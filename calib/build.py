"""`python -m calib.build`: sample frames, preprocess them with a model's spec, store the set.

python -m calib.build --model cdinet-s --source synthetic --count 64 --seed 1 --out calib/cdinet-s.calib
python -m calib.build --model artifacts/clip-vit-b-32/image --source folder:photos --count 128 --out clip.calib
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional, Sequence

from calib.sampling import SOURCE_FORMS, iter_samples
from calib.store import MANIFEST, stream_set
from edge_mm import __version__
from edge_mm.artifact import export_command, read_onnx_spec
from edge_mm.cli_support import CliParser, install_sigterm_handler, run_cli
from edge_mm.errors import ArtifactError, UsageError
from edge_mm.hashing import sha256_file
from edge_mm.outputs import OutputKind, check_output, zip_holding
from edge_mm.registry import (
    CLIP_PUBLISHED_RESOLUTION,
    cdinet_spec,
    clip_image_spec,
    clip_text_spec,
    demo_preprocess,
    parse_model_name,
)
from edge_mm.spec import ModelSpec


def spec_from_onnx(path: Path) -> ModelSpec:
    """The model spec in an ONNX file's metadata (the artifact contract's reader; no onnx import)."""
    return read_onnx_spec(path)


def resolve_spec(model: str, graph: str) -> ModelSpec:
    """A model name (cdinet-s, clip:ViT-B/32) or an artifact folder/ONNX file -> its spec."""
    path = Path(model)
    if path.suffix == ".onnx" and path.is_file():
        return spec_from_onnx(path)
    if path.is_dir():
        for candidate in (path / "model.onnx", path / graph / "model.onnx"):
            if candidate.is_file():
                return spec_from_onnx(candidate)
        raise ArtifactError(f"no model.onnx in {path} (nor in {path / graph}); build it with `{export_command(path)}`")
    name = parse_model_name(model)
    if name.family == "cdinet":
        # A name means its demo weights where the repository has them: use their preprocessing.
        return cdinet_spec(name.text, demo_preprocess(name))
    if graph == "text":
        return clip_text_spec(name.text)
    if name.variant not in CLIP_PUBLISHED_RESOLUTION:
        raise UsageError(
            f"{model}: its image size comes from its weights; pass the exported artifact folder as --model"
        )
    return clip_image_spec(name.text, CLIP_PUBLISHED_RESOLUTION[name.variant])


# An existing --out is replaced only if it is a calibration set (a zip with a manifest), or with --force.
CALIBRATION_SET = OutputKind("a calibration set", zip_holding(MANIFEST))


def read_set_shapes(path: Path) -> str:
    """'rgb[3, 256, 256], depth[1, 256, 256]' from the set's manifest (without reading its arrays)."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as zf:
        arrays = json.loads(zf.read(MANIFEST))["arrays"]
    return ", ".join(f"{name}{entry['shape']}" for name, entry in arrays.items())


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="python -m calib.build", description=__doc__)
    parser.add_argument(
        "--model", required=True, help="model name (cdinet-s, clip:ViT-B/32, ...) or artifact folder / model.onnx"
    )
    parser.add_argument(
        "--graph", choices=("image", "text"), default="image", help="for CLIP: which encoder (default image)"
    )
    parser.add_argument("--source", default="synthetic", help=f"where samples come from: {SOURCE_FORMS}")
    parser.add_argument("--count", type=int, default=64, help="number of samples (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed; same seed, same bytes (default 0)")
    parser.add_argument("--out", required=True, type=Path, help="output file (.calib)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true", help="replace --out even if it is not a calibration set")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    check_output(args.out, "--out", CALIBRATION_SET, force=args.force)
    if args.count < 1:
        raise UsageError(f"--count {args.count} must be at least 1")
    spec = resolve_spec(args.model, args.graph)
    samples = iter_samples(spec, args.source, args.count, args.seed, progress=not args.quiet)
    manifest = {
        "model": spec.name,
        "kind": spec.kind,
        "source": args.source,
        "seed": args.seed,
        "spec_digest": spec.digest(),
        "edge_mm": __version__,
    }
    path = stream_set(args.out, samples, args.count, manifest)
    digest = sha256_file(path)
    shapes = read_set_shapes(path)
    print(f"wrote {path}: {args.count} samples of {shapes}, sha256 {digest[:16]}")
    return 0


def cli(argv: Optional[List[str]] = None) -> int:
    install_sigterm_handler()  # `kill` stops like Ctrl-C (exit 143): the temporary set is removed
    return run_cli(main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
