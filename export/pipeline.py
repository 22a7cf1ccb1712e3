"""The ONNX stage of `python -m export.build_engine`: one artifact folder, written atomically.

    CDINet  OUT/model.onnx model.fp16.onnx model.int8.onnx report.json calibration.json
    CLIP    OUT/image/{same files}  OUT/text/{same files}  OUT/report.json (both graphs together)

Order: the graphs' specs come first, so a calibration set made for another spec is refused before
any work; then per graph: export + checker + parity against PyTorch, precision variants, and the
held-out evaluation. Everything is written into a temporary folder beside OUT that replaces OUT
only when all of it succeeded (edge_mm.atomic.atomic_dir): a failure leaves OUT as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import onnx

from calib.sampling import sample
from calib.store import CalibrationSet, read_set
from edge_mm import __version__ as EDGE_MM_VERSION
from edge_mm.artifact import PRECISIONS, REPORT_FILE, REPORT_FORMAT, VARIANT_FILES
from edge_mm.artifact_kind import check_build_target
from edge_mm.atomic import atomic_dir
from edge_mm.errors import CalibrationError, UsageError
from edge_mm.hashing import sha256_file
from edge_mm.spec import ModelSpec
from export import report, variants

if TYPE_CHECKING:  # torch lives behind these; the helpers below also serve export.import_onnx, which is torch-free
    from export.models import LoadedModel
    from export.onnx import Graph, Profile

FILES = VARIANT_FILES  # the artifact contract's file names (edge_mm.artifact.layout)
REPORT = REPORT_FILE
CALIBRATION = "calibration.json"
ARTIFACT_MARKERS = ("model.onnx", "report.json", "image/model.onnx", "text/model.onnx")


@dataclasses.dataclass
class ExportOptions:
    precisions: Sequence[str] = PRECISIONS  # variants to write besides model.onnx (fp32 is always written)
    calib_paths: Sequence[Path] = ()  # stored sets (python -m calib.build); default: synthetic
    calib_count: int = 64
    calib_seed: int = 0
    eval_count: int = 32  # held-out scenes (CDINet) or scenes whose objects are cropped (CLIP)
    eval_seed: int = report.EVAL_SEED
    selection_count: int = 16  # CDINet INT8 exclusion search
    int8_budget: float = variants.CDINET_SELECTION_BUDGET
    threads: int = 0  # ONNX Runtime intra-op threads (0: its default)
    profile: Optional["Profile"] = None  # TensorRT profile hints in the spec (None: export.onnx.Profile())
    trt_parse_check: bool = True  # parse every variant with TensorRT-RTX when it is installed
    force: bool = False  # replace an --out that holds something other than an artifact of this model family


# ---- progress lines ------------------------------------------------------------------------------


class Progress:
    """'[3/6] variants ...' lines with the time each stage took."""

    def __init__(self, total: int, say: Callable[[str], None] = print) -> None:
        self.total, self.index, self.say = total, 0, say
        self.timings: Dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self.index += 1
        self.say(f"[{self.index}/{self.total}] {name}: {what}")
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.timings[name] = round(self.timings.get(name, 0.0) + seconds, 2)
        self.say(f"      {name} done in {seconds:.1f} s")


# ---- output folder checks ------------------------------------------------------------------------


def check_out_dir(out: Path, model_name: str = "", force: bool = False) -> None:
    """Refuse an --out that cannot become an artifact folder, or that holds what is not ours, before any work."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; choose a folder path")
    if not force and out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in ARTIFACT_MARKERS):
        raise UsageError(
            f"--out {out} is a non-empty folder that is not an edge-mm artifact; "
            "choose a new or empty folder (or add --force to replace it)"
        )
    if model_name:
        # A CLIP artifact is not replaced by a CDINet one (nor the reverse) without --force.
        check_build_target(out, model_name, force)
    parent = out.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out {out} cannot be created: {probe} is a file; choose another folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        marker = parent / f".{out.name}.write-test"
        marker.mkdir()
        marker.rmdir()
    except OSError as exc:
        raise UsageError(
            f"--out {out} is not writable ({exc.strerror or exc}); choose a folder you can write to"
        ) from None


