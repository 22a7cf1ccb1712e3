"""Which TensorRT can build here: the `tensorrt` or `tensorrt_rtx` Python bindings, or `trtexec`.

One builder serves all of them; a `Flavour` says which features the installed version has, so the
builder never guesses from the package name alone:

- tensorrt 10.0-10.11: weakly typed by default (FP16/INT8 builder flags), legacy INT8 calibrators;
- tensorrt 10.12+ and 11.x: strongly typed (precision comes from the ONNX); 11.x removed the flags
  and the calibrators altogether;
- tensorrt_rtx 1.x: strongly typed only, ahead-of-time builds for target compute capabilities,
  no timing cache (a runtime cache replaces it).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Dict, List, Optional, Tuple

from edge_mm.errors import EngineError

# Module names per flavour: the metapackage name first, then the standalone bindings wheel.
PYTHON_MODULES: Dict[str, Tuple[str, ...]] = {
    "tensorrt": ("tensorrt", "tensorrt_bindings"),
    "tensorrt_rtx": ("tensorrt_rtx", "tensorrt_rtx_bindings"),
}
# Short names used in engine file names: model.fp16.trt10.3.0.sm87.engine
TAGS = {"tensorrt": "trt", "tensorrt_rtx": "rtx"}
TRTEXEC_LOCATIONS = ("/usr/src/tensorrt/bin/trtexec",)  # JetPack and NVIDIA's containers
MIN_TENSORRT = (10, 0)
STRONG_TYPING_SINCE = (10, 12)  # weak typing was deprecated in 10.12 and removed in 11.0

NOT_INSTALLED = (
    "TensorRT is not installed, so no engine was built (the ONNX files are ready and run with ONNX Runtime); "
    "install it with pip install 'edge-mm[trt]' on a desktop/server GPU, or use JetPack (which ships "
    "/usr/src/tensorrt/bin/trtexec) on Jetson"
)


@dataclasses.dataclass(frozen=True)
class Flavour:
    """One way to build engines: Python bindings (`module`) or the trtexec binary (`trtexec`)."""

    name: str  # "tensorrt" | "tensorrt_rtx": the engine format, whatever tool builds it
    version: Tuple[int, ...]
    module: Optional[ModuleType] = dataclasses.field(default=None, compare=False, repr=False)
    trtexec: Optional[Path] = None

    @property
    def version_string(self) -> str:
        return ".".join(str(v) for v in self.version)

    @property
    def tag(self) -> str:
        """'trt10.3.0' / 'rtx1.7.1': flavour and major.minor.patch, for file names."""
        return TAGS[self.name] + ".".join(str(v) for v in self.version[:3])

    @property
    def tool(self) -> str:
        return "trtexec" if self.trtexec else "python"

    @property
    def is_rtx(self) -> bool:
        return self.name == "tensorrt_rtx"

    @property
    def strongly_typed(self) -> bool:
        """Whether precision comes from the ONNX (strong typing) rather than builder flags."""
        return self.is_rtx or self.version[:2] >= STRONG_TYPING_SINCE

    @property
    def has_precision_flags(self) -> bool:
        """BuilderFlag.FP16/INT8 exist (TensorRT 10.x only)."""
        return not self.is_rtx and self.version[0] < 11

    @property
    def has_legacy_calibrator(self) -> bool:
        """IInt8EntropyCalibrator2 exists (TensorRT 10.x only; removed in 11.0, absent in RTX)."""
        return not self.is_rtx and self.version[0] < 11 and self.trtexec is None

    @property
    def has_timing_cache(self) -> bool:
        """TensorRT-RTX does not autotune; its timing-cache calls are no-ops that need a GPU."""
        return not self.is_rtx

    @property
    def targets_compute_capabilities(self) -> bool:
        """TensorRT-RTX builds ahead of time for named compute capabilities, without a GPU."""
        return self.is_rtx


def parse_version(text: str) -> Tuple[int, ...]:
    numbers = re.findall(r"\d+", text.split("+")[0])
    if not numbers:
        raise EngineError(f"cannot read the TensorRT version {text!r}; reinstall TensorRT")
    return tuple(int(n) for n in numbers[:4])


def import_bindings(name: str) -> Optional[ModuleType]:
    """The first importable module of flavour `name`, or None."""
    for module_name in PYTHON_MODULES[name]:
        try:
            return importlib.import_module(module_name)
        except ImportError:
            continue
        except Exception as exc:  # a broken install (missing libnvinfer, wrong CUDA) raises OSError etc.
            raise EngineError(f"{module_name} is installed but does not load ({exc}); reinstall it") from None
    return None


def find_trtexec() -> Optional[Path]:
    """trtexec on PATH, or where JetPack puts it."""
    on_path = shutil.which("trtexec")
    if on_path:
        return Path(on_path)
    for location in TRTEXEC_LOCATIONS:
        if os.access(location, os.X_OK):
            return Path(location)
    return None


def trtexec_version_from_output(text: str) -> Optional[Tuple[int, ...]]:
    """Read '[TensorRT v100300]' (10.3.0) or '[TensorRT v8601]' (8.6.1) from trtexec's banner."""
    match = re.search(r"\[TensorRT v(\d+)\]", text)
    if not match:
        return None
    n = int(match.group(1))
    if n >= 100000:  # 10.x and later: MMmmpp
        return (n // 10000, (n // 100) % 100, n % 100)
    return (n // 1000, (n // 100) % 10, n % 100)  # 8.x: Mmpp


def trtexec_version(trtexec: Path) -> Tuple[int, ...]:
    try:
        out = subprocess.run([str(trtexec), "--help"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"cannot run {trtexec} ({exc}); check the TensorRT installation") from None
    version = trtexec_version_from_output(out.stdout + out.stderr)
    if version is None:
        raise EngineError(
            f"cannot tell the TensorRT version of {trtexec} (no '[TensorRT vNNNN]' banner); "
            "reinstall TensorRT or pass flavour='tensorrt' with the Python bindings installed"
        )
    return version


def python_flavour(name: str) -> Optional[Flavour]:
    module = import_bindings(name)
    if module is None:
        return None
    version = parse_version(getattr(module, "__version__", "0"))
    if name == "tensorrt" and version[:2] < MIN_TENSORRT:
        raise EngineError(
            f"TensorRT {'.'.join(map(str, version))} is too old; edge-mm needs TensorRT 10.0 or newer "
            "(JetPack 6+, or pip install 'edge-mm[trt]')"
        )
    return Flavour(name, version, module=module)


def trtexec_flavour(trtexec: Optional[Path] = None) -> Optional[Flavour]:
    path = trtexec or find_trtexec()
    if path is None:
        return None
    version = trtexec_version(path)
    if version[:2] < MIN_TENSORRT:
        raise EngineError(f"{path} is TensorRT {'.'.join(map(str, version))}; edge-mm needs TensorRT 10.0 or newer")
    return Flavour("tensorrt", version, trtexec=path)


def available_flavours() -> List[str]:
    """Names of what could build here, best first (for messages and `--flavour` choices)."""
    names = [n for n in PYTHON_MODULES if import_bindings(n) is not None]
    if find_trtexec() is not None:
        names.append("trtexec")
    return names


def find_flavour(requested: Optional[str] = None) -> Flavour:
    """The flavour to build with: `requested` ('tensorrt', 'tensorrt_rtx', 'trtexec'), or the best one.

    Without a request: the tensorrt bindings, then tensorrt_rtx, then trtexec (JetPack without
    the Python bindings). Raises EngineError that says how to install TensorRT if none is here.
    """
    if requested not in (None, "tensorrt", "tensorrt_rtx", "trtexec"):
        raise EngineError(f"unknown TensorRT flavour {requested!r}; use tensorrt, tensorrt_rtx or trtexec")
    if requested == "trtexec":
        flavour = trtexec_flavour()
        if flavour is None:
            raise EngineError(
                "trtexec was not found on PATH or at /usr/src/tensorrt/bin/trtexec; install TensorRT "
                "(JetPack ships it) or build with the Python bindings: pip install 'edge-mm[trt]'"
            )
        return flavour
    if requested is not None:
        flavour = python_flavour(requested)
        if flavour is None:
            hint = "pip install 'edge-mm[trt]'" if requested == "tensorrt" else "pip install tensorrt-rtx"
            raise EngineError(f"the {requested} Python package is not installed; {hint}")
        return flavour
    for name in PYTHON_MODULES:
        flavour = python_flavour(name)
        if flavour is not None:
            return flavour
    flavour = trtexec_flavour()
    if flavour is not None:
        return flavour
    raise EngineError(NOT_INSTALLED)
