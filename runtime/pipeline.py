"""The runtime pipeline: a source, stages and sinks; it knows no model.

    source ─ capture thread ─> prepare ×k ─> infer ×1 ─> finish + draw ×k ─> sinks (caller's thread)

Each stage (runtime.stages.base.Stage) contributes hooks: `prepare` (model inputs) runs in the
preprocess workers, `infer` in the single inference thread (a backend runs one request at a time),
`finish` (adds to the frame's result) and `draw` (its overlay part) in the finish workers, and
`after_output` on the output thread in frame order (e.g. CLIP takes its crop there and embeds it
in its own thread, at its own rate, never blocking the stream). A stage with a slow model of its
own keeps it off this path; a stage with nothing to compute overrides nothing of it.

The inference thread runs on a core of its own at normal priority; the prepare and finish workers
(and a video sink's encoder) run at the lowest priority on the other cores, so on a CPU backend they
use the cycles the model leaves idle instead of slowing it (runtime.threads; off with
set_thread_tuning(False)). During a run OpenCV calls run on the calling thread, not OpenCV's pool.

Each arrow is a bounded queue, so the stages overlap and the slowest one sets the pace. Between the
source and the first stage sits the capture thread's hand-over: a newest-frame slot for cameras
(stale frames are dropped and counted; the next frame is taken just before inference can start on
it, so it is fresh) and a blocking queue for files (every frame is processed exactly once). After
that every queue blocks, so nothing is dropped inside the pipeline. Stages with several workers
hand their results on in frame order (an ordered hand-off), so outputs are always in order.

The outputs run on the caller's thread, because OpenCV windows must be driven from one thread and
Ctrl-C arrives there. Any stop (end of stream, --frames reached, q, Ctrl-C, SIGTERM, a source or
stage error) stops every thread and closes every output, so video, events and stats files are
complete whatever ended the run.

Interface for the CLI, a window or a web page (thread-safe; applied between frames):
    pipeline.request_snapshot()          save the next result's images (overlay, colour, depth, stages')
    pipeline.toggle_recording()          start / stop an extra video sink (made by `make_recording`)
    pipeline.add_sink(s) / remove_sink(s)
    pipeline.subscribe(on_result=f, on_event=g)   f(FrameResult) per frame, g(dict) per stage event,
                                                  both on the output thread, after the sinks
    pipeline.stats                       runtime.stats.PipelineStats: snapshot() / summary() any time
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2

from edge_mm.errors import EdgeMMError
from runtime.overlay import draw_text_panel
from runtime.sinks.window import Controls
from runtime.sources import CaptureThread, Frame, Source
from runtime.stages.base import FrameResult, Stage, check_order
from runtime.stats import PipelineStats
from runtime.threads import become_helper_thread, become_inference_thread, opencv_threads

__all__ = ["FrameResult", "Pipeline", "RunOutcome", "StopSignals", "save_snapshot"]

log = logging.getLogger("edge_mm.runtime.pipeline")

POLL_S = 0.1  # how often blocked threads look at the stop flag (and Ctrl-C gets through)
MEAN_WEIGHT = 0.2  # exponential running means of stage times (adapts within a few frames)


class _End:
    """Marks the end of the stream in the queues."""


END = _End()


class _Stopped(Exception):
    """Raised inside a worker when the pipeline is stopping."""


@dataclasses.dataclass
class RunOutcome:
    frames: int
    reason: str  # "end of stream", "frame limit", "quit", "interrupted", "error"
    error: Optional[BaseException] = None

    @property
    def interrupted(self) -> bool:
        return self.reason == "interrupted"


class StopSignals:
    """The one SIGINT/SIGTERM handler of a run (docker stop, systemd, Ctrl-C).

    Outside the frame loop a signal raises KeyboardInterrupt at once (setup and teardown are cut
    short and cleaned up by `finally` blocks). Inside it (`between_frames()`) it only sets a flag
    that the loop checks after each frame, so a stop never falls between one frame's outputs (the
    video one frame ahead of the events log). Only the main thread can install it; elsewhere it is
    inert and the caller's own handling applies.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._deferred = False
        self._previous: Dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        from edge_mm.cli_support import note_stop_signal

        note_stop_signal(signum)  # the command exits 143 for SIGTERM, 130 for Ctrl-C
        self.requested = True
        if not self._deferred:
            raise KeyboardInterrupt

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    @contextlib.contextmanager
    def between_frames(self) -> Iterator["StopSignals"]:
        self._deferred = True
        try:
            yield self
        finally:
            self._deferred = False

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


