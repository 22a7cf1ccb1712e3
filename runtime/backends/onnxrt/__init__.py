"""The ONNX Runtime backend (CPU everywhere, CUDA with onnxruntime-gpu); onnxruntime imported lazily."""

from runtime.backends.onnxrt.runner import (
    CPU,
    CUDA,
    OPTIMIZATION_LEVELS,
    PROVIDER_CHOICES,
    OnnxRuntimeBackend,
    available_providers,
    is_available,
)

__all__ = [
    "CPU",
    "CUDA",
    "OPTIMIZATION_LEVELS",
    "PROVIDER_CHOICES",
    "OnnxRuntimeBackend",
    "available_providers",
    "is_available",
]
