"""Can this engine run here? `engine_problems(sidecar, machine)` answers with reasons ([] = it runs).

The one place that compares an engine's sidecar with a machine. The machine is described, not
probed, here (the core imports neither TensorRT nor CUDA): the runtime's TensorRT backend fills a
`Machine` from what is installed and visible (runtime.backends.trt.loader.this_machine), and tests
or a planning tool may describe any other machine.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Optional

FLAVOURS = ("tensorrt", "tensorrt_rtx")


@dataclasses.dataclass(frozen=True)
class Machine:
    """What decides whether an engine runs: installed TensorRT versions and the GPU's compute capability."""

    tensorrt: Mapping[str, Optional[str]]  # flavour -> installed version ('10.3.0.30'), None if absent
    gpu_sm: Optional[int]  # e.g. 86; None when no CUDA GPU is visible
    gpu_name: str = ""

    def describe(self) -> str:
        installed = ", ".join(f"{f} {v}" for f, v in self.tensorrt.items() if v) or "no TensorRT"
        gpu = f"{self.gpu_name or 'GPU'} sm{self.gpu_sm}" if self.gpu_sm is not None else "no CUDA GPU"
        return f"{installed}; {gpu}"


def same_version(a: str, b: str) -> bool:
    """'10.3.0' == '10.3.0.30' (trtexec reports three parts, the Python module four)."""
    pa, pb = [int(x) for x in re.findall(r"\d+", a)], [int(x) for x in re.findall(r"\d+", b)]
    n = min(len(pa), len(pb))
    return n >= 3 and pa[:n] == pb[:n]


def engine_problems(sidecar: Mapping[str, Any], machine: Machine) -> list:
    """Why the engine described by `sidecar` cannot run on `machine`; [] when it can."""
    info = sidecar.get("tensorrt") or {}
    flavour, version = str(info.get("flavour", "")), str(info.get("version", "?"))
    if flavour not in FLAVOURS:
        return [f"unknown TensorRT flavour {flavour!r} in the sidecar"]
    installed = machine.tensorrt.get(flavour)
    if not installed:
        return [f"it needs {flavour} {version}, which is not installed"]
    if not same_version(version, installed):
        return [f"it was built with {flavour} {version} but {flavour} {installed} is installed"]
    if machine.gpu_sm is None:
        return ["no CUDA GPU is visible here"]
    targets = [int(t) for t in sidecar.get("targets") or []]
    if machine.gpu_sm not in targets:
        built_for = ", ".join(f"sm{t}" for t in targets) or "an unknown GPU"
        return [f"it was built for {built_for} but this GPU is sm{machine.gpu_sm}"]
    return []
