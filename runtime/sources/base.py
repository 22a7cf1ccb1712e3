"""The frame every source yields and the interface every source implements."""

from __future__ import annotations

import abc
import dataclasses
import threading
import time
from typing import Any, Dict, Iterator, Optional

import numpy as np

from edge_mm.errors import SourceError


@dataclasses.dataclass
class Frame:
    """One colour + depth pair, owned by the caller (never a view into an SDK buffer).

    color:        (H, W, 3) BGR uint8, C-contiguous.
    depth_m:      (H, W) float32 metres on the colour pixel grid; 0 means no data.
    timestamp_ms: the device's (or file's) timestamp of the colour frame.
    capture_time: time.perf_counter() when the frame reached the host, for end-to-end latency.
    index:        0-based, consecutive in delivery order (continues across reconnects and loops).
    meta:         source-specific facts: depth_scale, serial, intrinsics, frame numbers, ground truth.
    """

    color: np.ndarray
    depth_m: np.ndarray
    timestamp_ms: float
    capture_time: float
    index: int = -1
    meta: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def size(self) -> tuple:
        """(H, W) of both images."""
        return self.color.shape[:2]


def check_frame_arrays(color: np.ndarray, depth_m: np.ndarray, where: str) -> None:
    """Reject arrays that break the Frame contract (a source bug, not user input)."""
    if color.dtype != np.uint8 or color.ndim != 3 or color.shape[2] != 3 or not color.flags.c_contiguous:
        raise SourceError(
            f"{where} produced a colour image {color.shape} {color.dtype}; expected C-contiguous (H, W, 3) uint8"
        )
    if depth_m.dtype != np.float32 or depth_m.shape != color.shape[:2]:
        raise SourceError(
            f"{where} produced depth {depth_m.shape} {depth_m.dtype}; expected float32 {color.shape[:2]} to match colour"
        )


class Source(abc.ABC):
    """A stream of Frames: open, read until None, close. Also a context manager and an iterable.

    Subclasses implement `_open`, `_read` (return a Frame without its index, or None at the end)
    and `_close` (which must cope with a half-finished `_open`); the base numbers frames, checks
    them and guards the open/closed state.
    """

    #: True for cameras (frames keep coming whether or not anyone reads them; drop stale ones),
    #: False for files (every frame must be processed once; block instead of dropping).
    live: bool = False

    def __init__(self) -> None:
        self._opened = False
        self._closed = False
        self._next_index = 0
        self._interrupted = threading.Event()

    @property
    def name(self) -> str:
        return type(self).__name__

    def open(self) -> "Source":
        if self._closed:
            raise SourceError(f"{self.name} was closed; open a new source to read it again")
        if not self._opened:
            try:
                self._open()
            except BaseException:
                self._close()  # release whatever the failed open had started
                raise
            self._opened = True
        return self

    def read(self) -> Optional[Frame]:
        """The next frame, or None at the end of the stream."""
        if not self._opened:
            self.open()  # lazily, so `for frame in SomeSource(...)` works
        frame = self._read()
        if frame is None:
            return None
        check_frame_arrays(frame.color, frame.depth_m, self.name)
        frame.index = self._next_index
        self._next_index += 1
        return frame

    def interrupt(self) -> None:
        """Ask a read blocked in another thread (pacing, reconnecting) to return None soon."""
        self._interrupted.set()

    def _sleep_until(self, deadline: float) -> bool:
        """Sleep until time.perf_counter() reaches `deadline`; False if interrupted meanwhile."""
        return not self._interrupted.wait(max(0.0, deadline - time.perf_counter()))

    def close(self) -> None:
        self._closed = True
        if self._opened:
            self._opened = False
            self._close()

    def __enter__(self) -> "Source":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    @abc.abstractmethod
    def _open(self) -> None: ...

    @abc.abstractmethod
    def _read(self) -> Optional[Frame]: ...

    @abc.abstractmethod
    def _close(self) -> None: ...
