"""TensorRT's logger, the edge-mm way: warnings to logging, errors kept for one-line messages.

It subclasses the interface of whichever TensorRT module is in use (tensorrt or tensorrt_rtx), so
it is made per module by a factory. One logger serves building and running.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List

log = logging.getLogger("edge_mm.runtime.tensorrt")


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
