"""The TensorRT backend: runs a built engine through cuda-python (no torch, no export, no ONNX).

An engine runs only on the TensorRT version and GPU it was built for, so before loading one the
backend reads its sidecar (`<engine>.json`, edge_mm.artifact.sidecar) and asks
edge_mm.artifact.engine_problems about this machine; a mismatch is an EngineError that prints the
torch-free rebuild command (`edge-mm-engine build`). Loading itself is loader.py.

Data path per call: numpy -> pinned host buffer -> (async) device buffer -> execute_async_v3 ->
device -> pinned host -> numpy, all on one stream. Buffers are sized once for the profile's max
shapes; `set_input_shape` picks the shape per call. With `cuda_graph=True` the copies and the
engine's kernels are captured once per input shape and replayed as one CUDA graph.

TensorRT-RTX engines run the same way; they compile their kernels when the execution context is
created (JIT), and a runtime cache saved beside the engine makes the next start fast.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge_mm.artifact import Artifact, engine_command, engine_problems, read_engine_sidecar, runtime_cache_path
from edge_mm.atomic import atomic_path
from edge_mm.errors import BackendError, EngineError, InputError
from edge_mm.spec import ModelSpec
from runtime.backends.base import Backend
from runtime.backends.trt import cuda  # imports cuda-python only when first used
from runtime.backends.trt.loader import (
    create_runtime,
    deserialize_engine,
    engine_reasons,
    find_engine,
    import_trt,
    this_machine,
)
from runtime.backends.trt.logger import make_logger

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

# -- the backend ---------------------------------------------------------------------------------


@dataclasses.dataclass
class _Tensor:
    name: str
    dtype: np.dtype
    max_shape: Tuple[int, ...]
    min_shape: Tuple[int, ...]
    host: Any  # cuda.PinnedHostBuffer
    device: Any  # cuda.DeviceBuffer
    shape: Tuple[int, ...] = ()


class TensorRTBackend(Backend):
    """Runs a TensorRT or TensorRT-RTX engine built by `edge-mm-engine build` or `python -m export.build_engine`."""

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
        self.rebuild = engine_command(self.engine_path.parent, precision)
        self._reset()

    @classmethod
    def probe(cls, artifact: Union[Artifact, str, Path], precision: Optional[str] = None) -> List[str]:
        """Why no engine of `precision` (any precision when None) in the artifact runs here; [] if one does."""
        artifact = artifact if isinstance(artifact, Artifact) else Artifact(artifact)
        precisions = [precision] if precision else sorted({e.precision for e in artifact.engines()})
        if not precisions:
            return [f"no TensorRT engine in {artifact.path}"]
        machine, reasons = this_machine(), []
        for wanted in precisions:
            found, why = engine_reasons(artifact, wanted, machine)
            if found is not None:
                return []
            reasons.extend(why or [f"no {wanted} engine"])
        return reasons

    @classmethod
    def from_artifact(cls, artifact: Union[Artifact, str, Path], precision: str, **options: Any) -> "TensorRTBackend":
        """The engine in the artifact that runs here, with the model spec its sidecar carries."""
        artifact_dir = artifact.path if isinstance(artifact, Artifact) else Path(artifact)
        engine_path = find_engine(artifact_dir, precision, options.get("device", 0))
        spec_dict = read_engine_sidecar(engine_path).get("spec")
        if not spec_dict:
            raise EngineError(
                f"engine {engine_path.name} has no model spec in its sidecar; rebuild it from an "
                f"edge-mm artifact: {engine_command(artifact_dir, precision)}"
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
        cuda.set_device(self.device)
        problems = engine_problems(sidecar, this_machine(self.device))
        if problems:
            raise EngineError(
                f"engine {self.engine_path.name} cannot run here: {'; '.join(problems)}; rebuild it: {self.rebuild}"
            )
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
            self._stream = cuda.CudaStream()
            self._allocate(trt)
        except BaseException:
            self.deactivate_impl()
            raise

    def _runtime_cache_path(self) -> Path:
        return runtime_cache_path(self.engine_path)

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
        return _Tensor(name, dtype, hi, lo, cuda.PinnedHostBuffer(nbytes), cuda.DeviceBuffer(nbytes))

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
            cuda.copy_to_device_async(tensor.device, tensor.host, nbytes, self._stream)
        if not self._context.execute_async_v3(self._stream.handle):
            raise BackendError(f"TensorRT failed to run {self.engine_path.name}; see the TensorRT log above")
        for tensor in self._outputs.values():
            nbytes = int(np.prod(tensor.shape, dtype=np.int64)) * tensor.dtype.itemsize
            cuda.copy_to_host_async(tensor.host, tensor.device, nbytes, self._stream)

    def _capture_graph(self) -> None:
        context = self._context
        if hasattr(context, "is_stream_capturable") and not context.is_stream_capturable(self._stream.handle):
            log.warning("engine %s cannot be captured in a CUDA graph; running without one", self.engine_path.name)
            self.cuda_graph = False
            return
        # TensorRT defers some work to the first enqueue after a shape change; run it outside the capture.
        self._enqueue()
        self._stream.synchronize()
        self._graph = cuda.CudaGraph.capture(self._stream, self._enqueue)

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