class _TimedSource:
    """Wraps a source so the capture thread's reads are timed as the 'capture' stage."""

    def __init__(self, inner: Source, stats: PipelineStats) -> None:
        self.inner = inner
        self.stats = stats

    @property
    def live(self) -> bool:
        return self.inner.live

    @property
    def name(self) -> str:
        return self.inner.name

    def open(self) -> "_TimedSource":
        self.inner.open()
        return self

    def read(self) -> Optional[Frame]:
        start, cpu = time.perf_counter(), time.thread_time()
        frame = self.inner.read()
        if frame is not None:
            self.stats.add_stage("capture", time.perf_counter() - start, time.thread_time() - cpu)
        return frame

    def interrupt(self) -> None:
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()


class _OrderedHandoff:
    """Puts items into `out` strictly in sequence order, whichever worker finishes first."""

    def __init__(self, out: "queue.Queue[Any]", stop: threading.Event) -> None:
        self.out = out
        self.stop = stop
        self._cond = threading.Condition()
        self._next = 0

    def put(self, seq: int, item: Any) -> None:
        with self._cond:
            while seq != self._next:
                if self.stop.is_set():
                    raise _Stopped
                self._cond.wait(POLL_S)
        _put(self.out, item, self.stop)  # only the holder of the next number gets here
        with self._cond:
            self._next += 1
            self._cond.notify_all()


def _put(q: "queue.Queue[Any]", item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=POLL_S)
            return
        except queue.Full:
            continue


def _get(q: "queue.Queue[Any]", stop: threading.Event, done: Optional[threading.Event] = None) -> Any:
    while True:
        if stop.is_set() or (done is not None and done.is_set()):
            raise _Stopped
        try:
            return q.get(timeout=POLL_S)
        except queue.Empty:
            continue


class Pipeline:
    """Runs `stages` on every frame of `source` and writes the results to `sinks`.

    max_frames:    stop after this many frames (None: the whole stream).
    workers:       threads for preparing and for finishing + drawing each (inference has one). More
                   help on a GPU backend with idle cores; on a CPU backend the model uses the cores.
    controls:      key state shared with a window (pause, overlay, snapshot, record), or None.
    render_lines:  returns text lines drawn first in each frame's panel (stats), or None.
    on_result:     a subscriber: called on the caller's thread after each frame's outputs.
    idle:          called while paused or waiting for frames (keeps a window responsive).
    snapshot_dir:  where request_snapshot() writes (default runs/).
    make_recording: returns a new video sink for toggle_recording() (None: recording unavailable).
    announce:      receives one-line messages (snapshot paths, recording started/stopped).
    signals:       the run's StopSignals (one handler for the whole CLI run); None: installs its own.
    """

    def __init__(
        self,
        source: Source,
        stages: Sequence[Stage],
        sinks: Sequence[Any] = (),
        stats: Optional[PipelineStats] = None,
        *,
        max_frames: Optional[int] = None,
        workers: int = 1,
        queue_size: Optional[int] = None,
        controls: Optional[Controls] = None,
        render_lines: Optional[Callable[[], List[str]]] = None,
        on_result: Optional[Callable[[FrameResult], None]] = None,
        idle: Optional[Callable[[], None]] = None,
        snapshot_dir: Optional[Path] = None,
        make_recording: Optional[Callable[[], Any]] = None,
        announce: Optional[Callable[[str], None]] = None,
        signals: Optional[StopSignals] = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        self.stages: List[Stage] = list(stages)
        if not self.stages:
            raise ValueError("a pipeline needs at least one stage")
        check_order(self.stages)
        self.source = source
        self._sinks: List[Any] = list(sinks)
        self.stats = stats or PipelineStats()
        self.max_frames = max_frames
        self.workers = max(1, int(workers))
        self.live = bool(source.live)
        # One item per queue: each step has its own thread, so a deeper queue adds latency, not throughput.
        self.queue_size = queue_size or 1
        self.controls = controls or Controls()
        self.render_lines = render_lines
        self.idle = idle
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir is not None else Path("runs")
        self.make_recording = make_recording
        self.announce = announce or (lambda text: log.info("%s", text))
        self.signals = signals
        self.recording: Any = None
        self._result_subscribers: List[Callable[[FrameResult], None]] = [on_result] if on_result else []
        self._event_subscribers: List[Callable[[Dict[str, Any]], None]] = []
        self._requests_lock = threading.Lock()
        self._requests: List[Callable[[FrameResult], None]] = []  # applied on the output thread between frames
        self._stop = threading.Event()
        self._errors: List[BaseException] = []
        self._threads: List[threading.Thread] = []
        self._head_lock = threading.Lock()
        self._taken = 0
        self._head_done = False
        self._to_infer: "queue.Queue[Any]" = queue.Queue()
        self._source_error: Optional[BaseException] = None
        self._infer_took = threading.Event()
        # For taking live frames just in time: when the running inference began, and running means.
        self._infer_started: Optional[float] = None
        self._in_preprocess = 0  # frames taken by preprocess workers and not yet queued for inference
        self._count_lock = threading.Lock()  # never held while taking _head_lock
        self._infer_mean = 0.0
        self._preprocess_mean = 0.0

    # -- the interface for controls (window keys, a web page): thread-safe, applied between frames --
    @property
    def sinks(self) -> List[Any]:
        """The current sinks (a copy: change them with add_sink / remove_sink)."""
        return list(self._sinks)

    def subscribe(
        self,
        on_result: Optional[Callable[[FrameResult], None]] = None,
        on_event: Optional[Callable[[Dict[str, Any]], None]] = None,
    ) -> None:
        """Per-frame results and stage events, on the output thread after the sinks, in order."""
        with self._requests_lock:
            if on_result is not None:
                self._result_subscribers.append(on_result)
            if on_event is not None:
                self._event_subscribers.append(on_event)

    def _request(self, action: Callable[[FrameResult], None]) -> None:
        with self._requests_lock:
            self._requests.append(action)

    def add_sink(self, sink: Any) -> None:
        self._request(lambda _result: self._sinks.insert(0, sink))

    def remove_sink(self, sink: Any, close: bool = True) -> None:
        def remove(_result: FrameResult) -> None:
            if sink in self._sinks:
                self._sinks.remove(sink)
            if close:
                sink.close()

        self._request(remove)

    def request_snapshot(self) -> None:
        """Save the next written frame's overlay, colour, depth and the stages' images as PNGs."""

        def snapshot(result: FrameResult) -> None:
            paths = save_snapshot(result, self.snapshot_dir, stages=self.stages)
            self.announce(f"snapshot: {', '.join(str(p) for p in paths)}")

        self._request(snapshot)

    def toggle_recording(self) -> None:
        """Start recording the annotated frames to a new video, or stop the running recording."""

        def toggle(_result: FrameResult) -> None:
            if self.recording is None:
                if self.make_recording is None:
                    self.announce("recording is not available in this run")
                    return
                self.recording = self.make_recording()
                self._sinks.insert(0, self.recording)
                self.announce(f"recording to {self.recording.describe()} (r stops)")
            else:
                sink, self.recording = self.recording, None
                self._sinks.remove(sink)
                sink.close()
                self.announce(f"recording stopped: {sink.describe()} ({getattr(sink, 'frames_written', '?')} frames)")

        self._request(toggle)

    def _apply_requests(self, result: FrameResult) -> None:
        if self.controls.snapshot_requested:
            self.controls.snapshot_requested = False
            self.request_snapshot()
        if self.controls.record_toggle_requested:
            self.controls.record_toggle_requested = False
            self.toggle_recording()
        with self._requests_lock:
            requests, self._requests = self._requests, []
        for action in requests:
            action(result)

    # -- workers ---------------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        self._errors.append(exc)
        self._stop.set()

    def _next_frame(self, capture: CaptureThread) -> Tuple[int, Any]:
        """(sequence number, frame or END) for a preprocess worker; (-1, None) once END was handed out."""
        with self._head_lock:
            if self._head_done:
                return -1, None
            if self._stop.is_set():
                raise _Stopped
            if self.max_frames is not None and self._taken >= self.max_frames:
                frame = None
            else:
                if self.live:
                    self._wait_for_room()
                # Waits in short steps inside; returns None at the end of the stream or once stop() ran.
                try:
                    frame = capture.get(timeout=None)
                except Exception as exc:  # noqa: BLE001 - a lost camera, an unreadable file, ...
                    # The frames already captured still go through; the error is raised after them.
                    self._source_error = exc
                    frame = None
                if self._stop.is_set():
                    raise _Stopped
            seq = self._taken
            self._taken += 1
            if frame is None:
                self._head_done = True
                return seq, END
            with self._count_lock:
                self._in_preprocess += 1
            return seq, frame

    def _wait_for_room(self) -> None:
        """Live sources: take the next frame just in time, so it is as fresh as it can be.

        That is when the inference queue is empty and the running inference is expected to end within
        one preprocessing time (running means of both). Taking it as soon as the queue had room would
        let it age for up to one inference in the queue; waiting for inference to be idle would lose
        the overlap of preprocessing with inference.
        """
        while True:
            if self._stop.is_set():
                raise _Stopped
            if not self._to_infer.empty() or self._in_preprocess:  # the next inference already has a frame
                self._infer_took.wait(POLL_S)
                self._infer_took.clear()
                continue
            started = self._infer_started
            if started is None:
                return
            wait = started + self._infer_mean - self._preprocess_mean - time.perf_counter()
            if wait <= 0:
                return
            time.sleep(min(wait, POLL_S))

    def _preprocess_worker(self, capture: CaptureThread, handoff: _OrderedHandoff, done: threading.Event) -> None:
        become_helper_thread()
        try:
            while not done.is_set():
                seq, frame = self._next_frame(capture)
                if frame is None:
                    return
                if frame is END:
                    handoff.put(seq, (seq, END))
                    done.set()
                    return
                start, cpu = time.perf_counter(), time.thread_time()
                prepared = [stage.prepare(frame) for stage in self.stages]
                took = time.perf_counter() - start
                self._preprocess_mean += MEAN_WEIGHT * (took - self._preprocess_mean)
                self.stats.add_stage("preprocess", took, time.thread_time() - cpu)
                handoff.put(seq, (seq, (frame, prepared)))
                with self._count_lock:
                    self._in_preprocess -= 1
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the caller's thread
            self._fail(exc)

    def _infer_worker(self, inbox: "queue.Queue[Any]", outbox: "queue.Queue[Any]") -> None:
        become_inference_thread()
        try:
            while True:
                seq, item = _get(inbox, self._stop)
                self._infer_took.set()
                if item is END:
                    _put(outbox, (seq, END), self._stop)
                    return
                frame, prepared = item
                start = self._infer_started = time.perf_counter()
                cpu = time.thread_time()
                outputs = [stage.infer(p) for stage, p in zip(self.stages, prepared)]
                took = time.perf_counter() - start
                self._infer_started = None
                self._infer_mean += MEAN_WEIGHT * (took - self._infer_mean)
                # Thread CPU of the calling thread only: a backend's own worker threads are not in it.
                self.stats.add_stage("infer", took, time.thread_time() - cpu)
                _put(outbox, (seq, (frame, outputs)), self._stop)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def _finish_worker(self, inbox: "queue.Queue[Any]", handoff: _OrderedHandoff, done: threading.Event) -> None:
        become_helper_thread()
        try:
            while True:
                seq, item = _get(inbox, self._stop, done)
                if item is END:
                    handoff.put(seq, END)
                    done.set()
                    return
                frame, outputs = item
                start, cpu = time.perf_counter(), time.thread_time()
                result = FrameResult(frame)
                for stage, out in zip(self.stages, outputs):
                    stage.finish(result, out)
                mid, mid_cpu = time.perf_counter(), time.thread_time()
                self._draw(result)
                self.stats.add_stage("postprocess", mid - start, mid_cpu - cpu)
                self.stats.add_stage("render", time.perf_counter() - mid, time.thread_time() - mid_cpu)
                handoff.put(seq, result)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def _draw(self, result: FrameResult) -> None:
        image = result.frame.color.copy()
        overlay = self.controls.show_heatmap
        lines = list(self.render_lines()) if self.render_lines else []
        for stage in self.stages:
            stage.draw(image, result, overlay)
            lines += stage.text_lines(result)
            result.fields.update(stage.event_fields(result))
        draw_text_panel(image, lines)
        result.image = image

    def _start_threads(self, capture: CaptureThread) -> "queue.Queue[Any]":
        to_infer: "queue.Queue[Any]" = queue.Queue(self.queue_size)
        self._to_infer = to_infer
        to_finish: "queue.Queue[Any]" = queue.Queue(self.queue_size)
        to_output: "queue.Queue[Any]" = queue.Queue(self.queue_size)
        pre_done, finish_done = threading.Event(), threading.Event()
        pre_handoff = _OrderedHandoff(to_infer, self._stop)
        finish_handoff = _OrderedHandoff(to_output, self._stop)
        specs = [
            (f"preprocess-{i}", self._preprocess_worker, (capture, pre_handoff, pre_done)) for i in range(self.workers)
        ]
        specs.append(("infer", self._infer_worker, (to_infer, to_finish)))
        specs += [
            (f"finish-{i}", self._finish_worker, (to_finish, finish_handoff, finish_done)) for i in range(self.workers)
        ]
        for name, target, args in specs:
            thread = threading.Thread(target=target, args=args, name=f"pipeline-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return to_output

    # -- the caller's thread: outputs ------------------------------------------------------------
    def _write_outputs(self, result: FrameResult) -> None:
        start, cpu = time.perf_counter(), time.thread_time()
        # Sinks that record the latency (the events log) go after the others, once it is known.
        for sink in self._sinks:
            if not getattr(sink, "records_latency", False):
                sink.write(result)
        result.done_time = time.perf_counter()
        result.wall_time = time.time()
        for sink in self._sinks:
            if getattr(sink, "records_latency", False):
                sink.write(result)
        for stage in self.stages:
            stage.after_output(result)
        self.flush_events()
        self.stats.add_stage("output", time.perf_counter() - start, time.thread_time() - cpu)
        self.stats.frame_done(result.frame.capture_time, result.done_time, result.metrics)

    def flush_events(self) -> None:
        """Stage events (e.g. CLIP's) to the sinks that take events, then to the subscribers."""
        for stage in self.stages:
            for event in stage.drain_events():
                for sink in self._sinks:
                    write_event = getattr(sink, "write_event", None)
                    if write_event is not None:
                        write_event(event)
                for subscriber in self._event_subscribers:
                    subscriber(event)

    def _wait_while_paused(self) -> None:
        while self.controls.paused and not self.controls.quit and not self._stop.is_set():
            if self.idle:
                self.idle()
            else:
                time.sleep(POLL_S)

    def run(self) -> RunOutcome:
        """Process the stream; returns why it stopped. Source and stage errors are re-raised after cleanup."""
        # The pipeline's parallelism is its own threads; OpenCV's pool would only compete with them.
        with opencv_threads(1):
            return self._run()

    def _run(self) -> RunOutcome:
        capture = CaptureThread(_TimedSource(self.source, self.stats), live=self.live, queue_size=1)
        self._frames, self._last_reason = 0, "end of stream"
        own_signals = self.signals is None
        signals = self.signals or StopSignals()
        for stage in self.stages:
            stage.start()
        self.stats.start()
        capture.start()
        to_output = self._start_threads(capture)
        try:
            with contextlib.ExitStack() as stack:
                if own_signals:
                    stack.enter_context(signals)
                stack.enter_context(signals.between_frames())
                self._loop(to_output, capture, signals)
        except KeyboardInterrupt:
            self._last_reason = "interrupted"
        finally:
            self._shutdown(capture)
        reason, frames = self._last_reason, self._frames
        if self._errors:
            return RunOutcome(frames, "error", self._errors[0])
        if self._source_error is not None and reason == "end of stream":
            return RunOutcome(frames, "error", self._source_error)
        return RunOutcome(frames, reason)

    def _loop(self, to_output: "queue.Queue[Any]", capture: CaptureThread, signals: StopSignals) -> None:
        """Hand each result to the outputs, in order, until the stream, a limit, q or an error stops it."""
        while True:
            signals.check()
            self._wait_while_paused()
            if self.controls.quit:
                self._last_reason = "quit"
                return
            try:
                item = to_output.get(timeout=POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    self._last_reason = "error"
                    return
                if self.idle:
                    self.idle()
                continue
            if item is END:
                limited = self.max_frames is not None and self._frames >= self.max_frames
                self._last_reason = "frame limit" if limited else "end of stream"
                return
            self._write_outputs(item)
            self._frames += 1
            self.stats.set_counter("dropped", capture.dropped)
            reconnects = getattr(self.source, "reconnects", 0)
            if reconnects:
                self.stats.set_counter("reconnects", reconnects)
            for subscriber in list(self._result_subscribers):
                subscriber(item)
            self._apply_requests(item)

    def _shutdown(self, capture: CaptureThread) -> None:
        self._stop.set()
        capture.stop()
        for thread in self._threads:
            thread.join(timeout=5)
            if thread.is_alive():
                log.warning("%s did not stop within 5 s", thread.name)
        self.stats.set_counter("dropped", capture.dropped)
        with contextlib.suppress(Exception):
            self.flush_events()  # events a stage produced after the last frame
        if self.recording is not None:
            sink, self.recording = self.recording, None
            if sink in self._sinks:
                self._sinks.remove(sink)
            sink.close()
            self.announce(f"recording stopped: {sink.describe()} ({getattr(sink, 'frames_written', '?')} frames)")


def save_snapshot(
    result: FrameResult, folder: Path, stem: Optional[str] = None, stages: Sequence[Stage] = ()
) -> List[Path]:
    """The annotated frame, the colour frame, the depth and each stage's images as PNGs; returns the paths."""
    from edge_mm.atomic import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or time.strftime("snapshot-%Y%m%d-%H%M%S") + f"-{result.frame.index:06d}"
    images = {
        "overlay": result.image,
        "color": result.frame.color,
        "depth": cv2.applyColorMap(cv2.convertScaleAbs(result.frame.depth_m, alpha=255.0 / 6.0), cv2.COLORMAP_TURBO),
    }
    for stage in stages:
        images.update(stage.snapshot_images(result))
    written = []
    for kind, image in images.items():
        path = folder / f"{stem}-{kind}.png"
        with atomic_path(path) as tmp:
            ok, buf = cv2.imencode(".png", image)
            if not ok:
                raise EdgeMMError(f"could not encode the {kind} snapshot as PNG")
            tmp.write_bytes(buf.tobytes())
        written.append(path)
    return written
