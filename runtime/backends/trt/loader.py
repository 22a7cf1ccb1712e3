"""Loading engines: the TensorRT module of an engine's flavour, its runtime, deserialization, and
which engine in an artifact runs on this machine (torch-free; tensorrt and cuda-python imported lazily).

"Can it run here" is answered once, by edge_mm.artifact.engine_problems(sidecar, machine); this
module only describes this machine (`this_machine`) and picks among an artifact's engines.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

from edge_mm.artifact import Artifact, Machine, engine_command, engine_problems
from edge_mm.errors import BackendError, EngineError
from runtime.backends.trt import cuda
from runtime.backends.trt.flavours import PYTHON_MODULES, import_bindings

INSTALL_HINTS = {
    "tensorrt": "pip install 'edge-mm[trt]' (Jetson: JetPack's python3-libnvinfer)",
    "tensorrt_rtx": "pip install tensorrt-rtx",
}
# TensorRT-RTX EngineInvalidityDiagnostics bits that mean "this file cannot run here" (CUDA_ERROR=64
# only says the check itself could not query the GPU, so it is left out).
VALIDITY_DIAGNOSTICS = {
    "VERSION_MISMATCH": 1,
    "UNSUPPORTED_CC": 2,
    "OLD_CUDA_DRIVER": 4,
    "OLD_CUDA_RUNTIME": 8,
    "INSUFFICIENT_GPU_MEMORY": 16,
    "MALFORMED_ENGINE": 32,
}


def import_trt(flavour: str) -> Any:
    """The installed Python module for engines of `flavour` ('tensorrt' or 'tensorrt_rtx')."""
    if flavour not in PYTHON_MODULES:
        raise EngineError(f"unknown TensorRT flavour {flavour!r} in the engine sidecar; rebuild the engine")
    module = import_bindings(flavour)
    if module is None:
        raise EngineError(f"this engine needs {flavour}, which is not installed; {INSTALL_HINTS[flavour]}")
    return module


def installed_version(flavour: str) -> Optional[str]:
    try:
        return str(import_trt(flavour).__version__)
    except EngineError:
        return None


def gpu(device: int = 0) -> Tuple[Optional[int], str]:
    """(compute capability as sm, name) of CUDA device `device`, or (None, '') when none is visible."""
    try:
        if not cuda.cuda_available():
            return None, ""
        info = cuda.device_info(device)
    except BackendError:
        return None, ""
    return info.sm, info.name


def this_machine(device: int = 0) -> Machine:
    """This machine as edge_mm.artifact.engine_problems sees it: TensorRT versions installed, the GPU."""
    sm, name = gpu(device)
    return Machine(tensorrt={f: installed_version(f) for f in PYTHON_MODULES}, gpu_sm=sm, gpu_name=name)


def is_available() -> bool:
    """TensorRT (or TensorRT-RTX) is importable and a CUDA device is visible."""
    return any(installed_version(f) for f in PYTHON_MODULES) and cuda.cuda_available()


def engine_reasons(artifact: Artifact, precision: str, machine: Machine) -> Tuple[Optional[Path], List[str]]:
    """(the first `precision` engine that runs on `machine`, why each other one cannot)."""
    reasons = []
    for entry in artifact.engines():
        if entry.precision != precision:
            continue
        if entry.sidecar is None:
            reasons.append(f"{entry.path.name}: {entry.problem}")
            continue
        problems = engine_problems(entry.sidecar, machine)
        if not problems:
            return entry.path, reasons
        reasons.append(f"{entry.path.name}: {'; '.join(problems)}")
    return None, reasons


def find_engine(artifact_dir: Union[str, Path], precision: str, device: int = 0) -> Path:
    """The engine in `artifact_dir` for `precision` that runs on this machine's TensorRT and GPU."""
    artifact = Artifact(artifact_dir)
    rebuild = engine_command(artifact.path, precision)
    if not any(e.precision == precision for e in artifact.engines()):
        raise EngineError(f"no {precision} TensorRT engine in {artifact.path}; build one: {rebuild}")
    found, reasons = engine_reasons(artifact, precision, this_machine(device))
    if found is None:
        raise EngineError(
            f"no {precision} engine in {artifact.path} runs here: {'; '.join(reasons)}; rebuild: {rebuild}"
        )
    return found


def create_runtime(trt: Any, logger: Any) -> Any:
    """trt.Runtime(logger), or an EngineError when TensorRT cannot start.

    TensorRT needs a GPU to create its runtime (TensorRT-RTX does not: it can check engine headers
    without one). A failed runtime is still returned as an object, and freeing it crashes the
    process (seen with the TensorRT 11.4 lean bindings), so without a GPU we never create one, and
    a runtime that failed anyway is deliberately leaked.
    """
    runs_without_gpu = hasattr(trt.Runtime, "get_engine_validity")  # TensorRT-RTX
    if not runs_without_gpu and cuda.device_count() == 0:
        raise EngineError(
            f"TensorRT {trt.__version__} cannot load engines: no CUDA GPU is visible; check the NVIDIA "
            "driver (nvidia-smi), or use the onnxruntime backend on this machine"
        )
    logger.errors.clear()
    runtime = trt.Runtime(logger)
    if runtime is None or any("createInferRuntime" in e for e in logger.errors):
        if runtime is not None:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(runtime))  # never run its crashing destructor
        raise EngineError(
            f"TensorRT {trt.__version__} could not start its runtime: {logger.first_error()}; "
            "check the NVIDIA driver and that a GPU is visible (nvidia-smi)"
        )
    return runtime


def deserialize_engine(runtime: Any, logger: Any, data: bytes, name: str, rebuild: str) -> Any:
    """runtime.deserialize_cuda_engine(data) or an EngineError that says what to do."""
    logger.errors.clear()
    if hasattr(runtime, "get_engine_validity"):  # TensorRT-RTX checks the header without loading
        validity, diagnostics = runtime.get_engine_validity(data)
        reasons = [
            reason.lower().replace("_", " ") for reason, bit in VALIDITY_DIAGNOSTICS.items() if int(diagnostics) & bit
        ]
        if reasons and int(validity) != 0:  # 0 = VALID
            raise EngineError(
                f"cannot load engine {name}: TensorRT-RTX says {', '.join(reasons)}; "
                f"rebuild it on this machine: {rebuild}"
            )
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise EngineError(
            f"cannot load engine {name}: {logger.first_error('not a TensorRT engine')}; "
            f"rebuild it on this machine: {rebuild}"
        )
    return engine
