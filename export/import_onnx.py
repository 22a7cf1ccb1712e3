"""`python -m export.import_onnx`: bring your own model. A third-party ONNX graph + a model card -> an artifact.

    python -m export.import_onnx my_sod.onnx --card my_sod.toml --out artifacts/my-sod
    python -m export.import_onnx --image image.onnx --text text.onnx --card my_clip.toml --out artifacts/my-clip
    python -m export.import_onnx my_sod.onnx --card my_sod.toml --out artifacts/my-sod \\
        --calib-source recording:run.bag --calib-count 32 --no-engine

The card (TOML, docs/model_card.md, examples in export/cards/) says what the graph's inputs are
(role, layout, colour order, size, mean/std, scaling, depth range and polarity, tokenizer) and what
its output means. It is checked against the graph first: a contradiction is one line naming both
sides, before anything is written. Then the artifact is written exactly as export.build_engine
writes one (same files, the spec in every file's metadata, fp16 and int8 variants, calibration
set, report.json against fp32, engines where a TensorRT can build), so edge-mm-run, edge-mm-index
and edge-mm-eval use it with no code change. Torch is not needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from calib.sampling import SOURCE_FORMS, sample
from calib.store import CalibrationSet
from edge_mm import __version__ as EDGE_MM_VERSION
from edge_mm.atomic import atomic_dir
from edge_mm.card import (
    GraphInfo,
    TensorInfo,
    card_kind,
    clip_specs_from_card,
    read_card,
    saliency_spec_from_card,
)
from edge_mm.cli_support import CliParser, install_sigterm_handler, run_cli
from edge_mm.errors import ArtifactError, CardError, UsageError
from edge_mm.hashing import sha256_file
from edge_mm.saliency_io import SaliencyIO
from edge_mm.spec import ModelSpec
from edge_mm.synthetic import SceneGenerator

# The artifact contract as today's export pipeline owns it (file names, report format, calibration
# manifest, output-folder checks). Kept behind these names so a later move of the contract into a
# core package is a change of imports here only.
from export import report as reporting
from export import variants
from export.metadata import attach_spec
from export.pipeline import (
    CALIBRATION,
    FILES,
    PRECISIONS,
    REPORT,
    REPORT_FORMAT,
    Progress,
    check_out_dir,
    file_entry,
    load_calibration_sets,
    trt_rtx_parse,
    write_json,
)

SMOKE_SEED = 20_000  # the scene the imported graph is first run on (neither calibration nor evaluation)
PROBABILITY_SLACK = 1e-3  # a "probability" output may stray this far outside [0, 1] (float error)


@dataclasses.dataclass
class ImportOptions:
    precisions: Sequence[str] = PRECISIONS
    calib_paths: Sequence[Path] = ()  # stored sets (python -m calib.build --model OUT ...)
    calib_source: str = "synthetic"  # calib.sampling source: synthetic, folder:DIR, recording:FILE
    text_calib_source: str = "synthetic"  # CLIP text graph: synthetic or captions:FILE
    calib_count: int = 64
    calib_seed: int = 0
    eval_count: int = 32
    eval_seed: int = reporting.EVAL_SEED
    threads: int = 0
    trt_parse_check: bool = True
    force: bool = False  # replace an --out that holds something other than an artifact of this family


# ---- the graph ------------------------------------------------------------------------------------


def load_graph(path: Path) -> onnx.ModelProto:
    """The ONNX file, loaded and checked; unreadable or invalid files are one line."""
    if not Path(path).is_file():
        raise UsageError(f"no ONNX file at {path}; pass the path of the model to import")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ArtifactError(f"{path} is not a readable ONNX file ({str(exc).splitlines()[0][:200]})") from None
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path} fails the ONNX checker ({first[:200]}); re-export it") from None
    return model


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    tensor = value.type.tensor_type
    try:
        dtype = str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)))
    except (KeyError, TypeError, ValueError):
        dtype = f"onnx-type-{tensor.elem_type}"
    dims = []
    for dim in tensor.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return TensorInfo(value.name, dtype, tuple(dims))


def graph_info(model: onnx.ModelProto, where: str) -> GraphInfo:
    initializers = {init.name for init in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    custom = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    return GraphInfo(
        inputs=tuple(_tensor_info(v) for v in model.graph.input if v.name not in initializers),
        outputs=tuple(_tensor_info(v) for v in model.graph.output),
        opset=int(opset),
        custom_domains=tuple(custom),
        where=where,
    )


def parameters_of(model: onnx.ModelProto) -> int:
    return int(sum(int(np.prod(init.dims)) for init in model.graph.initializer))


def adopt(model: onnx.ModelProto, spec: ModelSpec) -> onnx.ModelProto:
    """The graph as edge-mm ships it: dynamic input axes named as the spec names them (the engine
    profile's keys: batch, height, width), the spec in the metadata. Weights and nodes are untouched."""
    by_name = {t.name: t for t in spec.inputs}
    for value in model.graph.input:
        tensor = by_name.get(value.name)
        if tensor is None:
            continue
        for dim, named in zip(value.type.tensor_type.shape.dim, tensor.shape):
            if isinstance(named, str):
                dim.dim_param = named
    attach_spec(model, spec)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CardError(
            f"the graph's axes do not agree with the card's sizes ({first[:200]}); check the card's size and layout"
        ) from None
    return model


def identity(specs: Sequence[ModelSpec], sources: Sequence[Path], card_path: Path, card: Dict[str, Any]) -> None:
    """Fill what build_engine fills from the weights: their sha256, the exporter, where it came from."""
    digests = [sha256_file(p) for p in sources]
    combined = digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
    for spec in specs:
        spec.source_weights_sha256 = combined
        spec.exporter = {"edge_mm": EDGE_MM_VERSION, "onnx": onnx.__version__, "importer": "export.import_onnx"}
        spec.extra = dict(
            spec.extra,
            imported={"files": [p.name for p in sources], "sha256": digests, "card": card_path.name},
            card=card,
        )


# ---- calibration ------------------------------------------------------------------------------------


def calibration_set(spec: ModelSpec, source: str, options: ImportOptions, given: Dict[str, CalibrationSet]):
    if spec.kind in given:
        return given[spec.kind]
    arrays = sample(spec, source, options.calib_count, options.calib_seed, progress=True)
    manifest = {
        "model": spec.name,
        "kind": spec.kind,
        "source": source,
        "seed": options.calib_seed,
        "count": options.calib_count,
        "spec_digest": spec.digest(),
        "file": None,
        "rebuild": f"python -m calib.build --model OUT --source {source} --count {options.calib_count} "
        f"--seed {options.calib_seed}" + (" --graph text" if spec.kind == "clip-text" else ""),
    }
    return CalibrationSet(manifest=manifest, arrays=arrays)


def write_variants(folder: Path, calib: Optional[CalibrationSet], options: ImportOptions) -> Dict[str, Any]:
    """fp16 and int8 beside model.onnx, with export.variants' default policies (no model-specific search)."""
    fp32 = onnx.load(str(folder / FILES["fp32"]))
    policies: Dict[str, Any] = {}
    if "fp16" in options.precisions:
        policies["fp16"] = fp16_in_child(folder / FILES["fp32"], folder / FILES["fp16"])
    if "int8" in options.precisions:
        model, _ = variants.make_int8(fp32, list(calib.batches(1)))
        onnx.save(model, str(folder / FILES["int8"]))
        policies["int8"] = {**variants.int8_defaults(), "excluded_nodes": [], "qdq": variants.summary(model)}
    return policies


_FP16_CHILD = """
import json, sys
import onnx
from export import variants
model, policy = variants.make_fp16(onnx.load(sys.argv[1]))
onnx.save(model, sys.argv[2])
print(json.dumps(policy))
"""


def fp16_in_child(source: Path, target: Path) -> Dict[str, Any]:
    """export.variants.make_fp16 in a child process.

    The conversion ends by loading the FP16 graph in ONNX Runtime, and some third-party graphs crash
    it there rather than raise (ORT 1.32's full optimisation level on open_clip's FP16 image tower
    dies with SIGSEGV), or the converter cannot handle a graph. Either way the import goes on without
    the fp16 variant and the report says why (fp32 and int8 do not depend on it).
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path]))
    partial = target.with_name(target.name + ".partial")
    done = subprocess.run(
        [sys.executable, "-c", _FP16_CHILD, str(source), str(partial)], capture_output=True, text=True, env=env
    )
    if done.returncode == 0:
        partial.replace(target)
        return json.loads(done.stdout.strip().splitlines()[-1])
    partial.unlink(missing_ok=True)
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    if done.returncode > 0 and errors:  # an edge_mm error (e.g. the converter broke the graph): its one line
        reason = f"not written: {errors[-1].split(': ', 1)[-1][:300]}"
    else:
        reason = f"not written: the conversion or ONNX Runtime loading the FP16 graph crashed (exit {done.returncode})"
    print(f"      fp16: {reason}")
    return {"written": False, "reason": reason}


# ---- running the imported graph ---------------------------------------------------------------------


def _ort(path: Path, threads: int):
    from runtime.backends.onnxrt import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, providers="cpu", threads=threads or None)


def saliency_probabilities(path: Path, io: SaliencyIO, scenes: Sequence[Any], threads: int) -> np.ndarray:
    """(N, 1, H, W) probabilities at each scene's size, through the runtime's own feeds and postprocessing."""
    out = []
    with _ort(path, threads) as backend:
        for scene in scenes:
            pred = io.maps(backend.infer(io.feeds([scene.bgr], [scene.depth_m])))[0]
            out.append(io.probability(pred, scene.mask.shape)[None])
    return np.stack(out)


def smoke_check(path: Path, spec: ModelSpec, threads: int) -> None:
    """Run the graph once on a synthetic scene; a 'probability' output outside [0, 1] contradicts the card."""
    io = SaliencyIO.from_spec(spec)
    scene = SceneGenerator(size=io.size, seed=SMOKE_SEED).generate(0)
    with _ort(path, threads) as backend:
        maps = io.maps(backend.infer(io.feeds([scene.bgr], [scene.depth_m])))
    lo, hi = float(maps.min()), float(maps.max())
    if not np.isfinite([lo, hi]).all():
        raise CardError(
            f"the graph's output {io.output.name!r} is not finite on a synthetic scene; check the card's mean/std"
        )
    if not io.logits and (lo < -PROBABILITY_SLACK or hi > 1 + PROBABILITY_SLACK):
        raise CardError(
            f"card [output] meaning = 'probability' but the graph's {io.output.name!r} gave values in "
            f"[{lo:.3g}, {hi:.3g}]; set meaning = 'logits'"
        )


def evaluate_saliency(paths: Dict[str, Path], spec: ModelSpec, options: ImportOptions) -> Dict[str, Any]:
    io = SaliencyIO.from_spec(spec)
    generator = SceneGenerator(size=io.size, seed=options.eval_seed)
    scenes = [generator.generate(i) for i in range(options.eval_count)]
    gts = np.stack([s.mask for s in scenes])
    probs = {p: saliency_probabilities(path, io, scenes, options.threads) for p, path in paths.items()}
    return reporting.cdinet_variant_scores(probs, gts)


# ---- the artifact ---------------------------------------------------------------------------------


def _report(spec: ModelSpec, model: onnx.ModelProto, source: Path, card_path: Path) -> Dict[str, Any]:
    return {
        "format": REPORT_FORMAT,
        "model": spec.name,
        "kind": spec.kind,
        "edge_mm": EDGE_MM_VERSION,
        "weights": {"source": "import", "file": str(source), "sha256": sha256_file(source), "card": str(card_path)},
        "parameters": parameters_of(model),
        "spec_digest": spec.digest(),
        "opset": graph_info(model, str(source)).opset,
    }


def _evaluation_header(options: ImportOptions, **more: Any) -> Dict[str, Any]:
    return {
        "source": "synthetic",
        "seed": options.eval_seed,
        "scenes": options.eval_count,
        "runtime": "onnxruntime cpu (runtime.backends.onnxrt)",
        **more,
    }


def _finish(folder: Path, paths: Dict[str, Path], rep: Dict[str, Any], options: ImportOptions) -> None:
    rep["files"] = {p: file_entry(path) for p, path in paths.items()}
    if options.trt_parse_check:
        parsed = trt_rtx_parse(paths)
        rep["tensorrt_rtx_parser"] = parsed if parsed is not None else "tensorrt_rtx not installed"
        bad = {p: r for p, r in (parsed or {}).items() if r != "ok"}
        if "fp32" in bad:
            raise CardError(
                f"TensorRT-RTX's ONNX parser rejects the graph ({bad['fp32'][:200]}); export it with supported operators"
            )


def _variant_paths(folder: Path) -> Dict[str, Path]:
    return {p: folder / FILES[p] for p in PRECISIONS if (folder / FILES[p]).is_file()}


def import_saliency(
    onnx_path: Path, card_path: Path, out: Path, options: ImportOptions, say: Callable[[str], None] = print
) -> Dict[str, Any]:
    card = read_card(card_path)
    model = load_graph(onnx_path)
    spec = saliency_spec_from_card(
        card, graph_info(model, str(onnx_path)), onnx_path.stem, "int8" in options.precisions
    )
    identity([spec], [onnx_path], card_path, card)
    given = load_calibration_sets(options.calib_paths, [spec]) if options.calib_paths else {}
    check_out_dir(out, force=options.force)
    progress = Progress(5, say)
    with atomic_dir(out) as tmp:
        rep = _report(spec, model, onnx_path, card_path)
        with progress.stage("onnx", f"{onnx_path.name}: card checked against the graph, spec attached, one run"):
            onnx.save(adopt(model, spec), str(tmp / FILES["fp32"]))
            smoke_check(tmp / FILES["fp32"], spec, options.threads)
        with progress.stage("calibration", options.calib_source if not given else "the given set"):
            calib = (
                calibration_set(spec, options.calib_source, options, given) if "int8" in options.precisions else None
            )
            if calib is not None:
                rep["calibration"] = dict(calib.manifest, count=calib.count)
                write_json(tmp / CALIBRATION, rep["calibration"])
        with progress.stage("variants", ", ".join(p for p in options.precisions if p != "fp32") or "none asked"):
            rep["policy"] = write_variants(tmp, calib, options)
        paths = _variant_paths(tmp)
        with progress.stage("evaluation", f"variants vs fp32 on {options.eval_count} synthetic scenes"):
            rep["variants"] = evaluate_saliency(paths, spec, options)
            rep["evaluation"] = _evaluation_header(
                options, size=list(spec.preprocess["size"]), s_measure_tolerance=reporting.SOD_TOLERANCE
            )
        with progress.stage(
            "checks", "TensorRT-RTX ONNX parser on every file" if options.trt_parse_check else "skipped"
        ):
            _finish(tmp, paths, rep, options)
        rep["timings_s"] = dict(progress.timings)
        write_json(tmp / REPORT, rep)
    return rep


def import_clip(
    image_path: Path,
    text_path: Path,
    card_path: Path,
    out: Path,
    options: ImportOptions,
    say: Callable[[str], None] = print,
) -> Dict[str, Any]:
    card = read_card(card_path)
    image_model, text_model = load_graph(image_path), load_graph(text_path)
    image_spec, text_spec = clip_specs_from_card(
        card,
        graph_info(image_model, f"the image graph {image_path.name}"),
        graph_info(text_model, f"the text graph {text_path.name}"),
        image_path.stem,
        "int8" in options.precisions,
    )
    identity([image_spec, text_spec], [image_path, text_path], card_path, card)
    given = load_calibration_sets(options.calib_paths, [image_spec, text_spec]) if options.calib_paths else {}
    check_out_dir(out, force=options.force)
    progress = Progress(5, say)
    graphs = [("image", image_spec, image_model, image_path), ("text", text_spec, text_model, text_path)]
    with atomic_dir(out) as tmp:
        reports: Dict[str, Dict[str, Any]] = {}
        with progress.stage("onnx", "card checked against both graphs, specs attached"):
            for role, spec, model, source in graphs:
                (tmp / role).mkdir()
                reports[role] = _report(spec, model, source, card_path)
                onnx.save(adopt(model, spec), str(tmp / role / FILES["fp32"]))
        with progress.stage("calibration", f"image {options.calib_source}, text {options.text_calib_source}"):
            sets: Dict[str, Optional[CalibrationSet]] = {}
            for role, spec, _, _ in graphs:
                source = options.calib_source if role == "image" else options.text_calib_source
                sets[role] = calibration_set(spec, source, options, given) if "int8" in options.precisions else None
                if sets[role] is not None:
                    reports[role]["calibration"] = dict(sets[role].manifest, count=sets[role].count)
                    write_json(tmp / role / CALIBRATION, reports[role]["calibration"])
        with progress.stage("variants", ", ".join(p for p in options.precisions if p != "fp32") or "none asked"):
            for role, _, _, _ in graphs:
                reports[role]["policy"] = write_variants(tmp / role, sets[role], options)
        image_paths, text_paths = _variant_paths(tmp / "image"), _variant_paths(tmp / "text")
        with progress.stage("evaluation", f"variants vs fp32 on {options.eval_count} synthetic scenes"):
            eval_set = reporting.clip_eval_set(image_spec, text_spec, options.eval_count, options.eval_seed)
            images, texts = reporting.clip_embeddings(
                image_paths,
                text_paths,
                eval_set,
                options.threads,
                image_spec.inputs[0].name,
                text_spec.inputs[0],
                (image_spec.outputs[0].name, text_spec.outputs[0].name),
            )
            reports["image"]["variants"], reports["text"]["variants"], combined = reporting.clip_variant_scores(
                images, texts, eval_set["crop_labels"]
            )
            header = _evaluation_header(
                options, crops=len(eval_set["crops"]), captions=len(eval_set["captions"]), prompt=reporting.CLIP_PROMPT
            )
        with progress.stage(
            "checks", "TensorRT-RTX ONNX parser on every file" if options.trt_parse_check else "skipped"
        ):
            for role, paths in (("image", image_paths), ("text", text_paths)):
                reports[role]["evaluation"] = header
                _finish(tmp / role, paths, reports[role], options)
        for role in reports:
            reports[role]["timings_s"] = dict(progress.timings)
            write_json(tmp / role / REPORT, reports[role])
        top = {
            "format": REPORT_FORMAT,
            "model": image_spec.name,
            "kind": "clip",
            "edge_mm": EDGE_MM_VERSION,
            "weights": {"source": "import", "card": str(card_path), "sha256": image_spec.source_weights_sha256},
            "graphs": {"image": "image/", "text": "text/"},
            "evaluation": header,
            "combined": combined,
            "timings_s": dict(progress.timings),
        }
        write_json(tmp / REPORT, top)
    return top


# ---- command line -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from export.build_engine import _precisions

    parser = CliParser(prog="python -m export.import_onnx", description=__doc__)
    parser.add_argument(
        "model", nargs="?", type=Path, help="the ONNX file of a saliency model (rgbd- or rgb-saliency card)"
    )
    parser.add_argument("--image", type=Path, help="CLIP-like: the image encoder's ONNX file")
    parser.add_argument("--text", type=Path, help="CLIP-like: the text encoder's ONNX file")
    parser.add_argument("--card", type=Path, required=True, help="the model card (TOML; docs/model_card.md)")
    parser.add_argument("--out", type=Path, required=True, help="artifact folder to write (replaced atomically)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace --out even if it holds something other than an artifact of this kind",
    )
    parser.add_argument(
        "--precision", type=_precisions, default=list(PRECISIONS), help="variants and engines (default fp32,fp16,int8)"
    )
    parser.add_argument(
        "--calib-source", default="synthetic", help=f"where int8 calibration samples come from: {SOURCE_FORMS}"
    )
    parser.add_argument(
        "--text-calib-source", default="synthetic", help="CLIP-like text graph: synthetic or captions:FILE.txt"
    )
    parser.add_argument(
        "--calib", type=Path, action="append", default=[], help="stored set(s) from python -m calib.build"
    )
    parser.add_argument("--calib-count", type=int, default=64, help="calibration samples (default 64)")
    parser.add_argument("--calib-seed", type=int, default=0)
    parser.add_argument(
        "--eval-count", type=int, default=32, help="held-out synthetic scenes for report.json (default 32)"
    )
    parser.add_argument("--eval-seed", type=int, default=reporting.EVAL_SEED)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime CPU threads (default: its own)")
    engine = parser.add_argument_group(
        "engines (runtime.backends.trt, as export.build_engine and edge-mm-engine build)"
    )
    engine.add_argument("--no-engine", action="store_true", help="stop after the ONNX stage")
    engine.add_argument("--flavour", choices=("tensorrt", "tensorrt_rtx", "trtexec"))
    engine.add_argument("--target-sm", action="append", help="TensorRT-RTX ahead-of-time target, e.g. 86 (repeatable)")
    engine.add_argument("--workspace-mb", type=int, default=1024)
    engine.add_argument("--verify", action="store_true", help="run each engine against ONNX Runtime FP32")
    return parser


def _sources(args: argparse.Namespace, kind: str) -> Tuple[Path, ...]:
    if kind == "clip":
        if args.model is not None or args.image is None or args.text is None:
            raise UsageError(
                "a 'clip' card imports two graphs: pass --image IMAGE.onnx --text TEXT.onnx (no MODEL.onnx)"
            )
        return args.image, args.text
    if args.model is None or args.image is not None or args.text is not None:
        raise UsageError(f"a {kind!r} card imports one graph: pass MODEL.onnx (not --image/--text)")
    return (args.model,)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from export.build_engine import EngineOptions, build_engines, verify_engines

    args = build_parser().parse_args(argv)
    if args.threads < 0 or args.calib_count < 1 or args.eval_count < 1:
        raise UsageError("--threads must be >= 0 and --calib-count, --eval-count >= 1")
    kind = card_kind(read_card(args.card))
    sources = _sources(args, kind)
    # Before any graph is read: --out must not hold what is not ours (a CLIP artifact for a saliency import, ...).
    check_out_dir(args.out, "clip" if kind == "clip" else "saliency", args.force)
    options = ImportOptions(
        force=args.force,
        precisions=args.precision,
        calib_paths=args.calib,
        calib_source=args.calib_source,
        text_calib_source=args.text_calib_source,
        calib_count=args.calib_count,
        calib_seed=args.calib_seed,
        eval_count=args.eval_count,
        eval_seed=args.eval_seed,
        threads=args.threads,
    )
    start = time.perf_counter()
    if kind == "clip":
        summary = import_clip(sources[0], sources[1], args.card, args.out, options)
        for precision, entry in summary["combined"].items():
            print(f"  {precision}: zero-shot top-1 agreement {entry['zero_shot_top1_agreement']:.3f}")
    else:
        summary = import_saliency(sources[0], args.card, args.out, options)
        for precision, entry in summary["variants"].items():
            drop = entry.get("s_measure_drop")
            print(
                f"  {precision}: S-measure {entry['sod']['s_measure']:.4f}"
                + (f", drop {drop:+.4f}" if drop is not None else "")
            )
    print(f"wrote {args.out} ({', '.join(args.precision)}) in {time.perf_counter() - start:.1f} s")
    engine_options = EngineOptions(
        no_engine=args.no_engine, flavour=args.flavour, target_sm=args.target_sm, workspace_mb=args.workspace_mb
    )
    result = build_engines(args.out, args.precision, engine_options)
    for entry in result["engines"]:
        print(f"engine: {args.out / entry['engine']} ({'reused' if entry['reused'] else 'built'})")
    if args.verify:
        verify_engines(args.out, result)
    return 0


def cli(argv: Optional[List[str]] = None) -> int:
    install_sigterm_handler()  # `kill` behaves like Ctrl-C (exit 143): the temporary artifact folder is removed
    return run_cli(main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
