"""Engine file names, the `.engine.json` sidecar, and the key that decides whether to rebuild.

An engine only runs on the TensorRT version and GPU it was built for, so its name and sidecar say
both: `model.fp16.trt10.3.0.sm87.engine` (+ `.engine.json`). The sidecar is written after the
engine; a build is reused only when the sidecar's key (ONNX sha256, flavour + version, precision,
targets, profile, options) equals the new one and the engine's own sha256 still matches.

The runtime (runtime/backends/tensorrt.py) reads the fields documented in SIDECAR_FIELDS; keep
both sides in step (tests/test_engine_sidecar.py round-trips them).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from edge_mm.atomic import write_json
from edge_mm.errors import EngineError
from edge_mm.spec import sha256_file

SIDECAR_FORMAT = 1
SIDECAR_FIELDS = {
    "format": "sidecar format, 1",
    "engine": "engine file name (beside the sidecar)",
    "engine_sha256": "sha256 of the engine file",
    "tensorrt": "{flavour: tensorrt|tensorrt_rtx, version: '10.3.0.30', tool: python|trtexec}",
    "targets": "compute capabilities the engine runs on, e.g. [86] (sm = major*10 + minor)",
    "gpu": "{name, compute_capability: '8.7'} of the build GPU, or null for an ahead-of-time RTX build",
    "dla_core": "DLA core the engine runs on, or null for the GPU",
    "precision": "fp32 | fp16 | int8",
    "onnx": "{file, sha256} of the compiled ONNX",
    "inputs": "[{name, dtype, shape (-1 = dynamic), profile: {min, opt, max}}]",
    "outputs": "[{name, dtype, shape}]",
    "build_options": "how it was built: workspace, optimization level, typing, calibration, ...",
    "build_key": "sha256 of the rebuild key",
    "key": "the rebuild key itself (to say what changed)",
    "spec": "the model spec from the ONNX metadata (so the runtime needs no ONNX), or null",
    "built_at": "UTC time of the build",
    "build_seconds": "how long the build took",
}


def sm_tag(targets: Sequence[int]) -> str:
    """[86] -> 'sm86'; [86, 89, 120] -> 'sm86-89-120'."""
    return "sm" + "-".join(str(t) for t in sorted(targets))


def engine_filename(
    onnx_path: Path, precision: str, flavour_tag: str, targets: Sequence[int], dla_core: Optional[int] = None
) -> str:
    """model.<precision>.<flavour><version>.sm<CC>[.dla<N>].engine; 'model' is the ONNX name up to its first dot."""
    stem = Path(onnx_path).name.split(".")[0]
    dla = f".dla{dla_core}" if dla_core is not None else ""
    return f"{stem}.{precision}.{flavour_tag}.{sm_tag(targets)}{dla}.engine"


def sidecar_path(engine_path: Path) -> Path:
    return Path(str(engine_path) + ".json")


def key_digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def make_key(
    *,
    onnx_sha256: str,
    flavour: str,
    version: str,
    precision: str,
    targets: Sequence[int],
    dla_core: Optional[int],
    profile: Mapping[str, Mapping[str, List[int]]],
    options: Mapping[str, Any],
) -> Dict[str, Any]:
    """Everything that changes the engine bytes; a change in any of these forces a rebuild."""
    return {
        "onnx_sha256": onnx_sha256,
        "flavour": flavour,
        "version": version,
        "precision": precision,
        "targets": sorted(int(t) for t in targets),
        "dla_core": dla_core,
        "profile": {name: dict(shapes) for name, shapes in sorted(profile.items())},
        "options": dict(sorted(options.items())),
    }


def read_sidecar(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise EngineError(f"engine sidecar {path} is missing; rebuild the engine") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineError(f"engine sidecar {path} is unreadable ({exc}); rebuild the engine") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise EngineError(f"engine sidecar {path} has an unknown format; rebuild the engine")
    return data


def rebuild_reason(engine_path: Path, key: Mapping[str, Any]) -> Optional[str]:
    """None if `engine_path` was built from exactly `key` and is intact; otherwise why to rebuild."""
    engine_path = Path(engine_path)
    side = sidecar_path(engine_path)
    if not engine_path.exists():
        return "no engine yet"
    if not side.exists():
        return "the engine has no sidecar"
    try:
        old = read_sidecar(side)
    except EngineError:
        return "the sidecar is unreadable"
    if old.get("build_key") != key_digest(key):
        previous = old.get("key") or {}
        changed = [name for name in key if previous.get(name) != key[name]]
        return "changed: " + (", ".join(changed) if changed else "build key")
    if old.get("engine_sha256") != sha256_file(engine_path):
        return "the engine file does not match its sidecar"
    return None


def write_sidecar(
    engine_path: Path,
    *,
    key: Mapping[str, Any],
    tool: str,
    gpu: Optional[Mapping[str, Any]],
    onnx_path: Path,
    inputs: List[Dict[str, Any]],
    outputs: List[Dict[str, Any]],
    build_options: Mapping[str, Any],
    spec: Optional[Mapping[str, Any]],
    build_seconds: float,
) -> Dict[str, Any]:
    data = {
        "format": SIDECAR_FORMAT,
        "engine": Path(engine_path).name,
        "engine_sha256": sha256_file(engine_path),
        "tensorrt": {"flavour": key["flavour"], "version": key["version"], "tool": tool},
        "targets": list(key["targets"]),
        "gpu": dict(gpu) if gpu else None,
        "dla_core": key["dla_core"],
        "precision": key["precision"],
        "onnx": {"file": Path(onnx_path).name, "sha256": key["onnx_sha256"]},
        "inputs": inputs,
        "outputs": outputs,
        "build_options": dict(build_options),
        "build_key": key_digest(key),
        "key": dict(key),
        "spec": dict(spec) if spec else None,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(build_seconds, 3),
    }
    write_json(sidecar_path(engine_path), data, indent=2, sort_keys=True)
    return data
