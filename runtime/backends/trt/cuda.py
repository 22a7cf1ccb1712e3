"""CUDA memory, streams and graphs through cuda-python (torch-free and TensorRT-free).

The TensorRT backend moves data with these: pinned host buffers (fast, async copies), device
buffers, one non-blocking stream, and optionally a CUDA graph that replays a fixed sequence of copies
and kernels. Every CUDA call goes through `check`, which turns an error code into a BackendError.

cuda-python changed its module layout: 12.6.1+ and 13.x have `cuda.bindings.runtime`; 12.x before
12.6.1 (JetPack 6 images) only `cuda.cudart`, which 13.0 removed. Both expose the same functions.
"""

from __future__ import annotations

import ctypes
import dataclasses
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from edge_mm.errors import BackendError

INSTALL_HINT = "pip install 'cuda-python>=12' (JetPack 6 / CUDA 12.6: 'cuda-python>=12.6,<13')"

_cudart: Any = None


def cudart() -> Any:
    """The cuda-python runtime module, imported on first use (new layout first, then the legacy one)."""
    global _cudart
    if _cudart is None:
        try:
            from cuda.bindings import runtime as module
        except ImportError:
            try:
                from cuda import cudart as module  # cuda-python 12.x before 12.6.1
            except ImportError:
                raise BackendError(f"cuda-python is not installed; {INSTALL_HINT}") from None
        _cudart = module
    return _cudart


def error_text(err: Any) -> str:
    """'cudaErrorInvalidValue (invalid argument)' for a cudaError_t."""
    rt = cudart()
    name = rt.cudaGetErrorName(err)[1]
    desc = rt.cudaGetErrorString(err)[1]
    decode = lambda b: b.decode() if isinstance(b, bytes) else str(b)  # noqa: E731
    return f"{decode(name)} ({decode(desc)})"


