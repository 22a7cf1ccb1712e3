"""One JSON line per processed frame: when, which frame, and what the stages report (the salient
object's box, score and depth, ...); also the stages' own events (CLIP's `clip`, `clip_query`).

The file is an append-only log written in place and flushed after every line, so a reader (or
`tail -f`) always sees whole lines, and a run stopped by Ctrl-C, a lost camera or an error leaves
every frame processed so far. Each line is written with one write() call.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Dict, Union

from edge_mm.errors import UsageError

from .base import Sink


def event_of(result: Any) -> Dict[str, Any]:
    """The JSON object for one runtime.stages.base.FrameResult: the frame's fields, then the stages'."""
    frame = result.frame
    return {
        "index": frame.index,
        "time": round(result.wall_time, 6),  # Unix time when the result was ready
        "timestamp_ms": round(float(frame.timestamp_ms), 3),  # the source's own clock
        "latency_ms": round(result.latency_s * 1000.0, 3),
        **result.fields,
    }


class EventsSink(Sink):
    name = "events"
    records_latency = True  # the pipeline writes it after the other outputs, when the latency is known

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise UsageError(f"--events {self.path} is a folder; give a file name such as {self.path / 'events.jsonl'}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot write events to {self.path} ({exc.strerror}); choose another --events file"
            ) from None
        self.lines = 0
        self._lock = threading.Lock()  # one line at a time, whichever thread writes

    def write(self, result: Any) -> None:
        self.write_event(event_of(result))

    def write_event(self, event: Dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":")) + "\n"
        with self._lock:
            if self._fh is None:
                return
            self._fh.write(line)
            self._fh.flush()
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def describe(self) -> str:
        return f"events {self.path}"
