"""Feed a calibration set to the quantizers: ONNX Runtime's reader and TensorRT's calibrator data.

ONNX Runtime's `quantize_static` pulls one feed dict at a time through `get_next`; TensorRT's
legacy calibrator (TensorRT < 11 only) pulls fixed-size batches. Both read the same stored set.
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from calib.store import CalibrationSet
from edge_mm.spec import ModelSpec


class OrtCalibrationReader(CalibrationDataReader):
    """onnxruntime.quantization reader over a set; checks the set against the model's spec first."""

    def __init__(self, calib_set: CalibrationSet, spec: Optional[ModelSpec] = None, batch_size: int = 1) -> None:
        if spec is not None:
            calib_set.check_spec(spec)
        self.calib_set = calib_set
        self.batch_size = batch_size
        self._it: Iterator[Dict[str, np.ndarray]] = iter(())
        self.rewind()

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self.calib_set.batches(self.batch_size)

    def __len__(self) -> int:
        return -(-self.calib_set.count // self.batch_size)


class TrtCalibrationBatches:
    """The data side of a TensorRT IInt8EntropyCalibrator2: whole batches only, then None.

    TensorRT asks for exactly `batch_size` samples per call, so a short last batch is dropped.
    """

    def __init__(self, calib_set: CalibrationSet, batch_size: int, spec: Optional[ModelSpec] = None) -> None:
        if spec is not None:
            calib_set.check_spec(spec)
        self.calib_set = calib_set
        self.batch_size = batch_size
        self.reset()

    def reset(self) -> None:
        self._it = self.calib_set.batches(self.batch_size)

    def next_batch(self) -> Optional[Dict[str, np.ndarray]]:
        batch = next(self._it, None)
        if batch is None or len(next(iter(batch.values()))) < self.batch_size:
            return None
        return batch

    def __iter__(self) -> Iterator[Dict[str, np.ndarray]]:
        self.reset()
        while (batch := self.next_batch()) is not None:
            yield batch