# ---- calibration ----------------------------------------------------------------------------------


def load_calibration_sets(paths: Sequence[Path], specs: Sequence[ModelSpec]) -> Dict[str, CalibrationSet]:
    """{spec kind: set} for the given files; each must match one graph's spec exactly."""
    by_kind = {spec.kind: spec for spec in specs}
    chosen: Dict[str, CalibrationSet] = {}
    for path in paths:
        calib_set = read_set(path)
        kind = calib_set.manifest.get("kind")
        spec = by_kind.get(kind)
        if spec is None:
            wanted = " or ".join(by_kind)
            raise CalibrationError(
                f"calibration set {path} is for a {kind!r} graph ({calib_set.manifest.get('model')!r}), this model needs {wanted}; "
                f"rebuild it with `python -m calib.build --model {specs[0].name} ...`"
            )
        calib_set.check_spec(spec, where=f" {path}")
        if kind in chosen:
            raise CalibrationError(f"two calibration sets given for the {kind} graph; pass one --calib per graph")
        chosen[kind] = calib_set
        chosen[kind].manifest = dict(calib_set.manifest, file=str(path), sha256=sha256_file(path))
    return chosen


def default_calibration(spec: ModelSpec, count: int, seed: int) -> CalibrationSet:
    arrays = sample(spec, "synthetic", count, seed, progress=False)
    manifest = {
        "model": spec.name,
        "kind": spec.kind,
        "source": "synthetic",
        "seed": seed,
        "count": count,
        "spec_digest": spec.digest(),
        "file": None,
        "rebuild": f"python -m calib.build --model {spec.name} --source synthetic --count {count} --seed {seed}"
        + (" --graph text" if spec.kind == "clip-text" else ""),
    }
    return CalibrationSet(manifest=manifest, arrays=arrays)


def calibration_feeds(calib_set: CalibrationSet) -> List[Dict[str, np.ndarray]]:
    return list(calib_set.batches(1))


# ---- JSON ------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Dict[str, Any]) -> None:
    path.write_text(json.dumps(_plain(data), indent=1, sort_keys=False) + "\n", encoding="utf-8")


def file_entry(path: Path) -> Dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def trt_rtx_parse(paths: Dict[str, Path]) -> Optional[Dict[str, str]]:
    """TensorRT-RTX's ONNX parser on every variant ('ok' or its first error), or None if absent."""
    from export.precision import trt_rtx_check

    if not trt_rtx_check.available():
        return None
    result = {}
    for precision, path in paths.items():
        errors = trt_rtx_check.trt_rtx_parses(path.read_bytes())
        result[precision] = "ok" if not errors else errors[0][:300]
    return result


# ---- one graph -------------------------------------------------------------------------------------


@dataclasses.dataclass
class GraphResult:
    graph: Graph
    folder: Path
    paths: Dict[str, Path]
    report: Dict[str, Any]


def _base_report(loaded: LoadedModel, graph: Graph) -> Dict[str, Any]:
    from export.onnx import OPSET

    return {
        "format": REPORT_FORMAT,
        "model": loaded.name.text,
        "kind": graph.spec.kind,
        "edge_mm": EDGE_MM_VERSION,
        "weights": loaded.weights,
        "parameters": loaded.parameters,
        "spec_digest": graph.spec.digest(),
        "opset": OPSET,
    }


def export_fp32(graph: Graph, folder: Path, threads: int) -> Dict[str, Any]:
    """model.onnx + its parity report (the torch reference is computed before the export)."""
    from export import parity
    from export.onnx import export_graph

    cases = parity.parity_cases(graph.spec)
    references = parity.reference_outputs(graph, cases)
    export_graph(graph, folder / FILES["fp32"])
    return parity.check_parity(graph, folder / FILES["fp32"], cases, references, threads)