def check(result: Any, what: str = "CUDA call") -> Any:
    """Unpack a cuda-python result tuple `(err, *values)`; raise BackendError if err is not success."""
    rt = cudart()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != rt.cudaError_t.cudaSuccess:
        hint = "no usable NVIDIA driver/GPU" if int(err) in (35, 100) else "check the GPU and driver (nvidia-smi)"
        raise BackendError(f"{what} failed: {error_text(err)}; {hint}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def native_handle(obj: Any) -> int:
    """The integer address behind a cuda-python handle (stream, graph); TensorRT takes ints."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:  # cuda-python < 12.8 (and the legacy layout): int() still works there
        return int(obj)
    return int(get_cuda_native_handle(obj))


# -- devices -------------------------------------------------------------------------------------


def device_count() -> int:
    """How many CUDA devices this process can use; 0 without cuda-python, a driver or a GPU."""
    try:
        rt = cudart()
    except BackendError:
        return 0
    err, count = rt.cudaGetDeviceCount()
    return int(count) if err == rt.cudaError_t.cudaSuccess else 0


def cuda_available() -> bool:
    return device_count() > 0


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    major: int
    minor: int
    total_memory: int

    @property
    def compute_capability(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def sm(self) -> int:
        """Compute capability as TensorRT names targets: 8.6 -> 86."""
        return self.major * 10 + self.minor


def device_info(index: int = 0) -> DeviceInfo:
    count = device_count()
    if count == 0:
        raise BackendError("no CUDA device found; run on a machine with an NVIDIA GPU and driver (check nvidia-smi)")
    if not 0 <= index < count:
        raise BackendError(f"CUDA device {index} does not exist; this machine has {count} (0..{count - 1})")
    props = check(cudart().cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return DeviceInfo(index, name.rstrip("\x00"), int(props.major), int(props.minor), int(props.totalGlobalMem))


def set_device(index: int) -> None:
    check(cudart().cudaSetDevice(index), f"cudaSetDevice({index})")


# -- memory --------------------------------------------------------------------------------------


class PinnedHostBuffer:
    """Page-locked host memory (cudaMallocHost) with numpy views, so copies can run asynchronously."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        # cudaMallocHost(0) gives a null pointer; keep every buffer addressable.
        self.ptr = int(check(cudart().cudaMallocHost(max(self.nbytes, 1)), f"cudaMallocHost({self.nbytes})"))
        raw = (ctypes.c_uint8 * max(self.nbytes, 1)).from_address(self.ptr)
        self._bytes = np.frombuffer(raw, dtype=np.uint8)[: self.nbytes]

    def view(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """A numpy array of `shape`/`dtype` over the start of this buffer (no copy)."""
        if self.ptr == 0:
            raise BackendError("pinned buffer used after free()")
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        needed = count * dtype.itemsize
        if needed > self.nbytes:
            raise BackendError(f"pinned buffer of {self.nbytes} bytes cannot hold {tuple(shape)} {dtype}")
        return self._bytes[:needed].view(dtype).reshape(tuple(shape))

    def free(self) -> None:
        if self.ptr:
            self._bytes = np.empty(0, np.uint8)
            check(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0


class DeviceBuffer:
    """Device memory (cudaMalloc)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(check(cudart().cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({self.nbytes})"))

    def free(self) -> None:
        if self.ptr:
            check(cudart().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class CudaStream:
    """One non-blocking stream (does not synchronise with the legacy default stream)."""

    def __init__(self) -> None:
        rt = cudart()
        self._stream = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        self.handle = native_handle(self._stream)

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def destroy(self) -> None:
        if self._stream is not None:
            check(cudart().cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None
            self.handle = 0

    @property
    def raw(self) -> Any:
        return self._stream


def copy_to_device_async(dst: DeviceBuffer, src: PinnedHostBuffer, nbytes: int, stream: CudaStream) -> None:
    _check_sizes(nbytes, dst.nbytes, src.nbytes)
    rt = cudart()
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    check(rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, stream.raw), "cudaMemcpyAsync (host to device)")


def copy_to_host_async(dst: PinnedHostBuffer, src: DeviceBuffer, nbytes: int, stream: CudaStream) -> None:
    _check_sizes(nbytes, dst.nbytes, src.nbytes)
    rt = cudart()
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(rt.cudaMemcpyAsync(dst.ptr, src.ptr, nbytes, kind, stream.raw), "cudaMemcpyAsync (device to host)")


def _check_sizes(nbytes: int, *capacities: int) -> None:
    if nbytes < 0 or any(nbytes > c for c in capacities):
        raise BackendError(f"copy of {nbytes} bytes does not fit buffers of {capacities} bytes")


# -- graphs and events ---------------------------------------------------------------------------


class CudaGraph:
    """A captured, instantiated CUDA graph: replays the work `record()` enqueued on a stream."""

    def __init__(self, graph: Any, graph_exec: Any) -> None:
        self._graph, self._exec = graph, graph_exec

    @classmethod
    def capture(cls, stream: CudaStream, record: Callable[[], None]) -> "CudaGraph":
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")
        try:
            record()
        except BaseException:
            # End the capture so the stream is usable again, then report the original error.
            err_graph = rt.cudaStreamEndCapture(stream.raw)
            if err_graph[0] == rt.cudaError_t.cudaSuccess and err_graph[1] is not None:
                rt.cudaGraphDestroy(err_graph[1])
            raise
        graph = check(rt.cudaStreamEndCapture(stream.raw), "cudaStreamEndCapture")
        try:
            graph_exec = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except BackendError:
            rt.cudaGraphDestroy(graph)
            raise
        return cls(graph, graph_exec)

    def launch(self, stream: CudaStream) -> None:
        check(cudart().cudaGraphLaunch(self._exec, stream.raw), "cudaGraphLaunch")

    def destroy(self) -> None:
        rt = cudart()
        if self._exec is not None:
            check(rt.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
            self._exec = None
        if self._graph is not None:
            check(rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy")
            self._graph = None


class CudaEvent:
    """A timing event; `end.elapsed_ms(start)` after both were recorded and `end` synchronised."""

    def __init__(self) -> None:
        self._event = check(cudart().cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: CudaStream) -> None:
        check(cudart().cudaEventRecord(self._event, stream.raw), "cudaEventRecord")

    def synchronize(self) -> None:
        check(cudart().cudaEventSynchronize(self._event), "cudaEventSynchronize")

    def elapsed_ms(self, start: "CudaEvent") -> float:
        return float(check(cudart().cudaEventElapsedTime(start._event, self._event), "cudaEventElapsedTime"))

    def destroy(self) -> None:
        if self._event is not None:
            check(cudart().cudaEventDestroy(self._event), "cudaEventDestroy")
            self._event = None


def round_trip(array: np.ndarray, stream: Optional[CudaStream] = None) -> Tuple[np.ndarray, float]:
    """Copy `array` host -> device -> host through pinned memory; return the copy and elapsed ms.

    A self-check for the CUDA layer (used by tests and bench/gpu_check.py).
    """
    own_stream = stream is None
    stream = stream or CudaStream()
    src, dst = PinnedHostBuffer(array.nbytes), PinnedHostBuffer(array.nbytes)
    dev = DeviceBuffer(array.nbytes)
    start, end = CudaEvent(), CudaEvent()
    try:
        np.copyto(src.view(array.shape, array.dtype), array)
        start.record(stream)
        copy_to_device_async(dev, src, array.nbytes, stream)
        copy_to_host_async(dst, dev, array.nbytes, stream)
        end.record(stream)
        stream.synchronize()
        return dst.view(array.shape, array.dtype).copy(), end.elapsed_ms(start)
    finally:
        for resource in (start, end, src, dst, dev):
            resource.destroy() if isinstance(resource, CudaEvent) else resource.free()
        if own_stream:
            stream.destroy()
