"""File names inside an artifact folder: ONNX variants per precision, the report, engines, sidecars, caches.

model.onnx  model.fp16.onnx  model.int8.onnx            # one ONNX file per precision
model.fp16.rtx1.3.0.sm86.engine (+ .engine.json)         # engine: precision, flavour+version, targets[, DLA]
model.fp16.rtx1.3.0.sm86.engine.runtime-cache            # TensorRT-RTX JIT cache beside its engine
timing.trt10.3.0.sm87.cache                               # TensorRT timing cache (not RTX)
report.json                                               # each variant's accuracy against fp32
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from edge_mm.errors import ArtifactError

PRECISIONS = ("fp32", "fp16", "int8")
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
REPORT_FILE = "report.json"
ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"  # model.fp16....engine -> model.fp16....engine.json
RUNTIME_CACHE_SUFFIX = ".runtime-cache"


def check_precision(precision: str) -> str:
    if precision not in VARIANT_FILES:
        raise ArtifactError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    return precision


def variant_path(folder: Union[str, Path], precision: str) -> Path:
    """The ONNX file of `precision` in `folder` (whether or not it exists)."""
    return Path(folder) / VARIANT_FILES[check_precision(precision)]


def precision_of(onnx_path: Union[str, Path]) -> str:
    """'fp16' for model.fp16.onnx, 'int8' for model.int8.onnx (any stem), 'fp32' otherwise."""
    name = Path(onnx_path).name
    for precision, filename in VARIANT_FILES.items():
        if name == filename:
            return precision
    parts = name.split(".")
    return parts[-2] if len(parts) >= 3 and parts[-2] in VARIANT_FILES else "fp32"


def sm_tag(targets: Sequence[int]) -> str:
    """[86] -> 'sm86'; [86, 89, 120] -> 'sm86-89-120'."""
    return "sm" + "-".join(str(t) for t in sorted(targets))


def engine_filename(
    onnx_path: Union[str, Path],
    precision: str,
    flavour_tag: str,
    targets: Sequence[int],
    dla_core: Optional[int] = None,
) -> str:
    """model.<precision>.<flavour><version>.sm<CC>[.dla<N>].engine; 'model' is the ONNX name up to its first dot."""
    stem = Path(onnx_path).name.split(".")[0]
    dla = f".dla{dla_core}" if dla_core is not None else ""
    return f"{stem}.{precision}.{flavour_tag}.{sm_tag(targets)}{dla}{ENGINE_SUFFIX}"


def engine_precision(engine_path: Union[str, Path]) -> str:
    """The precision part of an engine file name, or 'unknown'."""
    parts = Path(engine_path).name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in VARIANT_FILES else "unknown"


def sidecar_path(engine_path: Union[str, Path]) -> Path:
    return Path(str(engine_path) + SIDECAR_SUFFIX)


def runtime_cache_path(engine_path: Union[str, Path]) -> Path:
    return Path(str(engine_path) + RUNTIME_CACHE_SUFFIX)


def timing_cache_name(flavour_tag: str, targets: Sequence[int]) -> str:
    return f"timing.{flavour_tag}.{sm_tag(targets)}.cache"


def calibration_cache_name(onnx_path: Union[str, Path], flavour_tag: str, targets: Sequence[int]) -> str:
    stem = Path(onnx_path).name.split(".")[0]
    return f"calib.{stem}.{flavour_tag}.{sm_tag(targets)}.cache"


GRAPH_FOLDERS = ("image", "text")  # CLIP: one graph folder per encoder


def graph_folders(artifact_dir: Union[str, Path]) -> "list[Path]":
    """The folders of an artifact that hold ONNX graphs (the artifact itself, or its image/ and text/)."""
    root = Path(artifact_dir)
    nested = [root / name for name in GRAPH_FOLDERS if (root / name).is_dir()]
    return nested or [root]
