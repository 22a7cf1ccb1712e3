"""The cuda-python layer (runtime/backends/trt/cuda.py), without TensorRT.

Tests marked `gpu` need an NVIDIA GPU and skip without one; the others run anywhere cuda-python
is installed and check the error handling against the real CUDA runtime library.
"""

import numpy as np
import pytest

from edge_mm.errors import BackendError

cuda_buffers = pytest.importorskip("runtime.backends.trt.cuda")


def _cudart_or_skip():
    try:
        return cuda_buffers.cudart()
    except BackendError as exc:
        pytest.skip(f"cuda-python is not installed ({exc})")


@pytest.fixture
def gpu():
    _cudart_or_skip()
    if cuda_buffers.device_count() == 0:
        pytest.skip("no CUDA device")
    cuda_buffers.set_device(0)
    return cuda_buffers.device_info(0)


def test_runtime_module_has_the_calls_we_use():
    rt = _cudart_or_skip()
    used = [
        "cudaGetDeviceCount",
        "cudaGetDeviceProperties",
        "cudaSetDevice",
        "cudaMallocHost",
        "cudaFreeHost",
        "cudaMalloc",
        "cudaFree",
        "cudaMemcpyAsync",
        "cudaStreamCreateWithFlags",
        "cudaStreamSynchronize",
        "cudaStreamDestroy",
        "cudaStreamBeginCapture",
        "cudaStreamEndCapture",
        "cudaGraphInstantiate",
        "cudaGraphLaunch",
        "cudaGraphExecDestroy",
        "cudaGraphDestroy",
        "cudaEventCreate",
        "cudaEventRecord",
        "cudaEventSynchronize",
        "cudaEventElapsedTime",
        "cudaEventDestroy",
        "cudaGetErrorName",
        "cudaGetErrorString",
        "cudaStreamNonBlocking",
        "cudaMemcpyKind",
        "cudaStreamCaptureMode",
        "cudaError_t",
    ]
    assert [name for name in used if not hasattr(rt, name)] == []


def test_check_returns_values_on_success():
    rt = _cudart_or_skip()
    # cudaRuntimeGetVersion needs no driver: it reports the runtime library's version.
    version = cuda_buffers.check(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    assert isinstance(version, int) and version >= 12000


def test_cuda_errors_become_backend_errors_with_the_cuda_name():
    rt = _cudart_or_skip()
    with pytest.raises(BackendError, match=r"cudaSetDevice\(1000000\) failed: cudaError\w+ \(") as info:
        cuda_buffers.check(rt.cudaSetDevice(1000000), "cudaSetDevice(1000000)")
    assert "\n" not in str(info.value)


def test_device_count_is_zero_or_more_and_info_matches():
    _cudart_or_skip()
    count = cuda_buffers.device_count()
    assert isinstance(count, int) and count >= 0
    if count == 0:
        with pytest.raises(BackendError, match="no CUDA device found"):
            cuda_buffers.device_info(0)
    else:
        with pytest.raises(BackendError, match="does not exist"):
            cuda_buffers.device_info(count)


def test_allocation_without_a_gpu_is_a_clear_error():
    _cudart_or_skip()
    if cuda_buffers.device_count() > 0:
        pytest.skip("a GPU is present; this checks the no-GPU message")
    with pytest.raises(BackendError, match="cudaMalloc.*failed"):
        cuda_buffers.DeviceBuffer(1024)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "array",
    [
        np.arange(3 * 17 * 19, dtype=np.float32).reshape(1, 3, 17, 19) / 7,
        np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float16),
        np.arange(77 * 3, dtype=np.int64).reshape(3, 77) - 100,
        np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8),
    ],
    ids=["float32", "float16", "int64", "uint8-image"],
)
def test_round_trip_through_pinned_and_device_memory(gpu, array):
    back, elapsed_ms = cuda_buffers.round_trip(array)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert elapsed_ms >= 0


