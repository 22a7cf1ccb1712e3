"""The one rule for output paths, checked before any work starts (torch-free).

Every command that writes asks here first, with all its outputs at once:

- two outputs on one path are refused (one would silently replace the other);
- a path whose parent is a file, a file where a folder goes (or a folder where a file goes),
  and a folder that cannot be written are refused;
- an existing file is replaced only if it is the command's own kind of output (a video for
  --out FILE.mp4, a calibration set for calib.build, ...) or empty; anything else needs --force.
  A folder output likewise replaces only a folder of its own kind, or an empty one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Union

from edge_mm.errors import UsageError

PathLike = Union[str, Path]


@dataclasses.dataclass(frozen=True)
class OutputKind:
    """What a command writes: a name for messages and a test that an existing path is one of them."""

    what: str
    is_ours: Callable[[Path], bool]
    folder: bool = False


def _head(path: Path, count: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(count)


def is_video(path: Path) -> bool:
    """An MP4/MOV (an `ftyp` box first) or an AVI (RIFF....AVI )."""
    head = _head(path, 12)
    return head[4:8] == b"ftyp" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


def is_json_object(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def is_json_lines(path: Path) -> bool:
    """Each of the first lines is a JSON object (an events log)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for _, line in zip(range(5), fh):
                if line.strip() and not isinstance(json.loads(line), dict):
                    return False
        return True
    except (ValueError, UnicodeDecodeError):
        return False


def zip_holding(member: str) -> Callable[[Path], bool]:
    def test(path: Path) -> bool:
        try:
            with zipfile.ZipFile(path) as zf:
                return member in zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return False

    return test


def file_starting_with(magic: bytes) -> Callable[[Path], bool]:
    return lambda path: _head(path, len(magic)) == magic


def folder_holding(*names: str) -> Callable[[Path], bool]:
    return lambda path: any((path / name).exists() for name in names)


VIDEO = OutputKind("a video", is_video)
EVENTS = OutputKind("an events log (JSON lines)", is_json_lines)
STATS = OutputKind("a stats file (JSON)", is_json_object)
IMAGE = OutputKind("an image", lambda path: path.suffix.lower() in (".png", ".jpg", ".jpeg"))


def refuse_shared_paths(outputs: Dict[str, Optional[PathLike]]) -> None:
    """Two options naming one path: one output would silently replace the other."""
    seen: Dict[Path, str] = {}
    for option, path in outputs.items():
        if not path:
            continue
        key = Path(os.path.abspath(os.path.expanduser(str(path))))
        if key in seen:
            raise UsageError(f"{seen[key]} and {option} both name {path}; give each output its own path")
        seen[key] = option


def _check_parent(path: Path, option: str) -> None:
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{option} {path} cannot be created: {probe} is a file; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {probe} is not writable; choose a folder you can write to")


def check_output(path: PathLike, option: str, kind: OutputKind, force: bool = False) -> Path:
    """Refuse `path` for `option` now, before the work, if writing it would fail or replace what is not ours."""
    path = Path(path)
    _check_parent(path, option)
    if not path.exists():
        return path
    force_hint = " (or add --force to replace it)"
    if kind.folder:
        if not path.is_dir():
            raise UsageError(
                f"{option} {path} is a file; {option} takes a folder for {kind.what}; choose a folder path"
            )
        if force or not any(path.iterdir()) or kind.is_ours(path):
            if not os.access(path, os.W_OK | os.X_OK):
                raise UsageError(f"{option} {path} is not writable; choose a folder you can write to")
            return path
        raise UsageError(
            f"{option} {path} is a folder that does not hold {kind.what}; choose a new or empty folder{force_hint}"
        )
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name for {kind.what}")
    try:
        ours = path.stat().st_size == 0 or kind.is_ours(path)
    except OSError as exc:
        raise UsageError(f"{option} {path} cannot be read ({exc.strerror}); choose another path") from None
    if not ours and not force:
        raise UsageError(f"{option} {path} exists and is not {kind.what}; choose another path{force_hint}")
    return path


def check_outputs(
    outputs: Dict[str, tuple], force: bool = False, inputs: Optional[Dict[str, Optional[PathLike]]] = None
) -> None:
    """{option: (path or None, OutputKind)}: no shared paths (with each other or `inputs`), then `check_output` for each."""
    refuse_shared_paths({**(inputs or {}), **{option: path for option, (path, _) in outputs.items()}})
    for option, (path, kind) in outputs.items():
        if path:
            check_output(path, option, kind, force)


def _identity(path: Path) -> Optional[tuple]:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class WrittenCheck:
    """Remembers the outputs as they were before the run, so 'wrote:' names only files this run produced."""

    def __init__(self, paths: Iterable[Optional[PathLike]]) -> None:
        self.before = {Path(p): _identity(Path(p)) for p in paths if p}

    def written(self) -> list:
        return [str(p) for p, was in self.before.items() if _identity(p) is not None and _identity(p) != was]
