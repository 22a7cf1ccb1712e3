"""Frame sources for the runtime: `open_source("realsense" | "recording:FILE" | "rosbag:PATH" | "folder:DIR" | "synthetic[:SEED]")`.

Every source yields `Frame`s (BGR uint8 colour, float32 metres depth aligned to colour, timestamps,
consecutive indices) and is a context manager and an iterable. `CaptureThread` runs one in the
background: newest-frame slot for live sources, blocking queue for files.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Dict, Tuple, Type

from edge_mm.errors import UsageError

from .base import Frame, Source
from .capture import CaptureThread, NewestFrameSlot

__all__ = ["Frame", "Source", "CaptureThread", "NewestFrameSlot", "open_source", "parse_source_uri", "SOURCE_FORMS"]

SOURCE_FORMS = (
    "realsense[:SERIAL], recording:FILE.bag|.db3 (librealsense), rosbag:PATH (ROS 2 bag folder or ROS 1 .bag), "
    "folder:DIR (with RGB/ and depth/), synthetic[:SEED]"
)


def _source_class(kind: str) -> Type[Source]:
    # Imported on demand: only the RealSense sources need pyrealsense2.
    if kind == "realsense":
        from .realsense import RealSenseSource as cls
    elif kind == "recording":
        from .recording import RecordingSource as cls
    elif kind == "rosbag":
        from .rosbag import RosbagSource as cls
    elif kind == "folder":
        from .folder import FolderSource as cls
    else:
        from .synthetic import SyntheticSource as cls
    return cls


def parse_source_uri(uri: str) -> Tuple[str, Dict[str, Any]]:
    """'recording:x.db3' -> ('recording', {'path': 'x.db3'}); UsageError for anything unknown.

    A bare path is accepted too: a .bag/.db3 file (librealsense), a .mcap file or a folder with
    metadata.yaml (rosbag2), any other folder (RGB/ + depth/ images).
    """
    text = str(uri).strip()
    kind, sep, arg = text.partition(":")
    kind = kind.lower()
    if kind == "realsense":
        return "realsense", ({"serial": arg} if arg else {})
    if kind == "synthetic":
        if not arg:
            return "synthetic", {}
        try:
            return "synthetic", {"seed": int(arg)}
        except ValueError:
            raise UsageError(f"--camera {uri}: the synthetic seed must be an integer, e.g. synthetic:3") from None
    if kind in ("recording", "folder", "rosbag"):
        if not arg:
            example = {"recording": "run.db3", "folder": "data/NJU2K", "rosbag": "rosbag2_2024_05_01-10_00_00"}[kind]
            raise UsageError(f"--camera {uri}: give a path, e.g. {kind}:{example}")
        return kind, ({"root": arg} if kind == "folder" else {"path": arg})
    path = Path(text)
    if path.suffix.lower() in (".bag", ".db3"):
        return "recording", {"path": text}
    if path.suffix.lower() == ".mcap" or (path.is_dir() and (path / "metadata.yaml").is_file()):
        return "rosbag", {"path": text}
    if text and path.is_dir():
        return "folder", {"root": text}
    raise UsageError(f"--camera {uri!r} is not a source; use one of: {SOURCE_FORMS}")


def open_source(uri: str, **options: Any) -> Source:
    """Build and open the source named by `uri`; options go to its constructor (None = default).

    Errors: UsageError for an unknown URI or option, SourceError/CameraError when it cannot open.
    """
    kind, args = parse_source_uri(uri)
    cls = _source_class(kind)
    options = {k: v for k, v in options.items() if v is not None}
    accepted = [name for name, p in inspect.signature(cls.__init__).parameters.items() if name != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        settable = [a for a in accepted if a not in args]
        raise UsageError(f"{kind} sources take no option(s) {unknown}; they take {settable}")
    clash = sorted(set(options) & set(args))
    if clash:
        raise UsageError(f"{clash} is already given by --camera {uri}; give it once")
    source = cls(**args, **options)
    return source.open()
