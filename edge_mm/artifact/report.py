"""report.json: what the export measured for each variant, read and written here only.

Schema (format 1; one per graph folder, CLIP also one for both graphs in the artifact root):
    {
      "format": 1, "model": "cdinet-s", "kind": "cdinet" | "clip-image" | "clip-text" | "clip",
      "edge_mm": version, "weights": {...}, "parameters": int, "spec_digest": str, "opset": int,
      "variants": {"fp32": {...}, "fp16": {..., "within_tolerance": bool}, "int8": {...}},
      "engines": {"<engine file>": {"status": "compared" | "not run", ...}}   # export --verify
    }
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from edge_mm.artifact.commands import export_command
from edge_mm.artifact.layout import REPORT_FILE
from edge_mm.atomic import write_json
from edge_mm.errors import ArtifactError

REPORT_FORMAT = 1


def read_report(folder: Union[str, Path], model: Optional[str] = None) -> Dict[str, Any]:
    """report.json of `folder`, or an ArtifactError with the export command that rewrites it."""
    folder = Path(folder)
    path = folder / REPORT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(
            f"artifact {folder} has no {REPORT_FILE}; rebuild it with `{export_command(folder, model)}`"
        ) from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"{path} is unreadable ({exc}); rebuild it with `{export_command(folder, model)}`"
        ) from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} is not a JSON object; rebuild it with `{export_command(folder, model)}`")
    return data


def write_report(folder: Union[str, Path], data: Dict[str, Any]) -> Path:
    """Write report.json atomically (a reader never sees half of it)."""
    return write_json(Path(folder) / REPORT_FILE, data, indent=2)


def variant_within_tolerance(report: Dict[str, Any], precision: str) -> bool:
    """The report says this variant stayed within the export's accuracy tolerance of fp32."""
    entry = (report.get("variants") or {}).get(precision) or {}
    return entry.get("within_tolerance") is True
