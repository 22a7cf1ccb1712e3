"""Frame sources for the runtime: `open_source("realsense" | "recording:FILE" | "rosbag:PATH" | "folder:DIR" | "synthetic[:SEED]")`.

Every source yields `Frame`s (BGR uint8 colour, float32 metres depth aligned to colour, timestamps,
consecutive indices) and is a context manager and an iterable. `CaptureThread` runs one in the
background: newest-frame slot for live sources, blocking queue for files.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Dict, Tuple, Type

from edge_mm.errors import UsageError

from .base import Frame, Source
from .capture import CaptureThread, NewestFrameSlot

__all__ = ["Frame", "Source", "CaptureThread", "NewestFrameSlot", "open_source", "parse_source_uri", "SOURCE_FORMS"]

# The largest frame side a source may be asked for: above every RealSense mode (1920x1080) and 4K
# files, below sizes whose frames alone exhaust memory (100000x100000 BGR is 28 GiB a frame).
MAX_SIDE = 4096
_SIDES = ("width", "height", "size")
_POSITIVE = ("count", "fps", "width", "height", "size", "depth_scale_m")

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


def _expected(annotation: str) -> str:
    """'int', 'float', 'bool', 'str', 'pair' or 'other' from a parameter's (string) annotation."""
    text = annotation.replace("Optional[", "").rstrip("]")
    if text.startswith("Tuple[int, int"):
        return "pair"
    return text if text in ("int", "float", "bool", "str") else "other"


def check_source_options(kind: str, cls: Type[Source], options: Dict[str, Any]) -> None:
    """Refuse an option of the wrong type or range now, as one line (from a config [source] table or code)."""
    params = inspect.signature(cls.__init__).parameters
    for name, value in options.items():
        expected = _expected(str(params[name].annotation)) if name in params else "other"

        def bad(should: str) -> UsageError:
            return UsageError(f"{kind} source option {name} = {value!r} should be {should} (config [source] table)")

        numbers = [value] if expected in ("int", "float") else list(value) if expected == "pair" else []
        if expected == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise bad("an integer")
        if expected == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise bad("a number")
        if expected == "bool" and not isinstance(value, bool):
            raise bad("true or false")
        if expected == "str" and not isinstance(value, str):
            raise bad("a string")
        if expected == "pair" and (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
        ):
            raise bad("two integers [height, width]")
        for number in numbers:
            if not math.isfinite(number):
                raise bad("a finite number")
            if number < 0 or (name in _POSITIVE and number == 0):
                raise bad("positive" if name in _POSITIVE else "zero or more")
            if name in _SIDES and number > MAX_SIDE:
                raise bad(f"at most {MAX_SIDE} pixels a side")


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
    check_source_options(kind, cls, options)
    clash = sorted(set(options) & set(args))
    if clash:
        raise UsageError(f"{clash} is already given by --camera {uri}; give it once")
    source = cls(**args, **options)
    return source.open()
