"""Choose and start the backend for an artifact, and say which one and why.

auto:  a TensorRT engine in the artifact that was built for this machine's TensorRT and GPU
       -> TensorRT; else ONNX Runtime with CUDA if this onnxruntime has it; else ONNX Runtime on
       the CPU. An engine that cannot run here (another GPU or TensorRT version, no GPU, TensorRT
       missing) is skipped with a warning that says why and how to rebuild it.
--backend tensorrt | ort-cuda | ort-cpu forces one; if it cannot run, that is an error, not a fallback.

Precision (auto): TensorRT fp16 > fp32 > int8 (among the engines present); ORT CUDA fp16 if the
artifact has model.fp16.onnx, else fp32; ORT CPU int8 when report.json says the int8 variant is
within tolerance of fp32 (it is the fastest there), else fp32 (CPUs have no fast fp16 path).
--precision forces one.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, List, Optional, Sequence, Tuple

from edge_mm.errors import ArtifactError, BackendError, EngineError, UsageError
from runtime.artifact import VARIANT_FILES, Artifact

log = logging.getLogger("edge_mm.runtime.select")

BACKENDS = ("auto", "tensorrt", "ort-cuda", "ort-cpu")
PRECISIONS = ("auto", "fp32", "fp16", "int8")
TENSORRT_AUTO_ORDER = ("fp16", "fp32", "int8")


@dataclasses.dataclass
class Selection:
    """The started backend and a one-line account of the choice."""

    backend: object  # runtime.backends.base.Backend, activated
    kind: str  # tensorrt | ort-cuda | ort-cpu
    precision: str
    reason: str
    warnings: List[str] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.precision}"


def engine_problems(artifact: Artifact, precision: str, gpu_sm: Optional[int]) -> List[str]:
    """Why each `precision` engine in the artifact cannot run here; [] means at least one can (or none exist)."""
    from runtime.backends import tensorrt as trt_backend

    problems = []
    entries = [e for e in artifact.engines() if e.precision == precision]
    for entry in entries:
        if entry.sidecar is None:
            problems.append(f"{entry.path.name}: {entry.problem}")
            continue
        info = entry.sidecar.get("tensorrt") or {}
        flavour = str(info.get("flavour", ""))
        installed = trt_backend.installed_version(flavour) if flavour in trt_backend.PYTHON_MODULES else None
        if installed is None:
            problems.append(
                f"{entry.path.name}: it needs {flavour or 'TensorRT'} {info.get('version', '?')}, which is not installed"
            )
            continue
        if not trt_backend.same_version(str(info.get("version", "")), installed):
            problems.append(
                f"{entry.path.name}: built with {flavour} {info.get('version')} but {installed} is installed"
            )
            continue
        if gpu_sm is None:
            problems.append(f"{entry.path.name}: no CUDA GPU is visible")
            continue
        reason = trt_backend.machine_mismatch(entry.sidecar, installed, gpu_sm)
        if reason is None:
            return []
        problems.append(f"{entry.path.name}: {reason}")
    return problems


def int8_within_tolerance(artifact: Artifact) -> bool:
    """report.json says the int8 variant stayed within the export's accuracy tolerance of fp32."""
    try:
        report = artifact.report()
    except ArtifactError:
        return False
    int8 = (report.get("variants") or {}).get("int8") or {}
    return int8.get("within_tolerance") is True


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


def _gpu_sm() -> Optional[int]:
    from runtime.backends import cuda_buffers

    try:
        return cuda_buffers.device_info(0).sm if cuda_buffers.cuda_available() else None
    except BackendError:
        return None


def _ort_has_cuda() -> bool:
    from runtime.backends import onnxruntime as ort_backend

    try:
        return "CUDAExecutionProvider" in ort_backend.available_providers()
    except BackendError:
        return False


def _rebuild(artifact: Artifact) -> str:
    from runtime.artifact import build_command

    try:
        name = artifact.spec.name or "<model>"
    except ArtifactError:
        name = "<model>"
    return build_command(artifact.path, name)


