"""The model spec in an ONNX file's metadata_props (key `edge_mm`): read without onnx, written into a ModelProto.

Reading through onnx or an ONNX Runtime session costs a full graph load; `read_onnx_metadata` walks
the top level of the ONNX protobuf and skips the graph field with a seek, so it reads a few bytes
of even a large file. Writing takes the caller's `onnx.ModelProto` (the export stage has onnx);
this module never imports onnx, so the device side can read every artifact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Tuple, Union

from edge_mm.artifact.commands import export_command
from edge_mm.errors import ArtifactError
from edge_mm.spec import METADATA_KEY, ModelSpec

# ONNX ModelProto field numbers (onnx/onnx.proto3) and protobuf wire types.
_MODEL_GRAPH = 7
_MODEL_METADATA_PROPS = 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


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
        raise ArtifactError(f"no ONNX file at {path}; export it with `{export_command(path.parent)}`") from None
    except (_Corrupt, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{path} is not a readable ONNX file ({exc}); re-export it with `{export_command(path.parent)}`"
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
            f"export it with `{export_command(path.parent)}`"
        )
    return ModelSpec.from_json(metadata[METADATA_KEY])


def write_spec(model: Any, spec: ModelSpec) -> None:
    """Put the spec JSON into `model.metadata_props` (an onnx.ModelProto) under `edge_mm`, replacing an older one."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for key, value in kept:
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=METADATA_KEY, value=spec.to_json())


def copy_metadata(source: Any, target: Any) -> None:
    """Make ModelProto `target` carry exactly the metadata_props of `source` (the edge_mm spec among them)."""
    del target.metadata_props[:]
    for prop in source.metadata_props:
        target.metadata_props.add(key=prop.key, value=prop.value)


def spec_of_model(model: Any) -> Optional[ModelSpec]:
    """The spec in an in-memory ModelProto's metadata, or None."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelSpec.from_json(prop.value)
    return None
