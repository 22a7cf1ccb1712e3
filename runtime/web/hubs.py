"""Hand-overs from the pipeline's threads to the web server's event loop that never block the pipeline.

FrameHub: the pipeline offers each annotated frame (a reference swap into a one-image slot); an
encoder thread JPEG-encodes the newest one (every frame, up to STREAM_MAX_FPS, while a stream client
watches; else once a second for /frame.jpg) and wakes the stream clients. Each client takes the newest JPEG when it is
ready for one, so a slow client skips frames and only ever waits on its own socket.

EventHub: the last N events with sequence numbers; a client asks for what came after the last one it
saw. Publishing is a deque append and a wake-up call, from any thread.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

import cv2
import numpy as np

JPEG_QUALITY = 80
IDLE_REFRESH_S = 1.0  # how often /frame.jpg is refreshed while no stream client watches
STREAM_MAX_FPS = 30.0  # a browser shows no more; an unpaced pipeline at 100 FPS is sampled, not encoded 100x


class _Waker:
    """Wakes coroutines on the server's loop from any thread (call_soon_threadsafe), broadcast style."""

    def __init__(self) -> None:
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._event: Optional[asyncio.Event] = None

    def attach(self) -> asyncio.Event:
        """On the loop: the event the next wake() sets."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._event is None:
            self._loop, self._event = loop, asyncio.Event()
        return self._event

    def _fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()

    def wake(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # the loop is closed: the server stopped
            self._loop = None


class FrameHub:
    """The newest annotated frame as JPEG, for any number of stream clients (see module docstring)."""

    def __init__(self, quality: int = JPEG_QUALITY, max_fps: float = STREAM_MAX_FPS) -> None:
        self.quality = int(quality)
        self.period_s = 1.0 / max_fps
        self._cond = threading.Condition()
        self._image: Optional[np.ndarray] = None  # the newest frame not yet encoded
        self.jpeg: Optional[bytes] = None
        self.seq = 0  # JPEGs made so far
        self.offered = 0  # frames offered by the pipeline
        self.encoded = 0
        self.clients = 0  # stream clients now watching (changed on the loop thread only)
        self.closed = False
        self._last_encode = float("-inf")
        self._waker = _Waker()
        self._thread = threading.Thread(target=self._encode_loop, name="web-jpeg", daemon=True)
        self._thread.start()

    # -- the pipeline's side -------------------------------------------------------------------
    def offer(self, image: np.ndarray) -> None:
        """Never waits: the frame replaces any frame the encoder has not taken yet."""
        with self._cond:
            self._image = image
            self.offered += 1
            self._cond.notify()

    # -- the encoder thread -------------------------------------------------------------------
    def _encode_loop(self) -> None:
        while True:
            with self._cond:
                while self._image is None and not self.closed:
                    self._cond.wait(0.5)
                if self.closed:
                    return
                image, self._image = self._image, None
            now = time.monotonic()
            if self.clients == 0 and self.jpeg is not None and now - self._last_encode < IDLE_REFRESH_S:
                continue  # nobody watches: keep /frame.jpg about a second fresh, no more
            wait = self._last_encode + self.period_s - now
            if wait > 0:  # faster than a browser shows: wait, then encode the newest frame by then
                time.sleep(wait)
                with self._cond:
                    if self._image is not None:
                        image, self._image = self._image, None
                now = time.monotonic()
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if ok:
                self.jpeg, self._last_encode = buf.tobytes(), now
                self.seq += 1
                self.encoded += 1
                self._waker.wake()

    # -- the server's side (event loop) -------------------------------------------------------
    async def next_jpeg(self, seen: int, timeout: float = 1.0) -> Tuple[Optional[bytes], int]:
        """The newest JPEG after sequence `seen`, or (None, seen) after `timeout` without one."""
        if self.seq <= seen:
            event = self._waker.attach()
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        if self.seq > seen:
            return self.jpeg, self.seq
        return None, seen

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._waker.wake()
        self._thread.join(timeout=5)


class EventHub:
    """The last `keep` events, numbered; any thread publishes, clients read what is newer than they saw."""

    def __init__(self, keep: int = 50) -> None:
        self._lock = threading.Lock()
        self._events: Deque[Tuple[int, Dict[str, Any]]] = collections.deque(maxlen=keep)
        self.seq = 0
        self._waker = _Waker()

    def publish(self, event: Dict[str, Any]) -> None:
        with self._lock:
            self.seq += 1
            self._events.append((self.seq, dict(event)))
        self._waker.wake()

    def since(self, seen: int) -> List[Tuple[int, Dict[str, Any]]]:
        with self._lock:
            return [(n, e) for n, e in self._events if n > seen]

    async def wait(self, seen: int, timeout: float) -> None:
        """Return when an event newer than `seen` exists, or after `timeout`."""
        if self.seq > seen:
            return
        event = self._waker.attach()
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass
