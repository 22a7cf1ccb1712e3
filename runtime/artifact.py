"""Read an exported model folder (an *artifact*) without torch, onnx or TensorRT.

    artifacts/cdinet-256/
        model.onnx  model.fp16.onnx  model.int8.onnx      # FP32 and precision variants
        model.fp16.trt10.3.0.sm87.engine (+ .engine.json)   # TensorRT engines and their sidecars
        report.json                                         # each variant's accuracy against FP32

The model spec travels in every ONNX file's metadata_props (key `edge_mm`). Reading it through an
ONNX Runtime session costs a full graph load; instead `read_onnx_metadata` walks the top level of
the ONNX protobuf and skips the graph field with a seek, so it reads a few bytes of even a large file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Tuple, Union

from edge_mm.errors import ArtifactError
from edge_mm.spec import METADATA_KEY, ModelSpec

VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
REPORT_FILE = "report.json"

# ONNX ModelProto field numbers (onnx/onnx.proto3) and protobuf wire types.
_MODEL_GRAPH = 7
_MODEL_METADATA_PROPS = 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def build_command(out_dir: Union[str, Path], model: str = "<model>") -> str:
    return f"python -m export.build_engine --model {model} --out {out_dir}"


class _Corrupt(Exception):
    """The bytes are not a protobuf message (raised inside the scanner only)."""


def _read_varint(fh: BinaryIO) -> Optional[int]:
    """A base-128 varint, or None at a clean end of file."""
    result, shift = 0, 0
    while True:
        byte = fh.read(1)
        if not byte:
            if shift == 0:
                return None
            raise _Corrupt("file ends inside a varint")
        result |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _Corrupt("varint longer than 10 bytes")


def _fields(fh: BinaryIO, end: int) -> List[Tuple[int, int, int, int]]:
    """(field number, wire type, payload offset, payload length) of each field up to `end`; skips payloads."""
    fields = []
    while fh.tell() < end:
        tag = _read_varint(fh)
        if tag is None:
            break
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Corrupt("field number 0")
        if wire == _VARINT:
            start = fh.tell()
            if _read_varint(fh) is None:
                raise _Corrupt("file ends inside a varint")
            length = fh.tell() - start
        elif wire == _LENGTH:
            length = _read_varint(fh)
            if length is None:
                raise _Corrupt("file ends inside a length")
            start = fh.tell()
            if length > end - start:  # checked before seeking: a garbage length can overflow the seek
                raise _Corrupt("a field runs past the end of the file")
            fh.seek(length, os.SEEK_CUR)
        elif wire in (_FIXED64, _FIXED32):
            start, length = fh.tell(), 8 if wire == _FIXED64 else 4
            fh.seek(length, os.SEEK_CUR)
        else:
            raise _Corrupt(f"unsupported wire type {wire}")
        if fh.tell() > end:
            raise _Corrupt("a field runs past the end of the file")
        fields.append((number, wire, start, length))
    return fields


def read_onnx_metadata(path: Union[str, Path]) -> Dict[str, str]:
    """The metadata_props of an ONNX file as a dict, reading only the top-level protobuf fields."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            if size == 0:
                raise _Corrupt("empty file")
            metadata: Dict[str, str] = {}
            fields = _fields(fh, size)
            if not any(number == _MODEL_GRAPH and wire == _LENGTH for number, wire, _, _ in fields):
                raise _Corrupt("no graph in the file")
            for number, wire, start, length in fields:
                if number != _MODEL_METADATA_PROPS:
                    continue
                if wire != _LENGTH:
                    raise _Corrupt("metadata_props is not a message")
                fh.seek(start)
                entry = {}
                for inner, inner_wire, inner_start, inner_len in _fields(fh, start + length):
                    if inner in (_ENTRY_KEY, _ENTRY_VALUE) and inner_wire == _LENGTH:
                        fh.seek(inner_start)
                        entry[inner] = fh.read(inner_len).decode("utf-8")
                fh.seek(start + length)
                metadata[entry.get(_ENTRY_KEY, "")] = entry.get(_ENTRY_VALUE, "")
            return metadata
    except FileNotFoundError:
        raise ArtifactError(f"no ONNX file at {path}; export it with `{build_command(path.parent)}`") from None
    except (_Corrupt, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{path} is not a readable ONNX file ({exc}); re-export it with `{build_command(path.parent)}`"
        ) from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {path} ({exc.strerror}); check the path and its permissions") from None


