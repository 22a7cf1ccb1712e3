"""The legacy INT8 calibrator: its data side (no TensorRT needed) and where it is refused."""

import numpy as np
import pytest

from edge_mm.errors import EngineError
from runtime.backends.trt.calibrator import CalibrationBatches, make_entropy_calibrator, read_cache, write_cache

DTYPES = {"rgb": np.float32, "depth": np.float32}


def batches(n, shape=(2, 3, 32, 32)):
    rng = np.random.default_rng(0)
    for _ in range(n):
        yield {"rgb": rng.random(shape, np.float32), "depth": rng.random((shape[0], 1) + shape[2:], np.float32)}


def test_batches_come_out_in_order_after_peeking():
    source = list(batches(3))
    data = CalibrationBatches(iter(source), DTYPES)
    assert data.peek_shapes() == {"rgb": (2, 3, 32, 32), "depth": (2, 1, 32, 32)}
    out = []
    while (batch := data.next_batch()) is not None:
        out.append(batch)
    assert len(out) == 3 and data.count == 3
    for got, want in zip(out, source):
        np.testing.assert_array_equal(got["rgb"], want["rgb"])
        assert got["rgb"].flags.c_contiguous


def test_bad_batches_are_named():
    with pytest.raises(EngineError, match="calibration data is empty"):
        CalibrationBatches(iter([]), DTYPES).peek_shapes()
    with pytest.raises(EngineError, match=r"batch 0 has inputs missing \['depth'\]"):
        CalibrationBatches(iter([{"rgb": np.zeros((1, 3, 8, 8), np.float32)}]), DTYPES).next_batch()
    wrong_dtype = {"rgb": np.zeros((1, 3, 8, 8), np.float64), "depth": np.zeros((1, 1, 8, 8), np.float32)}
    with pytest.raises(EngineError, match="input 'rgb' is float64; the model takes float32"):
        CalibrationBatches(iter([wrong_dtype]), DTYPES).next_batch()
    mixed = list(batches(1, (1, 3, 32, 32))) + list(batches(1, (1, 3, 64, 64)))
    data = CalibrationBatches(iter(mixed), DTYPES)
    data.next_batch()
    with pytest.raises(EngineError, match=r"batch 1 input 'rgb' has shape \(1, 3, 64, 64\); every batch must"):
        data.next_batch()
    with pytest.raises(EngineError, match="yield dicts"):
        CalibrationBatches(iter([np.zeros(3)]), DTYPES).next_batch()


def test_cache_round_trip(tmp_path):
    path = tmp_path / "calib.cache"
    assert read_cache(path) is None and read_cache(None) is None
    write_cache(path, b"TRT-1003-EntropyCalibration2\nrgb: 3c010a14\n")
    assert read_cache(path).startswith(b"TRT-1003")


def test_tensorrt_without_calibrators_is_refused():
    rtx = pytest.importorskip("tensorrt_rtx_bindings")
    assert not hasattr(rtx, "IInt8EntropyCalibrator2")
    with pytest.raises(EngineError, match=r"no INT8 calibrator \(removed in TensorRT 11, absent in TensorRT-RTX\)"):
        make_entropy_calibrator(rtx, CalibrationBatches(batches(1), DTYPES), None)
