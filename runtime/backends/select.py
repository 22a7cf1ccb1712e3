"""Choose and start the backend for an artifact, and say which one and why.

Selection loops over the registered backends, best first: TensorRT (an engine in the artifact
built for this machine's TensorRT and GPU), ONNX Runtime with CUDA, ONNX Runtime on the CPU. Each
backend's `probe(artifact)` gives the reasons it cannot run here; every backend's line (used, or
why not) goes to `say`. An engine that exists but cannot run here is also a warning that says how
to rebuild it (`edge-mm-engine build`, torch-free, on this machine).

First run: with `build=FirstRunBuild(...)` and no engine that runs here, a TensorRT that can build
on this machine (a GPU, or TensorRT-RTX with target compute capabilities) builds one from the
artifact's ONNX, caches it beside it with its sidecar, says so, and the loop goes on with it.

--backend tensorrt | ort-cuda | ort-cpu forces one; if it cannot run, that is an error, not a fallback.

Precision (auto): TensorRT fp16 > fp32 > int8 (among the engines present); ORT CUDA fp16 if the
artifact has model.fp16.onnx, else fp32; ORT CPU int8 when report.json says the int8 variant is
within tolerance of fp32 (it is the fastest there), else fp32 (CPUs have no fast fp16 path).
--precision forces one.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, List, Optional, Sequence, Tuple

from edge_mm.artifact import VARIANT_FILES, Artifact, variant_within_tolerance
from edge_mm.errors import ArtifactError, BackendError, EngineError, UsageError

log = logging.getLogger("edge_mm.runtime.select")

BACKENDS = ("auto", "tensorrt", "ort-cuda", "ort-cpu")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
TENSORRT_AUTO_ORDER = ("fp16", "fp32", "int8")


@dataclasses.dataclass
class Selection:
    """The started backend and a one-line account of the choice."""

    backend: Any  # runtime.backends.base.Backend, activated
    kind: str  # tensorrt | ort-cuda | ort-cpu
    precision: str
    reason: str
    warnings: List[str] = dataclasses.field(default_factory=list)
    considered: List[str] = dataclasses.field(default_factory=list)  # one line per registered backend

    @property
    def label(self) -> str:
        return f"{self.kind} {self.precision}"


@dataclasses.dataclass(frozen=True)
class FirstRunBuild:
    """Build a TensorRT engine on first run when none runs here (edge-mm-run without --no-build)."""

    flavour: Optional[str] = None  # None: the best installed
    target_sm: Optional[Sequence[str]] = None  # TensorRT-RTX ahead-of-time targets


@dataclasses.dataclass(frozen=True)
class Registered:
    """A backend that selection may start: its kind, and how to probe and start it (imported lazily)."""

    kind: str
    probe: Callable[[Artifact], List[str]]
    start: Callable[[Artifact, str, dict], Any]


def _trt_class():
    from runtime.backends.trt.runner import TensorRTBackend

    return TensorRTBackend


def _ort_class():
    from runtime.backends.onnxrt import OnnxRuntimeBackend

    return OnnxRuntimeBackend


REGISTERED = (
    Registered(
        "tensorrt",
        lambda a: _trt_class().probe(a),
        lambda a, p, o: _trt_class().from_artifact(a, p, cuda_graph=o.get("cuda_graph", False)),
    ),
    Registered(
        "ort-cuda",
        lambda a: _ort_class().probe(a, providers="cuda"),
        lambda a, p, o: _ort_class().from_artifact(a, p, providers="cuda", threads=o.get("threads")),
    ),
    Registered(
        "ort-cpu",
        lambda a: _ort_class().probe(a, providers="cpu"),
        lambda a, p, o: _ort_class().from_artifact(a, p, providers="cpu", threads=o.get("threads")),
    ),
)


def int8_within_tolerance(artifact: Artifact) -> bool:
    """report.json says the int8 variant stayed within the export's accuracy tolerance of fp32."""
    try:
        return variant_within_tolerance(artifact.report(), "int8")
    except ArtifactError:
        return False


