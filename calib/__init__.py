"""Calibration sets: sampling, preprocessing with the model's own spec, storage, and readers.

Torch-free. `python -m calib.build` makes a set; `calib.store.read_set` loads one; `calib.readers`
feeds it to ONNX Runtime's quantizer or TensorRT's legacy calibrator.
"""