def cdinet_int8(fp32: onnx.ModelProto, spec: ModelSpec, feeds, folder: Path, options: ExportOptions, say) -> tuple:
    """CDINet's INT8 graph with layer exclusions chosen on the selection split (see export.variants)."""
    selection = report.cdinet_eval_set(spec, options.selection_count, report.SELECTION_SEED)
    inputs = {"rgb": selection["rgb"], "depth": selection["depth"]}
    reference = report.run_onnx(folder / FILES["fp32"], inputs, options.threads, report.CDINET_BATCH)
    reference_s = report.s_measure_of(report.sod_scores(report.to_u8(reference), selection["gt"]))
    probe = folder / ".selection.int8.onnx"

    def score(model: onnx.ModelProto) -> Dict[str, Any]:
        onnx.save(model, str(probe))
        probs = report.run_onnx(probe, inputs, options.threads, report.CDINET_BATCH)
        s = report.s_measure_of(report.sod_scores(report.to_u8(probs), selection["gt"]))
        return {"s_measure_drop": reference_s - s, "mae_vs_fp32": float(np.abs(probs - reference).mean())}

    try:
        model, policy = variants.search_cdinet_int8(fp32, feeds, score, options.int8_budget, progress=say)
    finally:
        probe.unlink(missing_ok=True)
    policy["search"].update(
        selection={"source": "synthetic", "seed": report.SELECTION_SEED, "count": options.selection_count}
    )
    return model, policy


def make_variants(
    graph: Graph, folder: Path, calib_set: Optional[CalibrationSet], options: ExportOptions, say
) -> Dict[str, Any]:
    fp32 = onnx.load(str(folder / FILES["fp32"]))
    policies: Dict[str, Any] = {}
    if "fp16" in options.precisions:
        model, policies["fp16"] = variants.make_fp16(fp32)
        onnx.save(model, str(folder / FILES["fp16"]))
    if "int8" in options.precisions:
        feeds = calibration_feeds(calib_set)
        if graph.spec.kind == "cdinet":
            model, extra = cdinet_int8(fp32, graph.spec, feeds, folder, options, say)
        else:
            model, _ = variants.make_int8(fp32, feeds)
            extra = {"excluded_nodes": [], "float_groups": []}
        onnx.save(model, str(folder / FILES["int8"]))
        policies["int8"] = {**variants.int8_defaults(), **extra, "qdq": variants.summary(model)}
    return policies


# ---- held-out evaluation ---------------------------------------------------------------------------


def _evaluation_header(options: ExportOptions) -> Dict[str, Any]:
    return {
        "source": "synthetic",
        "seed": options.eval_seed,
        "scenes": options.eval_count,
        "runtime": "onnxruntime cpu (runtime.backends.onnxrt)",
    }


def evaluate_cdinet(results: List[GraphResult], options: ExportOptions) -> tuple:
    """Fills report["variants"]; returns (evaluation header, {})."""
    (only,) = results
    eval_set = report.cdinet_eval_set(only.graph.spec, options.eval_count, options.eval_seed)
    only.report["variants"] = report.cdinet_report(only.paths, eval_set, options.threads)
    header = dict(
        _evaluation_header(options),
        size=list(only.graph.spec.preprocess["size"]),
        s_measure_tolerance=report.SOD_TOLERANCE,
    )
    return header, {}


def evaluate_clip(results: List[GraphResult], options: ExportOptions) -> tuple:
    """Fills each graph's report["variants"]; returns (evaluation header, {"combined": both graphs together})."""
    image, text = results
    eval_set = report.clip_eval_set(image.graph.spec, text.graph.spec, options.eval_count, options.eval_seed)
    images, texts = report.clip_embeddings(image.paths, text.paths, eval_set, options.threads)
    image.report["variants"], text.report["variants"], combined = report.clip_variant_scores(
        images, texts, eval_set["crop_labels"]
    )
    header = dict(
        _evaluation_header(options),
        crops=len(eval_set["crops"]),
        classes=len(report.class_names()),
        captions=len(eval_set["captions"]),
        prompt=report.CLIP_PROMPT,
    )
    return header, {"combined": combined}


# ---- the whole artifact ------------------------------------------------------------------------------