def cpu_auto_precision(artifact: Artifact) -> Tuple[str, str]:
    """(precision, why) for ONNX Runtime on a CPU: int8 when the artifact vouches for it, else fp32.

    int8 (Q/DQ, per-channel weights) ran 1.36x faster than fp32 for the demo cdinet-s on a 2-core
    x86 CPU (70 vs 95 ms); fp16 is no faster than fp32 on CPUs without fp16 arithmetic.
    """
    variants = artifact.variants()
    if "int8" in variants and int8_within_tolerance(artifact):
        return "int8", "int8 (fastest on a CPU; report.json: within tolerance of fp32)"
    if "fp32" in variants:
        return "fp32", "fp32 (no int8 variant vouched for by report.json)"
    return variants[0], f"{variants[0]} (the only variant)"


def _first_run_build(
    artifact: Artifact,
    precisions: Sequence[str],
    build: FirstRunBuild,
    say: Callable[[str], None],
    warn: Callable[[str], None],
    forced: bool,
) -> None:
    """Build one engine for this machine (the first of `precisions` with an ONNX file).

    A failed build is a warning (the run goes on with ONNX Runtime), or the error with --backend tensorrt.
    """
    from runtime.backends.trt.engines import build_on_first_run

    variants = artifact.variants()
    wanted = next((p for p in precisions if p in variants), None)
    if wanted is None:
        return
    try:
        build_on_first_run(artifact.path, wanted, flavour=build.flavour, target_sm=build.target_sm, say=say)
    except EngineError as exc:
        if forced:
            raise
        warn(f"could not build a {wanted} TensorRT engine on first run: {exc}")


def _try_tensorrt(
    artifact: Artifact,
    precisions: Sequence[str],
    forced: bool,
    warn: Callable[[str], None],
    say: Callable[[str], None],
    cuda_graph: bool,
    build: Optional[FirstRunBuild],
) -> Tuple[Optional[Selection], List[str]]:
    """(the started TensorRT selection or None, the reasons TensorRT was not used)."""
    from runtime.backends.trt.loader import engine_reasons, this_machine

    rebuild = artifact.engine_command(precisions[0] if len(precisions) == 1 else None)
    if build is None and not forced and not artifact.engines():
        return None, ["no TensorRT engine in the artifact"]  # nothing to probe: TensorRT is not even imported
    machine = this_machine()
    usable = [p for p in precisions if engine_reasons(artifact, p, machine)[0] is not None]
    if not usable and build is not None:
        _first_run_build(artifact, precisions, build, say, warn, forced)
        machine = this_machine()
        usable = [p for p in precisions if engine_reasons(artifact, p, machine)[0] is not None]
    present = sorted({e.precision for e in artifact.engines()})
    if not present:
        if forced:
            raise EngineError(
                f"--backend tensorrt: artifact {artifact.path} holds no TensorRT engine; build one on this "
                f"machine with `{artifact.engine_command()}`"
            )
        return None, ["no TensorRT engine in the artifact"]
    reasons: List[str] = []
    for precision in precisions:
        if precision not in usable:
            reasons.extend(engine_reasons(artifact, precision, machine)[1])
            continue
        backend = None
        try:
            backend = REGISTERED[0].start(artifact, precision, {"cuda_graph": cuda_graph})
            backend.activate()
        except (EngineError, BackendError) as exc:
            reasons.append(str(exc))
            if backend is not None:
                backend.deactivate()
            continue
        reason = f"TensorRT engine {backend.engine_path.name} matches this machine"
        return Selection(backend, "tensorrt", precision, reason), []
    if not reasons:
        reasons = [f"no {'/'.join(precisions)} engine (engines present: {', '.join(present)})"]
    message = f"TensorRT engine not usable here: {'; '.join(reasons)}"
    if forced:
        raise EngineError(f"--backend tensorrt: {message}; rebuild it on this machine with `{rebuild}`")
    warn(f"{message}; falling back to ONNX Runtime (rebuild the engine here with `{rebuild}`)")
    return None, reasons