@pytest.mark.gpu
def test_device_info_describes_the_gpu(gpu):
    assert gpu.name and gpu.major >= 3 and gpu.total_memory > 0
    assert gpu.sm == gpu.major * 10 + gpu.minor


@pytest.mark.gpu
def test_async_copies_on_one_stream_keep_order(gpu):
    stream = cuda_buffers.CudaStream()
    host_in, host_out = cuda_buffers.PinnedHostBuffer(4096), cuda_buffers.PinnedHostBuffer(4096)
    dev_a, dev_b = cuda_buffers.DeviceBuffer(4096), cuda_buffers.DeviceBuffer(4096)
    try:
        data = np.arange(1024, dtype=np.float32)
        np.copyto(host_in.view((1024,), np.float32), data)
        # host -> a, a -> host_out; then host -> b with new data must not disturb host_out's copy of a.
        cuda_buffers.copy_to_device_async(dev_a, host_in, 4096, stream)
        cuda_buffers.copy_to_host_async(host_out, dev_a, 4096, stream)
        stream.synchronize()
        np.testing.assert_array_equal(host_out.view((1024,), np.float32), data)
        np.copyto(host_in.view((1024,), np.float32), -data)
        cuda_buffers.copy_to_device_async(dev_b, host_in, 4096, stream)
        cuda_buffers.copy_to_host_async(host_out, dev_b, 2048, stream)  # only the first half
        stream.synchronize()
        out = host_out.view((1024,), np.float32)
        np.testing.assert_array_equal(out[:512], -data[:512])
        np.testing.assert_array_equal(out[512:], data[512:])
    finally:
        for buffer in (host_in, host_out, dev_a, dev_b):
            buffer.free()
        stream.destroy()


@pytest.mark.gpu
def test_cuda_graph_replays_a_captured_copy_sequence(gpu):
    stream = cuda_buffers.CudaStream()
    n = 1 << 16
    src, dst = cuda_buffers.PinnedHostBuffer(n * 4), cuda_buffers.PinnedHostBuffer(n * 4)
    dev = cuda_buffers.DeviceBuffer(n * 4)

    def record():
        cuda_buffers.copy_to_device_async(dev, src, n * 4, stream)
        cuda_buffers.copy_to_host_async(dst, dev, n * 4, stream)

    np.copyto(src.view((n,), np.float32), 7.0)
    np.copyto(dst.view((n,), np.float32), 0.0)
    graph = cuda_buffers.CudaGraph.capture(stream, record)
    try:
        stream.synchronize()
        assert not dst.view((n,), np.float32).any(), "capture records the copies without running them"
        for value in (1.5, -2.25, 3.0):  # the graph reads the host buffer at each launch
            np.copyto(src.view((n,), np.float32), np.full(n, value, np.float32))
            graph.launch(stream)
            stream.synchronize()
            np.testing.assert_array_equal(dst.view((n,), np.float32), value)
    finally:
        graph.destroy()
        for buffer in (src, dst, dev):
            buffer.free()
        stream.destroy()


@pytest.mark.gpu
def test_capture_error_leaves_the_stream_usable(gpu):
    stream = cuda_buffers.CudaStream()
    small, big = cuda_buffers.PinnedHostBuffer(16), cuda_buffers.DeviceBuffer(64)

    def record():
        cuda_buffers.copy_to_device_async(big, small, 64, stream)  # too large for `small`

    try:
        with pytest.raises(BackendError, match="does not fit"):
            cuda_buffers.CudaGraph.capture(stream, record)
        back, _ = cuda_buffers.round_trip(np.arange(10, dtype=np.int32), stream)
        np.testing.assert_array_equal(back, np.arange(10, dtype=np.int32))
    finally:
        small.free(), big.free(), stream.destroy()


@pytest.mark.gpu
def test_buffer_misuse_is_reported(gpu):
    host = cuda_buffers.PinnedHostBuffer(64)
    with pytest.raises(BackendError, match="cannot hold"):
        host.view((100,), np.float32)
    host.free()
    host.free()  # idempotent
    with pytest.raises(BackendError, match="after free"):
        host.view((4,), np.float32)
