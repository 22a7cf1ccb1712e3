"""The engine sidecar (`<engine>.json`): its schema, the rebuild key, reading and writing.

An engine only runs on the TensorRT version and GPU it was built for, so its name and sidecar say
both. The sidecar is written after the engine; a build is reused only when the sidecar's key (ONNX
sha256, flavour + version, precision, targets, profile, options) equals the new one and the
engine's own sha256 still matches. Readers (the runtime's TensorRT backend, `edge-mm-engine list`,
export --verify) read the fields of ENGINE_SIDECAR_FIELDS through `read_engine_sidecar`.

(Not to be confused with the retrieval index's FAISS sidecar in runtime/retrieval/faiss_index.py.)
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from edge_mm.artifact.layout import sidecar_path
from edge_mm.atomic import write_json
from edge_mm.errors import EngineError
from edge_mm.hashing import sha256_file

ENGINE_SIDECAR_FORMAT = 1
ENGINE_SIDECAR_FIELDS = {
    "format": f"engine sidecar format, {ENGINE_SIDECAR_FORMAT}",
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


def read_engine_sidecar(engine_path: Path) -> Dict[str, Any]:
    """The sidecar of `engine_path` (or the sidecar file itself), or an EngineError saying what is wrong."""
    engine_path = Path(engine_path)
    path = engine_path if engine_path.name.endswith(".engine.json") else sidecar_path(engine_path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise EngineError(
            f"engine {path.name[: -len('.json')]} has no sidecar {path.name}; rebuild the engine"
        ) from None
    except (OSError, ValueError) as exc:
        raise EngineError(f"engine sidecar {path} is unreadable ({exc}); rebuild the engine") from None
    if not isinstance(data, dict) or data.get("format") != ENGINE_SIDECAR_FORMAT or "tensorrt" not in data:
        raise EngineError(f"engine sidecar {path} has an unknown format; rebuild the engine")
    return data


def rebuild_reason(engine_path: Path, key: Mapping[str, Any]) -> Optional[str]:
    """None if `engine_path` was built from exactly `key` and is intact; otherwise why to rebuild."""
    engine_path = Path(engine_path)
    if not engine_path.exists():
        return "no engine yet"
    if not sidecar_path(engine_path).exists():
        return "the engine has no sidecar"
    try:
        old = read_engine_sidecar(engine_path)
    except EngineError:
        return "the sidecar is unreadable"
    if old.get("build_key") != key_digest(key):
        previous = old.get("key") or {}
        changed = [name for name in key if previous.get(name) != key[name]]
        return "changed: " + (", ".join(changed) if changed else "build key")
    if old.get("engine_sha256") != sha256_file(engine_path):
        return "the engine file does not match its sidecar"
    return None


def write_engine_sidecar(
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
    """Write `<engine>.json` atomically (after the engine itself) and return what was written."""
    data = {
        "format": ENGINE_SIDECAR_FORMAT,
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
