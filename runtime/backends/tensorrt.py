"""The TensorRT backend: runs a built engine through cuda-python (no torch, no export, no ONNX).

An engine runs only on the TensorRT version and GPU it was built for, so before loading one the
backend reads its sidecar (`<engine>.json`, written by export/engine/sidecar.py) and compares it
with this machine; a mismatch is an EngineError that prints the rebuild command.

Data path per call: numpy -> pinned host buffer -> (async) device buffer -> execute_async_v3 ->
device -> pinned host -> numpy, all on one stream. Buffers are sized once for the profile's max
shapes; `set_input_shape` picks the shape per call. With `cuda_graph=True` the copies and the
engine's kernels are captured once per input shape and replayed as one CUDA graph.

TensorRT-RTX engines run the same way; they compile their kernels when the execution context is
created (JIT), and a runtime cache saved beside the engine makes the next start fast.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge_mm.atomic import atomic_path
from edge_mm.errors import BackendError, EngineError, InputError
from edge_mm.spec import ModelSpec
from runtime.backends import cuda_buffers  # imports cuda-python only when first used
from runtime.backends.base import Backend

log = logging.getLogger("edge_mm.runtime.tensorrt")

# Everything this module touches on TensorRT objects; tests assert each exists in TensorRT 11's lean
# runtime bindings (and in TensorRT-RTX), and that the code uses nothing else.
REQUIRED_TRT_API = (
    "__version__",
    "nptype",
    "ILogger",
    "ILogger.Severity",
    "ILogger.Severity.ERROR",
    "ILogger.Severity.WARNING",
    "Runtime",
    "Runtime.deserialize_cuda_engine",
    "ICudaEngine.num_io_tensors",
    "ICudaEngine.get_tensor_name",
    "ICudaEngine.get_tensor_mode",
    "ICudaEngine.get_tensor_dtype",
    "ICudaEngine.get_tensor_shape",
    "ICudaEngine.get_tensor_profile_shape",
    "ICudaEngine.create_execution_context",
    "IExecutionContext.set_input_shape",
    "IExecutionContext.infer_shapes",
    "IExecutionContext.get_tensor_shape",
    "IExecutionContext.set_tensor_address",
    "IExecutionContext.execute_async_v3",
    "TensorIOMode",
    "TensorIOMode.INPUT",
)
# TensorRT-RTX only: JIT runtime cache and the stream-capture check.
REQUIRED_RTX_API = (
    "ICudaEngine.create_runtime_config",
    "IRuntimeConfig.create_runtime_cache",
    "IRuntimeConfig.set_runtime_cache",
    "IRuntimeCache.deserialize",
    "IRuntimeCache.serialize",
    "IExecutionContext.is_stream_capturable",
    "Runtime.get_engine_validity",
)

PYTHON_MODULES = {
    "tensorrt": ("tensorrt", "tensorrt_bindings"),
    "tensorrt_rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings"),
}
INSTALL_HINTS = {
    "tensorrt": "pip install 'edge-mm[trt]' (Jetson: JetPack's python3-libnvinfer)",
    "tensorrt_rtx": "pip install tensorrt-rtx",
}
SIDECAR_FORMAT = 1
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


def rebuild_command(artifact_dir: Union[str, Path], precision: str, model: str = "<model>") -> str:
    """The command that rebuilds an engine here (the export CLI's form, see runtime/artifact.py)."""
    from runtime.artifact import build_command

    return f"{build_command(artifact_dir, model)} --precision {precision}"


# -- TensorRT module, logger, runtime ------------------------------------------------------------


def import_trt(flavour: str) -> Any:
    """The installed Python module for engines of `flavour` ('tensorrt' or 'tensorrt_rtx')."""
    if flavour not in PYTHON_MODULES:
        raise EngineError(f"unknown TensorRT flavour {flavour!r} in the engine sidecar; rebuild the engine")
    for name in PYTHON_MODULES[flavour]:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
        except Exception as exc:  # e.g. OSError: libnvinfer missing or built for another CUDA
            raise EngineError(f"{name} is installed but does not load ({exc}); reinstall it") from None
    raise EngineError(f"this engine needs {flavour}, which is not installed; {INSTALL_HINTS[flavour]}")


def one_line(text: str, limit: int = 300) -> str:
    """Collapse TensorRT's multi-line messages and drop its repeated CUDA-noise lines."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip() and "catchCudaError" not in ln]
    flat = " | ".join(lines) if lines else str(text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


_LOGGERS: Dict[str, Any] = {}


def make_logger(trt: Any) -> Any:
    """The process-wide trt.ILogger of module `trt`: keeps errors (for one-line messages), forwards
    warnings to logging.

    TensorRT keeps the first logger it is given for the whole process, so a per-call logger that is
    later freed leaves it a dangling pointer (seen as hangs in the next Builder()); one logger per
    module, never freed, avoids that. Callers clear `errors` before each operation.
    """
    if trt.__name__ not in _LOGGERS:
        _LOGGERS[trt.__name__] = _new_logger(trt)
    return _LOGGERS[trt.__name__]


def _new_logger(trt: Any) -> Any:
    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: List[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)  # INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4
            if level <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                del self.errors[:-50]  # a long-running process must not collect errors forever
                log.debug("TensorRT: %s", msg)
            elif level == int(trt.ILogger.Severity.WARNING):
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

        def first_error(self, default: str = "no error message") -> str:
            useful = [e for e in self.errors if "catchCudaError" not in e] or self.errors
            return one_line(useful[0]) if useful else default

    return CapturingLogger()


def create_runtime(trt: Any, logger: Any) -> Any:
    """trt.Runtime(logger), or an EngineError when TensorRT cannot start.

    TensorRT needs a GPU to create its runtime (TensorRT-RTX does not: it can check engine headers
    without one). A failed runtime is still returned as an object, and freeing it crashes the
    process (seen with the TensorRT 11.4 lean bindings), so without a GPU we never create one, and
    a runtime that failed anyway is deliberately leaked.
    """
    runs_without_gpu = hasattr(trt.Runtime, "get_engine_validity")  # TensorRT-RTX
    if not runs_without_gpu and cuda_buffers.device_count() == 0:
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


# -- sidecars and this machine ------------------------------------------------------------------


def read_engine_sidecar(engine_path: Path) -> Dict[str, Any]:
    path = Path(str(engine_path) + ".json")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EngineError(f"engine {Path(engine_path).name} has no sidecar {path.name}; rebuild the engine") from None
    except (OSError, ValueError) as exc:
        raise EngineError(f"engine sidecar {path} is unreadable ({exc}); rebuild the engine") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT or "tensorrt" not in data:
        raise EngineError(f"engine sidecar {path} has an unknown format; rebuild the engine")
    return data


def same_version(a: str, b: str) -> bool:
    """'10.3.0' == '10.3.0.30' (trtexec reports three parts, the Python module four)."""
    pa, pb = [int(x) for x in re.findall(r"\d+", a)], [int(x) for x in re.findall(r"\d+", b)]
    n = min(len(pa), len(pb))
    return n >= 3 and pa[:n] == pb[:n]


def machine_mismatch(sidecar: Dict[str, Any], installed_version: Optional[str], sm: int) -> Optional[str]:
    """Why this engine cannot run here (None if it can)."""
    trt_info = sidecar["tensorrt"]
    flavour, version = trt_info.get("flavour"), str(trt_info.get("version"))
    if installed_version is None:
        return f"it needs {flavour} {version}, which is not installed"
    if not same_version(version, installed_version):
        return f"it was built with {flavour} {version} but {flavour} {installed_version} is installed"
    targets = [int(t) for t in sidecar.get("targets", [])]
    if sm not in targets:
        built_for = ", ".join(f"sm{t}" for t in targets) or "an unknown GPU"
        return f"it was built for {built_for} but this GPU is sm{sm}"
    return None


def check_engine_for_machine(sidecar: Dict[str, Any], installed_version: Optional[str], sm: int, rebuild: str) -> None:
    reason = machine_mismatch(sidecar, installed_version, sm)
    if reason:
        raise EngineError(f"engine {sidecar.get('engine', '?')} cannot run here: {reason}; rebuild it: {rebuild}")


def installed_version(flavour: str) -> Optional[str]:
    try:
        return str(import_trt(flavour).__version__)
    except EngineError:
        return None


def find_engine(artifact_dir: Union[str, Path], precision: str, device: int = 0) -> Path:
    """The engine in `artifact_dir` for `precision` that runs on this machine's TensorRT and GPU."""
    artifact_dir = Path(artifact_dir)
    candidates = sorted(artifact_dir.glob(f"*.{precision}.*.engine"))
    rebuild = rebuild_command(artifact_dir, precision, _model_name(candidates))
    if not candidates:
        raise EngineError(f"no {precision} TensorRT engine in {artifact_dir}; build one: {rebuild}")
    sm = cuda_buffers.device_info(device).sm
    rejected = []
    for engine_path in candidates:
        try:
            sidecar = read_engine_sidecar(engine_path)
        except EngineError as exc:
            rejected.append(f"{engine_path.name} ({exc})")
            continue
        reason = machine_mismatch(sidecar, installed_version(sidecar["tensorrt"].get("flavour", "")), sm)
        if reason is None:
            return engine_path
        rejected.append(f"{engine_path.name} ({reason})")
    raise EngineError(f"no {precision} engine in {artifact_dir} runs here: {'; '.join(rejected)}; rebuild: {rebuild}")


def _model_name(engines: Sequence[Path]) -> str:
    """The model name recorded in the first readable sidecar (for rebuild commands)."""
    for engine_path in engines:
        try:
            name = (read_engine_sidecar(engine_path).get("spec") or {}).get("name")
        except EngineError:
            continue
        if name:
            return str(name)
    return "<model>"


def is_available() -> bool:
    """TensorRT (or TensorRT-RTX) is importable and a CUDA device is visible."""
    return any(installed_version(f) for f in PYTHON_MODULES) and cuda_buffers.cuda_available()


# -- the backend ---------------------------------------------------------------------------------


@dataclasses.dataclass
class _Tensor:
    name: str
    dtype: np.dtype
    max_shape: Tuple[int, ...]
    min_shape: Tuple[int, ...]
    host: Any  # cuda_buffers.PinnedHostBuffer
    device: Any  # cuda_buffers.DeviceBuffer
    shape: Tuple[int, ...] = ()


class TensorRTBackend(Backend):
    """Runs a TensorRT or TensorRT-RTX engine built by `python -m export.build_engine`."""

    name = "tensorrt"

    def __init__(
        self,
        spec: ModelSpec,
        precision: str,
        engine_path: Union[str, Path],
        *,
        device: int = 0,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__(spec, precision)
        self.engine_path = Path(engine_path)
        self.device = device
        self.cuda_graph = cuda_graph
        self.rebuild = rebuild_command(self.engine_path.parent, precision, spec.name or "<model>")
        self._reset()

    @classmethod
    def from_artifact(cls, artifact_dir: Union[str, Path], precision: str, **options: Any) -> "TensorRTBackend":
        """The engine in `artifact_dir` that runs here, with the model spec its sidecar carries."""
        engine_path = find_engine(artifact_dir, precision, options.get("device", 0))
        spec_dict = read_engine_sidecar(engine_path).get("spec")
        if not spec_dict:
            raise EngineError(
                f"engine {engine_path.name} has no model spec in its sidecar; rebuild it from an "
                f"edge-mm artifact: {rebuild_command(artifact_dir, precision, _model_name([engine_path]))}"
            )
        return cls(ModelSpec.from_dict(spec_dict), precision, engine_path, **options)

    def _reset(self) -> None:
        self._engine: Any = None
        self._context: Any = None
        self._runtime_cache: Any = None
        self._keep: List[Any] = []  # TensorRT objects that must outlive the context
        self._inputs: Dict[str, _Tensor] = {}
        self._outputs: Dict[str, _Tensor] = {}
        self._stream: Any = None
        self._graph: Any = None
        self._bound: Optional[Dict[str, Tuple[int, ...]]] = None

    # -- activation --------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        sidecar = read_engine_sidecar(self.engine_path)
        flavour = sidecar["tensorrt"].get("flavour", "")
        trt = import_trt(flavour)
        cuda_buffers.set_device(self.device)
        check_engine_for_machine(sidecar, str(trt.__version__), cuda_buffers.device_info(self.device).sm, self.rebuild)
        logger = make_logger(trt)
        runtime = create_runtime(trt, logger)
        try:
            data = self.engine_path.read_bytes()
        except OSError as exc:
            raise EngineError(f"cannot read engine {self.engine_path} ({exc}); rebuild it: {self.rebuild}") from None
        engine = deserialize_engine(runtime, logger, data, self.engine_path.name, self.rebuild)
        self._keep = [logger, runtime]
        self._engine = engine
        try:
            self._context = self._create_context(engine, flavour == "tensorrt_rtx", logger)
            self._stream = cuda_buffers.CudaStream()
            self._allocate(trt)
        except BaseException:
            self.deactivate_impl()
            raise

    def _runtime_cache_path(self) -> Path:
        return Path(str(self.engine_path) + ".runtime-cache")

    def _create_context(self, engine: Any, is_rtx: bool, logger: Any) -> Any:
        logger.errors.clear()
        if is_rtx:
            # TensorRT-RTX compiles kernels here (JIT); a saved runtime cache skips that work.
            runtime_config = engine.create_runtime_config()
            runtime_cache = runtime_config.create_runtime_cache()
            cache_path = self._runtime_cache_path()
            if cache_path.is_file() and not runtime_cache.deserialize(cache_path.read_bytes()):
                log.info("runtime cache %s was made for another GPU/driver/version; recompiling", cache_path.name)
            runtime_config.set_runtime_cache(runtime_cache)
            self._runtime_cache = runtime_cache
            self._keep += [runtime_config, runtime_cache]
            context = engine.create_execution_context(runtime_config)
        else:
            context = engine.create_execution_context()
        if context is None:
            raise EngineError(
                f"cannot create an execution context for {self.engine_path.name}: "
                f"{logger.first_error()}; check free GPU memory, or rebuild: {self.rebuild}"
            )
        return context

    def _allocate(self, trt: Any) -> None:
        """Buffers for the largest shapes the profile allows; tensor addresses never change after."""
        engine, context = self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        output_names = [n for n in names if n not in input_names]
        self._check_names(input_names, output_names)
        for name in input_names:
            shape = tuple(engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                lo, _, hi = (tuple(s) for s in engine.get_tensor_profile_shape(name, 0))
            else:
                lo = hi = shape
            context.set_input_shape(name, hi)
            self._inputs[name] = self._new_tensor(trt, name, lo, hi)
        unresolved = context.infer_shapes()
        if unresolved:
            raise EngineError(
                f"engine {self.engine_path.name} cannot infer shapes of {list(unresolved)}; rebuild: {self.rebuild}"
            )
        for name in output_names:
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(
                    f"output {name!r} has a data-dependent shape {shape}, which this backend does not "
                    "support; use the onnxruntime backend for this model"
                )
            self._outputs[name] = self._new_tensor(trt, name, shape, shape)
        for tensor in list(self._inputs.values()) + list(self._outputs.values()):
            context.set_tensor_address(tensor.name, tensor.device.ptr)

    def _new_tensor(self, trt: Any, name: str, lo: Tuple[int, ...], hi: Tuple[int, ...]) -> _Tensor:
        dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
        nbytes = int(np.prod(hi, dtype=np.int64)) * dtype.itemsize
        return _Tensor(name, dtype, hi, lo, cuda_buffers.PinnedHostBuffer(nbytes), cuda_buffers.DeviceBuffer(nbytes))

    def _check_names(self, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        want_in = sorted(t.name for t in self.spec.inputs)
        want_out = sorted(t.name for t in self.spec.outputs)
        if sorted(input_names) != want_in or sorted(output_names) != want_out:
            raise EngineError(
                f"engine {self.engine_path.name} has inputs {sorted(input_names)} and outputs "
                f"{sorted(output_names)} but the model spec says {want_in} and {want_out}; "
                f"rebuild: {self.rebuild}"
            )

    # -- inference ---------------------------------------------------------------------------------
    def infer_impl(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        shapes = {name: tuple(array.shape) for name, array in feeds.items()}
        if shapes != self._bound:
            self._bind_shapes(shapes)
        for name, array in feeds.items():
            tensor = self._inputs[name]
            np.copyto(tensor.host.view(tensor.shape, tensor.dtype), self._to_engine_dtype(name, array, tensor.dtype))
        if self.cuda_graph and self._graph is None:
            self._capture_graph()  # may find the engine uncapturable and turn cuda_graph off
        if self._graph is not None:
            self._graph.launch(self._stream)
        else:
            self._enqueue()
        self._stream.synchronize()
        spec_dtypes = {t.name: np.dtype(t.dtype) for t in self.spec.outputs}
        return {
            name: tensor.host.view(tensor.shape, tensor.dtype).astype(spec_dtypes[name], copy=True)
            for name, tensor in self._outputs.items()
        }

    def _bind_shapes(self, shapes: Dict[str, Tuple[int, ...]]) -> None:
        context = self._context
        for name, shape in shapes.items():
            tensor = self._inputs[name]
            if len(shape) != len(tensor.max_shape) or any(
                not lo <= d <= hi for d, lo, hi in zip(shape, tensor.min_shape, tensor.max_shape)
            ):
                raise InputError(
                    f"input {name!r} has shape {shape}; this engine takes {tensor.min_shape} up to "
                    f"{tensor.max_shape}; resize the input or rebuild with a wider profile: {self.rebuild}"
                )
            if not context.set_input_shape(name, shape):
                raise BackendError(f"TensorRT refused shape {shape} for input {name!r}; rebuild: {self.rebuild}")
            tensor.shape = shape
        unresolved = context.infer_shapes()
        if unresolved:
            raise BackendError(f"TensorRT cannot infer shapes of {list(unresolved)} for inputs {shapes}")
        for name, tensor in self._outputs.items():
            tensor.shape = tuple(context.get_tensor_shape(name))
        self._bound = dict(shapes)
        if self._graph is not None:  # a graph replays fixed shapes only
            self._graph.destroy()
            self._graph = None

    @staticmethod
    def _to_engine_dtype(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
        if array.dtype == dtype:
            return array
        if np.issubdtype(dtype, np.integer):  # e.g. token ids int64 -> an int32 engine input
            info = np.iinfo(dtype)
            if array.size and (array.min() < info.min or array.max() > info.max):
                raise InputError(f"input {name!r} has values outside {dtype} (the engine's input type)")
        return array.astype(dtype)

    def _enqueue(self) -> None:
        for tensor in self._inputs.values():
            nbytes = int(np.prod(tensor.shape, dtype=np.int64)) * tensor.dtype.itemsize
            cuda_buffers.copy_to_device_async(tensor.device, tensor.host, nbytes, self._stream)
        if not self._context.execute_async_v3(self._stream.handle):
            raise BackendError(f"TensorRT failed to run {self.engine_path.name}; see the TensorRT log above")
        for tensor in self._outputs.values():
            nbytes = int(np.prod(tensor.shape, dtype=np.int64)) * tensor.dtype.itemsize
            cuda_buffers.copy_to_host_async(tensor.host, tensor.device, nbytes, self._stream)

    def _capture_graph(self) -> None:
        context = self._context
        if hasattr(context, "is_stream_capturable") and not context.is_stream_capturable(self._stream.handle):
            log.warning("engine %s cannot be captured in a CUDA graph; running without one", self.engine_path.name)
            self.cuda_graph = False
            return
        # TensorRT defers some work to the first enqueue after a shape change; run it outside the capture.
        self._enqueue()
        self._stream.synchronize()
        self._graph = cuda_buffers.CudaGraph.capture(self._stream, self._enqueue)

    # -- teardown ----------------------------------------------------------------------------------
    def deactivate_impl(self) -> None:
        if self._runtime_cache is not None:
            self._save_runtime_cache()
        for tensor in list(self._inputs.values()) + list(self._outputs.values()):
            tensor.host.free()
            tensor.device.free()
        if self._graph is not None:
            self._graph.destroy()
        if self._stream is not None:
            self._stream.destroy()
        # Release in reverse order of creation: context, engine, then runtime and logger.
        self._context = None
        self._engine = None
        self._keep.clear()
        self._reset()

    def _save_runtime_cache(self) -> None:
        try:
            blob = self._runtime_cache.serialize()
            with atomic_path(self._runtime_cache_path()) as tmp:
                tmp.write_bytes(bytes(blob))
        except OSError as exc:  # a read-only artifact folder only costs the next start its JIT time
            log.warning("could not save the TensorRT-RTX runtime cache (%s); the next start recompiles", exc)
