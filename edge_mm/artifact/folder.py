"""An exported model folder (an *artifact*) as a read-only object: variants, engines, report, spec."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from edge_mm.artifact.commands import engine_command, export_command
from edge_mm.artifact.layout import ENGINE_SUFFIX, VARIANT_FILES, check_precision, engine_precision
from edge_mm.artifact.onnx_metadata import read_onnx_spec
from edge_mm.artifact.report import read_report
from edge_mm.artifact.sidecar import read_engine_sidecar
from edge_mm.errors import ArtifactError, EngineError
from edge_mm.spec import ModelSpec


@dataclasses.dataclass
class EngineEntry:
    """A TensorRT engine file in an artifact and its sidecar (None when missing or unreadable)."""

    path: Path
    precision: str
    sidecar: Optional[Dict[str, Any]]
    problem: str = ""  # why the sidecar is None


class Artifact:
    """An exported model folder: its ONNX variants, engines, report and model spec."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ArtifactError(f"no artifact at {self.path}; build it with `{export_command(self.path)}`")
        self._spec: Optional[ModelSpec] = None

    def __repr__(self) -> str:
        return f"Artifact({str(self.path)!r}, variants={self.variants()})"

    def variants(self) -> List[str]:
        """Precisions whose ONNX file is present, in the order fp32, fp16, int8."""
        return [p for p, name in VARIANT_FILES.items() if (self.path / name).is_file()]

    @property
    def spec(self) -> ModelSpec:
        """The model spec, read from model.onnx (or the first variant present)."""
        if self._spec is None:
            present = self.variants()
            if not present:
                raise ArtifactError(
                    f"artifact {self.path} holds no model.onnx (nor a precision variant); "
                    f"build it with `{export_command(self.path)}`"
                )
            self._spec = read_onnx_spec(self.path / VARIANT_FILES[present[0]])
        return self._spec

    @property
    def model_name(self) -> Optional[str]:
        """The model's name from its spec, or None when the spec cannot be read."""
        try:
            return self.spec.name or None
        except ArtifactError:
            return None

    def onnx_path(self, precision: str = "fp32") -> Path:
        try:
            check_precision(precision)
        except ArtifactError:
            raise ArtifactError(f"unknown precision {precision!r}; use one of {', '.join(VARIANT_FILES)}") from None
        path = self.path / VARIANT_FILES[precision]
        if not path.is_file():
            present = self.variants()
            have = ", ".join(present) if present else "none"
            raise ArtifactError(
                f"artifact {self.path} has no {precision} variant ({VARIANT_FILES[precision]}); variants present: {have}; "
                f"export it with `{export_command(self.path, self.model_name)} --precision {','.join([precision, *present])}`"
            )
        return path

    def engines(self) -> List[EngineEntry]:
        """Every `*.engine` in the folder with its `.engine.json` sidecar, sorted by name."""
        entries = []
        for engine in sorted(self.path.glob("*" + ENGINE_SUFFIX)):
            sidecar, problem = None, ""
            try:
                sidecar = read_engine_sidecar(engine)
            except EngineError as exc:
                problem = str(exc).split(";")[0]
            entries.append(EngineEntry(engine, engine_precision(engine), sidecar, problem))
        return entries

    def report(self) -> Dict[str, Any]:
        """report.json: each variant's accuracy against FP32."""
        return read_report(self.path, self.model_name)

    def engine_command(self, precision: Optional[str] = None, target_sm: Any = None) -> str:
        """The torch-free command that builds this artifact's engines on the machine that runs them."""
        return engine_command(self.path, precision, target_sm)

    def export_command(self) -> str:
        """The command that exports this artifact again from weights (a workstation with torch)."""
        return export_command(self.path, self.model_name)