def export_artifact(
    loaded: LoadedModel, out: Path, options: ExportOptions = ExportOptions(), say: Callable[[str], None] = print
) -> Dict[str, Any]:
    """Write the artifact of `loaded` to `out` (atomically); returns the top-level report."""
    unknown = sorted(set(options.precisions) - set(PRECISIONS))
    if unknown:
        raise UsageError(f"unknown precision(s) {unknown}; use fp32, fp16 and/or int8")
    out = Path(out)
    check_out_dir(out, loaded.name.text, options.force)
    from export.onnx import Profile, graphs_for

    graphs = graphs_for(loaded, options.profile or Profile())
    is_clip = loaded.family == "clip"
    wants_int8 = "int8" in options.precisions
    given = load_calibration_sets(options.calib_paths, [g.spec for g in graphs]) if options.calib_paths else {}
    if given and not wants_int8:
        say("note: --calib is only used for the int8 variant, which was not asked for")
    progress = Progress(5, say)

    with atomic_dir(out) as tmp:
        results: List[GraphResult] = []
        for graph in graphs:
            folder = tmp / graph.role if is_clip else tmp
            folder.mkdir(exist_ok=True)
            results.append(GraphResult(graph, folder, {}, _base_report(loaded, graph)))

        with progress.stage("onnx", "export (opset 17, dynamic batch), onnx.checker full check, parity vs PyTorch"):
            for r in results:
                r.report["parity"] = export_fp32(r.graph, r.folder, options.threads)
                r.paths["fp32"] = r.folder / FILES["fp32"]
                say(
                    f"      {r.graph.spec.kind}: parity max|diff| {r.report['parity']['max_abs']:.2e}, "
                    f"min cosine {r.report['parity']['cosine_min']:.7f}"
                )

        with progress.stage(
            "calibration",
            "checking the given set(s)"
            if given
            else f"synthetic, {options.calib_count} samples, seed {options.calib_seed}",
        ):
            sets: Dict[str, Optional[CalibrationSet]] = {}
            for r in results:
                kind = r.graph.spec.kind
                if not wants_int8:
                    sets[kind] = None
                    continue
                sets[kind] = given.get(kind) or default_calibration(
                    r.graph.spec, options.calib_count, options.calib_seed
                )
                manifest = dict(sets[kind].manifest, count=sets[kind].count)
                r.report["calibration"] = manifest
                write_json(r.folder / CALIBRATION, manifest)

        with progress.stage("variants", ", ".join(p for p in options.precisions if p != "fp32") or "none asked"):
            for r in results:
                r.report["policy"] = make_variants(r.graph, r.folder, sets[r.graph.spec.kind], options, say)
                for precision in PRECISIONS:
                    if (r.folder / FILES[precision]).is_file():
                        r.paths[precision] = r.folder / FILES[precision]

        with progress.stage(
            "evaluation",
            f"variants vs fp32 on held-out synthetic data (seed {options.eval_seed}, {options.eval_count} scenes)",
        ):
            evaluation, summary = (evaluate_clip if is_clip else evaluate_cdinet)(results, options)
            for r in results:
                r.report["evaluation"] = evaluation

        with progress.stage(
            "checks", "TensorRT-RTX ONNX parser on every file" if options.trt_parse_check else "skipped"
        ):
            for r in results:
                r.report["files"] = {p: file_entry(path) for p, path in r.paths.items()}
                if options.trt_parse_check:
                    parsed = trt_rtx_parse(r.paths)
                    r.report["tensorrt_rtx_parser"] = parsed if parsed is not None else "tensorrt_rtx not installed"

        for r in results:
            r.report["timings_s"] = dict(progress.timings)
            write_json(r.folder / REPORT, r.report)
        top = (
            results[0].report
            if not is_clip
            else {
                "format": REPORT_FORMAT,
                "model": loaded.name.text,
                "kind": "clip",
                "edge_mm": EDGE_MM_VERSION,
                "weights": loaded.weights,
                "graphs": {r.graph.role: f"{r.graph.role}/" for r in results},
                "parity": {
                    r.graph.role: {k: r.report["parity"][k] for k in ("max_abs", "cosine_min", "passed")}
                    for r in results
                },
                "evaluation": evaluation,
                **summary,
                "timings_s": dict(progress.timings),
            }
        )
        if is_clip:
            write_json(tmp / REPORT, top)
    return top