def select_backend(
    artifact: Artifact,
    backend: str = "auto",
    precision: str = "auto",
    *,
    threads: Optional[int] = None,
    cuda_graph: bool = False,
    warn: Optional[Callable[[str], None]] = None,
    say: Optional[Callable[[str], None]] = None,
    build: Optional[FirstRunBuild] = None,
) -> Selection:
    """Start the best backend for `artifact` (see the module docstring); raise if the forced one cannot run."""
    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    warnings: List[str] = []
    considered: List[str] = []

    def _warn(text: str) -> None:
        warnings.append(text)
        (warn or log.warning)(text)

    def _consider(kind: str, outcome: str) -> None:
        considered.append(f"{kind}: {outcome}")
        (say or log.info)(f"backend {kind}: {outcome}")

    def _chosen(selection: Selection) -> Selection:
        _consider(selection.kind, f"used ({selection.label})")
        selection.warnings, selection.considered = warnings, considered
        return selection

    artifact.spec  # fail early and clearly on an artifact without a readable model.onnx
    options = {"threads": threads, "cuda_graph": cuda_graph}
    variants = artifact.variants()
    for entry in REGISTERED:
        if backend not in ("auto", entry.kind):
            continue
        forced = backend == entry.kind
        if entry.kind == "tensorrt":
            order = TENSORRT_AUTO_ORDER if precision == "auto" else (precision,)
            chosen, reasons = _try_tensorrt(artifact, order, forced, _warn, say or log.info, cuda_graph, build)
            if chosen is not None:
                return _chosen(chosen)
            _consider(entry.kind, "not used (" + "; ".join(reasons) + ")")
            continue
        reasons = entry.probe(artifact)
        if reasons:
            if forced and entry.kind == "ort-cuda":
                raise BackendError(
                    f"--backend ort-cuda: {'; '.join(reasons)}; pip install onnxruntime-gpu (in place of "
                    "onnxruntime), or use --backend auto / ort-cpu"
                )
            if forced:
                raise BackendError(f"--backend {entry.kind}: {'; '.join(reasons)}")
            _consider(entry.kind, "not used (" + "; ".join(reasons) + ")")
            continue
        if entry.kind == "ort-cuda":
            chosen_precision = precision if precision != "auto" else ("fp16" if "fp16" in variants else "fp32")
            try:
                started = entry.start(artifact, chosen_precision, options)
                started.activate()
            except BackendError as exc:
                if forced:
                    raise
                _warn(f"ONNX Runtime CUDA did not start ({exc}); using the CPU")
                _consider(entry.kind, f"not used (did not start: {exc})")
                continue
            why = "forced by --backend" if forced else "no usable TensorRT engine; onnxruntime has CUDA"
            return _chosen(Selection(started, "ort-cuda", chosen_precision, why))
        if precision == "auto":
            chosen_precision, why_precision = cpu_auto_precision(artifact)
        else:
            chosen_precision, why_precision = precision, f"{precision} (--precision)"
        started = entry.start(artifact, chosen_precision, options)
        started.activate()
        if chosen_precision == "fp16":
            _warn("fp16 on ONNX Runtime CPU runs slower than fp32 (most CPUs have no fast fp16 kernels)")
        why = "forced by --backend" if forced else "no usable TensorRT engine and no CUDA in onnxruntime"
        return _chosen(Selection(started, "ort-cpu", chosen_precision, f"{why}; precision {why_precision}"))
    raise BackendError(f"no backend can run {artifact.path} here: {'; '.join(considered)}")


def describe_variants(artifact: Artifact) -> str:
    names = [VARIANT_FILES[p] for p in artifact.variants()] + [e.path.name for e in artifact.engines()]
    return ", ".join(names) if names else "nothing"
