"""Check that TensorRT accepts a precision variant, using TensorRT-RTX's parser and CPU-only AOT builder.

TensorRT-RTX (`tensorrt_rtx_bindings`, pip `tensorrt-rtx-cu13-bindings`) parses ONNX and builds its
hardware-agnostic ahead-of-time engine without a GPU, so CI can tell whether the Q/DQ and mixed
FP16 graphs are ones TensorRT's ONNX importer and strongly typed builder take. This is not a
substitute for building with full TensorRT on the target GPU (JIT kernels, Jetson's TensorRT 10.3).
"""

from __future__ import annotations

import threading
from typing import List, Optional, Tuple

_LOCK = threading.Lock()
_STATE: dict = {}


def available() -> bool:
    try:
        import tensorrt_rtx_bindings  # noqa: F401
    except ImportError:
        return False
    return True


def _trt():
    import tensorrt_rtx_bindings as trt

    if "logger" not in _STATE:
        # One logger for the process: TensorRT keeps the first one and warns about any other.
        class Collector(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: List[str] = []

            def log(self, severity, msg) -> None:
                if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                    self.errors.append(str(msg))

        _STATE["logger"] = Collector()
    return trt, _STATE["logger"]


def _parse(model_bytes: bytes):
    trt, logger = _trt()
    builder = trt.Builder(logger)
    # TensorRT-RTX builds strongly typed networks only; the flag is accepted and avoids a warning.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(model_bytes)
    errors = [str(parser.get_error(i)).strip() for i in range(parser.num_errors)]
    if not ok and not errors:
        errors = ["the parser returned False without an error message"]
    return builder, network, parser, errors


def trt_rtx_parses(model_bytes: bytes) -> List[str]:
    """Parse `model_bytes` with TensorRT-RTX's ONNX parser; return its errors (empty when accepted)."""
    with _LOCK:
        _, _, _, errors = _parse(model_bytes)
    return errors


def trt_rtx_builds(model_bytes: bytes, dynamic_size: int = 64, max_batch: int = 2) -> Tuple[List[str], Optional[int]]:
    """Parse and AOT-build (CPU only); return (errors, engine size in bytes or None).

    Dynamic axes get one profile: axis 0 (batch) from 1 to `max_batch`, other axes `dynamic_size`.
    """
    with _LOCK:
        trt, logger = _trt()
        builder, network, parser, errors = _parse(model_bytes)
        if errors:
            return errors, None
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = list(tensor.shape)

            def shape(batch: int) -> Tuple[int, ...]:
                return tuple((batch if axis == 0 else dynamic_size) if d < 0 else d for axis, d in enumerate(dims))

            profile.set_shape(tensor.name, shape(1), shape(1), shape(max_batch))
        config.add_optimization_profile(profile)
        logger.errors.clear()
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            return list(logger.errors) or ["build_serialized_network returned None"], None
        return [], int(plan.nbytes)
