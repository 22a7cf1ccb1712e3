"""Run a source in its own thread so capture never waits for inference.

Live sources hand frames over through a newest-frame slot: one frame, overwritten when the consumer
is slow (stale frames are dropped and counted, latency stays one frame). File sources hand frames
over through a small blocking queue: the reader waits for the consumer, so every frame is processed
exactly once and a run is reproducible.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Iterator, Optional, Union

from edge_mm.errors import SourceError

from .base import Frame, Source

log = logging.getLogger(__name__)

_END = object()  # the source is exhausted


class _Failure:
    """A source error carried to the consumer's thread."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class NewestFrameSlot:
    """A size-1 mailbox that overwrites: put never blocks, get returns the newest item once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: object = None
        self._full = False
        self._closed = False
        self.dropped = 0  # items overwritten before anyone took them
        self.put_count = 0

    def put(self, item: object) -> None:
        with self._cond:
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self.put_count += 1
            self._cond.notify_all()

    def put_last(self, item: object) -> None:
        """An end or error marker must not overwrite an untaken frame: wait for it to be taken first."""
        with self._cond:
            while self._full and not self._closed:
                self._cond.wait(timeout=0.1)
            if self._full:
                self.dropped += 1  # the consumer left without taking it
            self._item, self._full = item, True
            self._cond.notify_all()

    def get(self, timeout: Optional[float] = None) -> object:
        """The newest item; raises queue.Empty after `timeout` seconds (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._full:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise queue.Empty
                self._cond.wait(timeout=remaining)
            item, self._item, self._full = self._item, None, False
            self._cond.notify_all()
            return item

    def take_nowait(self) -> object:
        """The waiting item (None if empty), without blocking."""
        with self._cond:
            item, self._item, self._full = self._item, None, False
            self._cond.notify_all()
            return item

    def __len__(self) -> int:
        with self._cond:
            return int(self._full)

    def close(self) -> None:
        """Release a producer waiting in put_last (the consumer has gone)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class CaptureThread:
    """Read `source` in a background thread; consume with `get()` or by iterating.

    live=True:  newest-frame slot (drops stale frames; `dropped` counts them).
    live=False: blocking queue of `queue_size` frames (backpressure; nothing dropped).
    live=None:  use `source.live`.

    A source error is raised in the consumer's thread by `get()`; `stop()` ends the thread
    (stop event, then join with a timeout) and closes the source. Also a context manager.
    """

    def __init__(
        self, source: Source, live: Optional[bool] = None, queue_size: int = 2, join_timeout_s: float = 5.0
    ) -> None:
        self.source = source
        self.live = source.live if live is None else bool(live)
        self.join_timeout_s = join_timeout_s
        self._stop = threading.Event()
        self._slot: Union[NewestFrameSlot, "queue.Queue[object]"] = (
            NewestFrameSlot() if self.live else queue.Queue(maxsize=max(1, queue_size))
        )
        self._thread = threading.Thread(target=self._run, name=f"capture-{source.name}", daemon=True)
        self._started = False
        self._finished = False
        self.frames_read = 0

    @property
    def dropped(self) -> int:
        """Frames the source delivered that the consumer never saw (live mode only)."""
        return self._slot.dropped if isinstance(self._slot, NewestFrameSlot) else 0

    # --- thread side ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.source.open()
            while not self._stop.is_set():
                frame = self.source.read()
                if frame is None:
                    self._hand_over(_END, final=True)
                    return
                self.frames_read += 1
                self._hand_over(frame)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the consumer
            self._hand_over(_Failure(exc), final=True)
        finally:
            try:
                self.source.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing %s failed: %s", self.source.name, exc)

    def _hand_over(self, item: object, final: bool = False) -> None:
        if isinstance(self._slot, NewestFrameSlot):
            if final:
                self._slot.put_last(item)
            else:
                self._slot.put(item)
            return
        while not self._stop.is_set():  # block for backpressure, but notice stop()
            try:
                self._slot.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # --- consumer side -------------------------------------------------------------------------

    def start(self) -> "CaptureThread":
        if not self._started and not self._finished:
            self._started = True
            self._thread.start()
        return self

    def get(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next frame (newest one in live mode), None at the end of the stream.

        Raises the source's error, or SourceError if no frame came within `timeout` seconds.
        """
        if self._finished:
            return None
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            step = 0.1 if remaining is None else min(remaining, 0.1)  # short waits keep Ctrl-C responsive
            try:
                item = self._slot.get(timeout=step)
                break
            except queue.Empty:
                if remaining is not None and remaining <= 0:
                    raise SourceError(
                        f"{self.source.name} delivered no frame within {timeout:.1f} s; check the source"
                    ) from None
                if not self._thread.is_alive() and self._slot_empty():
                    self._finished = True
                    return None
        if item is _END:
            self._finished = True
            return None
        if isinstance(item, _Failure):
            self._finished = True
            raise item.error
        return item  # type: ignore[return-value]

    def _slot_empty(self) -> bool:
        return len(self._slot) == 0 if isinstance(self._slot, NewestFrameSlot) else self._slot.empty()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.get()
            if frame is None:
                return
            yield frame

    def stop(self) -> None:
        """Stop reading, wake the thread wherever it waits, join it (bounded) and close the source."""
        self._stop.set()
        self.source.interrupt()
        if isinstance(self._slot, NewestFrameSlot):
            self._slot.close()
        else:
            # Free a slot so a reader blocked on a full queue sees the stop event.
            try:
                while True:
                    self._slot.get_nowait()
            except queue.Empty:
                pass
        if self._thread.is_alive():
            self._thread.join(self.join_timeout_s)
            if self._thread.is_alive():
                log.warning("capture thread for %s did not stop within %.1f s", self.source.name, self.join_timeout_s)
        if isinstance(self._slot, NewestFrameSlot) and isinstance(self._slot.take_nowait(), Frame):
            self._slot.dropped += 1  # a frame left in the slot was never seen either
        self._finished = True

    def __enter__(self) -> "CaptureThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
