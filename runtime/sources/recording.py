"""`recording:FILE`: deterministic playback of RealSense .bag (ROS1) and .db3 (ROS2) recordings.

Playback runs in non-real-time mode (the player waits for us, so no frame is dropped). The player
is set to non-real-time and paused *before* the pipeline starts, then rewound and resumed once
both sensors run, with resume() in a helper thread. Measured on 2.59.1 with two or three players
in parallel on 2 cores: the research sheet's pause/seek after start() lost frames in 26 of 40 runs
of a 12-frame file; non-real-time set before start() without pausing lost the colour stream's first
frames or stalled in 5 of 120; a blocking resume() stalled 10 s (the SDK's flush timeout) in about
a third of runs. This order: 90 of 90 complete, in order, open + play under 0.25 s.
Each recorded colour frame becomes exactly one Frame.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from edge_mm.errors import SourceError

from .base import Frame, Source
from .rs_frames import FramesetConverter, check_filter_names, describe_streams, import_pyrealsense2

log = logging.getLogger(__name__)

RECORDING_SUFFIXES = (".bag", ".db3")
EOF_DRAIN_MS = 20  # once the player has stopped, how long to wait for framesets still queued
RESUME_JOIN_S = 2.0  # after stop(), the resume helper returns at once; bounded anyway


class RecordingSource(Source):
    """Play a RealSense recording once (or forever with loop=True), every colour frame exactly once.

    filters:        RealSense post-processing filters (names from rs_frames.FILTER_ORDER); none by
                    default so recorded values come through unchanged.
    poll_timeout_ms: how long one wait for the next frameset lasts while the player is playing.
    stall_timeout_s: give up if the player says it is playing but delivers nothing for this long.
    """

    live = False

    def __init__(
        self,
        path: str,
        *,
        loop: bool = False,
        filters: Sequence[str] = (),
        filter_options: Optional[Mapping[str, Mapping[str, float]]] = None,
        poll_timeout_ms: int = 100,
        stall_timeout_s: float = 10.0,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.loop = bool(loop)
        self.poll_timeout_ms = int(poll_timeout_ms)
        self.stall_timeout_s = float(stall_timeout_s)
        self._filters = check_filter_names(filters)
        self._filter_options = filter_options
        self._pipe: Any = None
        self._playback: Any = None
        self._resumer: Optional[threading.Thread] = None
        self._converter: Optional[FramesetConverter] = None
        self.depth_scale: float = 0.0
        self.streams: str = ""
        self.serial: str = ""
        self.loops_done = 0
        self._frames_this_pass = 0

    @property
    def name(self) -> str:
        return f"recording:{self.path}"

    # --- open / close -------------------------------------------------------------------------

    def _open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"recording {self.path} does not exist; give an existing .bag or .db3 file")
        if self.path.suffix.lower() not in RECORDING_SUFFIXES:
            raise SourceError(f"{self.path} is not a RealSense recording; expected a .bag or .db3 file")
        rs = import_pyrealsense2()
        self._check_streams(rs)
        self._converter = FramesetConverter(rs, self._filters, self._filter_options)
        self._start(rs)

    def _check_streams(self, rs: Any) -> None:
        """Name what the file holds when it lacks colour or depth (the pipeline only says it cannot resolve)."""
        try:
            device = rs.context().load_device(str(self.path))
        except RuntimeError as exc:
            raise SourceError(f"cannot read recording {self.path} ({exc}); is it a RealSense .bag/.db3?") from exc
        try:
            profiles = [p for sensor in device.query_sensors() for p in sensor.get_stream_profiles()]
            kinds = {p.stream_type() for p in profiles}
            self.streams = describe_streams(profiles)
            missing = [
                name for name, kind in (("depth", rs.stream.depth), ("colour", rs.stream.color)) if kind not in kinds
            ]
            if missing:
                raise SourceError(
                    f"recording {self.path} has no {' or '.join(missing)} stream (it has: {self.streams}); "
                    "record colour and depth together"
                )
        finally:
            del device

    def _start(self, rs: Any) -> None:
        config = rs.config()
        config.enable_device_from_file(str(self.path), repeat_playback=False)
        # By type only: a file keeps its recorded formats and asking for another fails to resolve.
        config.enable_stream(rs.stream.depth)
        config.enable_stream(rs.stream.color)
        pipe = rs.pipeline()
        try:
            # Resolve first: start() reuses this resolved profile, so the player can be switched to
            # non-real-time and paused before it reads anything. Otherwise it starts in real time
            # (a short file can end before we pause it) and it starts reading as soon as the first
            # sensor starts, dropping the other sensor's first frames.
            resolved = config.resolve(rs.pipeline_wrapper(pipe))
            player = resolved.get_device().as_playback()
            player.set_real_time(False)
            player.pause()
            profile = pipe.start(config)
        except RuntimeError as exc:
            raise SourceError(f"cannot play recording {self.path}: {exc}") from exc
        self._pipe = pipe
        device = profile.get_device()
        self._playback = device.as_playback()
        # Both sensors are running now: rewind and throw away what start() let through.
        self._playback.seek(datetime.timedelta(0))
        while pipe.try_wait_for_frames(EOF_DRAIN_MS)[0]:
            pass
        # In non-real-time mode resume() returns only when the player is idle, and the player
        # waits for us to take frames: called here it would stall (10 s SDK timeout). Resume
        # from a helper thread (the SDK releases the GIL) while this thread reads.
        self._resumer = threading.Thread(target=self._playback.resume, name="playback-resume", daemon=True)
        self._resumer.start()
        try:
            self.depth_scale = float(device.first_depth_sensor().get_depth_scale())
        except RuntimeError as exc:
            raise SourceError(f"recording {self.path} has no depth scale ({exc}); it cannot give metres") from exc
        if not self.depth_scale > 0:
            raise SourceError(f"recording {self.path} reports depth scale {self.depth_scale}; it must be positive")
        if device.supports(rs.camera_info.serial_number):
            self.serial = device.get_info(rs.camera_info.serial_number)

    def _stop(self) -> None:
        if self._pipe is not None:
            try:
                self._pipe.stop()
            except RuntimeError:
                pass  # already stopped
        if self._resumer is not None:
            self._resumer.join(timeout=RESUME_JOIN_S)
        self._pipe = self._playback = self._resumer = None

    def _close(self) -> None:
        self._stop()

    # --- reading ------------------------------------------------------------------------------

    def _read(self) -> Optional[Frame]:
        rs = import_pyrealsense2()
        while True:
            frameset = self._next_frameset(rs)
            if frameset is None:
                if not self.loop or self._interrupted.is_set():
                    return None
                if self._frames_this_pass == 0:
                    raise SourceError(f"recording {self.path} holds no complete colour + depth frame; nothing to loop")
                self._restart(rs)
                continue
            capture_time = time.perf_counter()
            converted = self._converter.convert(frameset, self.depth_scale, capture_time)
            if converted is None:
                continue  # only depth moved on: the colour frame was already delivered
            bgr, depth_m, timestamp_ms, meta = converted
            meta.update(source="recording", file=str(self.path), serial=self.serial, loop=self.loops_done)
            self._frames_this_pass += 1
            return Frame(bgr, depth_m, timestamp_ms, capture_time, meta=meta)

    def _next_frameset(self, rs: Any) -> Any:
        """The next frameset, or None at the end of the file (quickly: no long timeout at EOF)."""
        waited_since = time.perf_counter()
        while not self._interrupted.is_set():
            # In non-real-time mode the player finishes each callback (which queues the frameset
            # for us) before it moves on, so once it reports stopped everything it sent is
            # already queued: a short drain wait is enough to tell the end of the file.
            stopped = self._playback.current_status() == rs.playback_status.stopped and not self._resumer.is_alive()
            ok, frameset = self._pipe.try_wait_for_frames(EOF_DRAIN_MS if stopped else self.poll_timeout_ms)
            if ok:
                return frameset
            if stopped:
                return None
            if time.perf_counter() - waited_since > self.stall_timeout_s:
                raise SourceError(
                    f"recording {self.path} stalled: no frame for {self.stall_timeout_s:.0f} s while playing; "
                    "the file may be truncated"
                )
        return None  # interrupted: the capture thread is stopping

    def _restart(self, rs: Any) -> None:
        """Start over for loop=True: a fresh pipeline, fresh filter history, same frame index."""
        self._stop()
        self._converter.reset()
        self.loops_done += 1
        self._frames_this_pass = 0
        log.info("recording %s: looping (pass %d)", self.path, self.loops_done + 1)
        self._start(rs)
