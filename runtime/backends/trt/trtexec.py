"""Build an engine with the `trtexec` binary (JetPack without the TensorRT Python bindings).

`trtexec_command` is a pure function of the build request, so the options stay equivalent to the
Python builder (and testable without TensorRT): same profile, precision handling, workspace, timing
cache and DLA settings.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

from edge_mm.errors import EngineError
from runtime.backends.trt.profile import ProfileShapes

LOG_TAIL_LINES = 15


def _shape_arg(shapes: Dict[str, ProfileShapes], which: str) -> str:
    parts = []
    for name, profile in shapes.items():
        # trtexec splits on ':' and ','; quote names that contain them (its documented escape).
        quoted = f"'{name}'" if re.search(r"[:,]", name) else name
        parts.append(quoted + ":" + "x".join(str(d) for d in getattr(profile, which)))
    return ",".join(parts)


def trtexec_command(
    trtexec: Path,
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str,
    strongly_typed: bool,
    shapes: Dict[str, ProfileShapes],  # the inputs that have dynamic axes
    workspace_mib: int,
    timing_cache: Optional[Path] = None,
    optimization_level: Optional[int] = None,
    dla_core: Optional[int] = None,
    gpu_fallback: bool = True,
) -> List[str]:
    """The trtexec argument list equivalent to the Python builder's settings."""
    cmd = [str(trtexec), f"--onnx={onnx_path}", f"--saveEngine={engine_path}", "--skipInference"]
    if shapes:  # only inputs with dynamic axes: trtexec rejects shapes for a fully static model
        cmd += [
            f"--minShapes={_shape_arg(shapes, 'min')}",
            f"--optShapes={_shape_arg(shapes, 'opt')}",
            f"--maxShapes={_shape_arg(shapes, 'max')}",
        ]
    if strongly_typed:
        # TensorRT 11 is always strongly typed and still accepts the flag (a no-op there).
        cmd.append("--stronglyTyped")
    elif precision == "fp16":
        cmd.append("--fp16")
    elif precision == "int8":
        # Weak typing: INT8 where the Q/DQ graph says so, FP16 elsewhere. (trtexec cannot calibrate
        # from data, so INT8 through trtexec always means model.int8.onnx.)
        cmd += ["--int8", "--fp16"]
    cmd.append(f"--memPoolSize=workspace:{int(workspace_mib)}M")
    if timing_cache is not None:
        cmd.append(f"--timingCacheFile={timing_cache}")
    if optimization_level is not None:
        cmd.append(f"--builderOptimizationLevel={int(optimization_level)}")
    if dla_core is not None:
        cmd.append(f"--useDLACore={int(dla_core)}")
        if gpu_fallback:
            cmd.append("--allowGPUFallback")
    return cmd


def run_trtexec(cmd: List[str], log_path: Path) -> None:
    """Run trtexec, keep its full log at `log_path`, raise EngineError with the log's tail on failure."""
    if not Path(cmd[0]).exists():
        raise EngineError(
            f"trtexec not found at {cmd[0]}; install TensorRT (JetPack ships /usr/src/tensorrt/bin/trtexec)"
        )
    try:
        with open(log_path, "w") as log:
            result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        raise EngineError(f"cannot run {cmd[0]} ({exc}); check the TensorRT installation") from None
    if result.returncode != 0:
        tail = Path(log_path).read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        errors = [line.strip() for line in tail if "[E]" in line or "ERROR" in line.upper()]
        reason = (errors[-1] if errors else (tail[-1].strip() if tail else "no output"))[:300]
        raise EngineError(f"trtexec failed (exit {result.returncode}): {reason}; full log: {log_path}")