def _try_tensorrt(
    artifact: Artifact, precisions: Sequence[str], forced: bool, warn: Callable[[str], None], cuda_graph: bool = False
) -> Optional[Selection]:
    from runtime.backends import tensorrt as trt_backend

    present = sorted({e.precision for e in artifact.engines()})
    if not present:
        if forced:
            raise EngineError(
                f"--backend tensorrt: artifact {artifact.path} holds no TensorRT engine; build one on this "
                f"machine with `{_rebuild(artifact)} --precision fp16`"
            )
        return None
    sm = _gpu_sm()
    reasons = []
    for precision in precisions:
        if precision not in present:
            continue
        problems = engine_problems(artifact, precision, sm)
        if problems:
            reasons.extend(problems)
            continue
        backend = None
        try:
            backend = trt_backend.TensorRTBackend.from_artifact(artifact.path, precision, cuda_graph=cuda_graph)
            backend.activate()
        except (EngineError, BackendError) as exc:
            reasons.append(str(exc))
            if backend is not None:
                backend.deactivate()
            continue
        return Selection(
            backend, "tensorrt", precision, f"TensorRT engine {backend.engine_path.name} matches this machine"
        )
    wanted = "/".join(precisions)
    if not reasons:
        reasons = [f"no {wanted} engine (engines present: {', '.join(present)})"]
    message = f"TensorRT engine not usable here: {'; '.join(reasons)}"
    if forced:
        raise EngineError(f"--backend tensorrt: {message}; rebuild it on this machine with `{_rebuild(artifact)}`")
    warn(f"{message}; falling back to ONNX Runtime (rebuild the engine here with `{_rebuild(artifact)}`)")
    return None


def _start_ort(artifact: Artifact, providers: str, precision: str, threads: Optional[int]):
    from runtime.backends.onnxruntime import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(artifact.onnx_path(precision), providers=providers, threads=threads)
    backend.activate()
    return backend


def select_backend(
    artifact: Artifact,
    backend: str = "auto",
    precision: str = "auto",
    *,
    threads: Optional[int] = None,
    cuda_graph: bool = False,
    warn: Optional[Callable[[str], None]] = None,
) -> Selection:
    """Start the best backend for `artifact` (see the module docstring); raise if the forced one cannot run."""
    if backend not in BACKENDS:
        raise UsageError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    warnings: List[str] = []

    def _warn(text: str) -> None:
        warnings.append(text)
        (warn or log.warning)(text)

    artifact.spec  # fail early and clearly on an artifact without a readable model.onnx
    if backend in ("auto", "tensorrt"):
        order = TENSORRT_AUTO_ORDER if precision == "auto" else (precision,)
        chosen = _try_tensorrt(artifact, order, forced=backend == "tensorrt", warn=_warn, cuda_graph=cuda_graph)
        if chosen is not None:
            chosen.warnings = warnings
            return chosen

    variants = artifact.variants()
    if backend == "ort-cuda" and not _ort_has_cuda():
        raise BackendError(
            "--backend ort-cuda: this onnxruntime has no CUDAExecutionProvider; "
            "pip install onnxruntime-gpu (in place of onnxruntime), or use --backend auto / ort-cpu"
        )
    if backend == "ort-cuda" or (backend == "auto" and _ort_has_cuda()):
        if precision == "auto":
            precision = "fp16" if "fp16" in variants else "fp32"
        try:
            started = _start_ort(artifact, "cuda", precision, threads)
        except BackendError as exc:
            if backend == "ort-cuda":
                raise
            _warn(f"ONNX Runtime CUDA did not start ({exc}); using the CPU")
        else:
            why = "forced by --backend" if backend == "ort-cuda" else "no usable TensorRT engine; onnxruntime has CUDA"
            return Selection(started, "ort-cuda", precision, why, warnings)

    if precision == "auto":
        precision, why_precision = cpu_auto_precision(artifact)
    else:
        why_precision = f"{precision} (--precision)"
    started = _start_ort(artifact, "cpu", precision, threads)
    if precision == "fp16":
        _warn("fp16 on ONNX Runtime CPU runs slower than fp32 (most CPUs have no fast fp16 kernels)")
    why = "forced by --backend" if backend == "ort-cpu" else "no usable TensorRT engine and no CUDA in onnxruntime"
    return Selection(started, "ort-cpu", precision, f"{why}; precision {why_precision}", warnings)


def describe_variants(artifact: Artifact) -> str:
    names = [VARIANT_FILES[p] for p in artifact.variants()] + [e.path.name for e in artifact.engines()]
    return ", ".join(names) if names else "nothing"
