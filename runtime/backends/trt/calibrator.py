"""The legacy INT8 entropy calibrator, for TensorRT 10.x only and only when asked.

TensorRT 11 and TensorRT-RTX removed implicit INT8 calibration; there, INT8 comes from the Q/DQ
nodes of model.int8.onnx. On TensorRT 10.x (JetPack 6 ships 10.3) this calibrator lets the builder
measure activation ranges on a calibration set instead, and stores them in a calibration cache
so later builds skip the data.

The data side is any iterable of batches `{input name: np.ndarray}` (e.g. a `calib` reader). All
batches must have one shape per input: TensorRT calibrates at a single profile point, which the
builder sets from the first batch (see `calibration_shapes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from edge_mm.atomic import atomic_path
from edge_mm.errors import EngineError


class CalibrationBatches:
    """Checks and normalises calibration batches: right names, dtypes and one fixed shape per input."""

    def __init__(self, batches: Iterable[Mapping[str, np.ndarray]], input_dtypes: Mapping[str, np.dtype]) -> None:
        self._iter: Iterator[Mapping[str, np.ndarray]] = iter(batches)
        self.input_dtypes = {name: np.dtype(dtype) for name, dtype in input_dtypes.items()}
        self._first: Optional[Dict[str, np.ndarray]] = None
        self.shapes: Optional[Dict[str, Tuple[int, ...]]] = None
        self.count = 0

    def peek_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Shapes of the first batch (read ahead once; the batch is still returned by `next_batch`)."""
        if self._first is None:
            first = self._next_raw()
            if first is None:
                raise EngineError(
                    "the calibration data is empty; pass at least one batch (about 500 images is typical)"
                )
            self._first = first
            self.shapes = {name: tuple(a.shape) for name, a in first.items()}
        assert self.shapes is not None
        return dict(self.shapes)

    def next_batch(self) -> Optional[Dict[str, np.ndarray]]:
        if self._first is not None:
            batch, self._first = self._first, None
            return batch
        if self.shapes is None:
            self.peek_shapes()
            return self.next_batch()
        return self._next_raw()

    def _next_raw(self) -> Optional[Dict[str, np.ndarray]]:
        try:
            raw = next(self._iter)
        except StopIteration:
            return None
        batch = self._check(raw)
        self.count += 1
        return batch

    def _check(self, raw: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        index = self.count
        if not isinstance(raw, Mapping):
            raise EngineError(
                f"calibration batch {index} is a {type(raw).__name__}; yield dicts of input name -> array"
            )
        missing = sorted(set(self.input_dtypes) - set(raw))
        extra = sorted(set(raw) - set(self.input_dtypes))
        if missing or extra:
            raise EngineError(
                f"calibration batch {index} has inputs missing {missing}, unexpected {extra}; "
                f"the model takes {sorted(self.input_dtypes)}"
            )
        batch = {}
        for name, dtype in self.input_dtypes.items():
            array = np.asarray(raw[name])
            if array.dtype != dtype:
                raise EngineError(
                    f"calibration batch {index} input {name!r} is {array.dtype}; the model takes {dtype} "
                    "(make the calibration set with the artifact's preprocessing)"
                )
            if self.shapes is not None and tuple(array.shape) != self.shapes[name]:
                raise EngineError(
                    f"calibration batch {index} input {name!r} has shape {array.shape}; every batch must "
                    f"have the first batch's shape {self.shapes[name]}"
                )
            batch[name] = np.ascontiguousarray(array)
        return batch


def read_cache(path: Optional[Path]) -> Optional[bytes]:
    if path is not None and Path(path).is_file() and Path(path).stat().st_size > 0:
        return Path(path).read_bytes()
    return None


def write_cache(path: Optional[Path], data: Any) -> None:
    if path is None:
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(data))


def make_entropy_calibrator(trt: Any, batches: CalibrationBatches, cache_path: Optional[Path]) -> Any:
    """An `IInt8EntropyCalibrator2` of module `trt` that feeds `batches` through device buffers."""
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise EngineError(
            f"TensorRT {getattr(trt, '__version__', '?')} has no INT8 calibrator (removed in TensorRT 11, "
            "absent in TensorRT-RTX); build from model.int8.onnx (Q/DQ) without calibration data"
        )
    from runtime.backends.trt import cuda as cuda_buffers  # the project's one cuda-python layer (torch-free)

    class EntropyCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._device: Dict[str, cuda_buffers.DeviceBuffer] = {}
            self._host: Dict[str, cuda_buffers.PinnedHostBuffer] = {}
            self._stream = cuda_buffers.CudaStream()

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks: the batch axis is part of each input's shape

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            batch = batches.next_batch()
            if batch is None:
                return None
            for name, array in batch.items():
                if name not in self._device or self._device[name].nbytes < array.nbytes:
                    self._replace_buffers(name, array.nbytes)
                np.copyto(self._host[name].view(array.shape, array.dtype), array)
                cuda_buffers.copy_to_device_async(self._device[name], self._host[name], array.nbytes, self._stream)
            self._stream.synchronize()
            return [self._device[name].ptr for name in names]

        def _replace_buffers(self, name: str, nbytes: int) -> None:
            if name in self._device:
                self._device.pop(name).free()
                self._host.pop(name).free()
            self._device[name] = cuda_buffers.DeviceBuffer(nbytes)
            self._host[name] = cuda_buffers.PinnedHostBuffer(nbytes)

        def read_calibration_cache(self) -> Optional[bytes]:
            return read_cache(cache_path)

        def write_calibration_cache(self, cache: Any) -> None:
            write_cache(cache_path, cache)

        def release(self) -> None:
            for buffer in list(self._device.values()) + list(self._host.values()):
                buffer.free()
            self._device.clear(), self._host.clear()
            self._stream.destroy()

    return EntropyCalibrator()
