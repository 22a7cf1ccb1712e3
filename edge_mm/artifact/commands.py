"""The commands that make an artifact or its engines, as printed in every message that asks for one.

Messages must be safe to paste into a shell as printed: paths are shell-quoted and no placeholder
is a shell metacharacter (an unknown model name prints as MODEL, which the export rejects by name).

- `export_command(out_dir, model)`: weights -> ONNX artifact (+ engines); a workstation with torch.
- `engine_command(artifact_dir, precision=..., target_sm=...)`: engines from the artifact's ONNX,
  torch-free, on the machine that runs them (`edge-mm-engine build`).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional, Sequence, Union

EXPORT_MODULE = "export.build_engine"
ENGINE_SCRIPT = "edge-mm-engine"
UNKNOWN_MODEL = "MODEL"


def export_command(out_dir: Union[str, Path], model: Optional[str] = None) -> str:
    """`python -m export.build_engine --model NAME --out DIR`: (re-)export the artifact from weights."""
    name = model if model and model != "<model>" else UNKNOWN_MODEL
    return f"python -m {EXPORT_MODULE} --model {shlex.quote(name)} --out {shlex.quote(str(out_dir))}"


def engine_command(
    artifact_dir: Union[str, Path],
    precision: Optional[str] = None,
    target_sm: Optional[Sequence[Union[int, str]]] = None,
    flavour: Optional[str] = None,
) -> str:
    """`edge-mm-engine build DIR [--precision P] [--flavour F] [--target-sm N ...]`: engines, torch-free."""
    parts = [ENGINE_SCRIPT, "build", shlex.quote(str(artifact_dir))]
    if precision:
        parts += ["--precision", precision]
    if flavour:
        parts += ["--flavour", flavour]
    for sm in target_sm or ():
        parts += ["--target-sm", str(sm)]
    return " ".join(parts)