def read_onnx_spec(path: Union[str, Path]) -> ModelSpec:
    """The edge_mm model spec stored in an ONNX file's metadata."""
    path = Path(path)
    metadata = read_onnx_metadata(path)
    if METADATA_KEY not in metadata:
        raise ArtifactError(
            f"{path} carries no edge-mm model spec (metadata key {METADATA_KEY!r}); "
            f"export it with `{build_command(path.parent)}`"
        )
    return ModelSpec.from_json(metadata[METADATA_KEY])


def precision_of(onnx_path: Union[str, Path]) -> str:
    """'fp16' for model.fp16.onnx, 'int8' for model.int8.onnx, 'fp32' otherwise."""
    name = Path(onnx_path).name
    for precision, filename in VARIANT_FILES.items():
        if name == filename:
            return precision
    parts = name.split(".")
    return parts[-2] if len(parts) >= 3 and parts[-2] in VARIANT_FILES else "fp32"


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
            raise ArtifactError(f"no artifact at {self.path}; build it with `{build_command(self.path)}`")
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
                    f"build it with `{build_command(self.path)}`"
                )
            self._spec = read_onnx_spec(self.path / VARIANT_FILES[present[0]])
        return self._spec

    def onnx_path(self, precision: str = "fp32") -> Path:
        if precision not in VARIANT_FILES:
            raise ArtifactError(f"unknown precision {precision!r}; use one of {', '.join(VARIANT_FILES)}")
        path = self.path / VARIANT_FILES[precision]
        if not path.is_file():
            present = self.variants()
            have = ", ".join(present) if present else "none"
            raise ArtifactError(
                f"artifact {self.path} has no {precision} variant ({VARIANT_FILES[precision]}); variants present: {have}; "
                f"build it with `{build_command(self.path, self._model_name())} --precision {precision}`"
            )
        return path

    def engines(self) -> List[EngineEntry]:
        """Every `*.engine` in the folder with its `.engine.json` sidecar, sorted by name."""
        entries = []
        for engine in sorted(self.path.glob("*.engine")):
            parts = engine.name.split(".")
            precision = parts[1] if len(parts) > 2 and parts[1] in VARIANT_FILES else "unknown"
            sidecar_path = Path(str(engine) + ".json")
            sidecar, problem = None, ""
            try:
                data = json.loads(sidecar_path.read_text())
                if isinstance(data, dict):
                    sidecar = data
                else:
                    problem = f"{sidecar_path.name} is not a JSON object"
            except FileNotFoundError:
                problem = f"no sidecar {sidecar_path.name}"
            except (OSError, ValueError) as exc:
                problem = f"unreadable sidecar {sidecar_path.name} ({exc})"
            entries.append(EngineEntry(engine, precision, sidecar, problem))
        return entries

    def report(self) -> Dict[str, Any]:
        """report.json: each variant's accuracy against FP32."""
        path = self.path / REPORT_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ArtifactError(
                f"artifact {self.path} has no {REPORT_FILE}; rebuild it with `{build_command(self.path, self._model_name())}`"
            ) from None
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"{path} is unreadable ({exc}); rebuild it with `{build_command(self.path, self._model_name())}`"
            ) from None
        if not isinstance(data, dict):
            raise ArtifactError(
                f"{path} is not a JSON object; rebuild it with `{build_command(self.path, self._model_name())}`"
            )
        return data

    def _model_name(self) -> str:
        try:
            return self.spec.name or "<model>"
        except ArtifactError:
            return "<model>"
