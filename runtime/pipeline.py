"""The staged runtime pipeline: capture ∥ preprocess ∥ inference ∥ postprocess + render ∥ output.

    source ─ capture thread ─> preprocess ×k ─> infer ×1 ─> postprocess+render ×k ─> outputs (caller's thread)

Each arrow is a bounded queue, so the stages overlap and the slowest one sets the pace: with
enough CPU the pipeline runs as fast as the model. Between the source and the first stage sits the
capture thread's hand-over: a newest-frame slot for cameras (stale frames are dropped and counted;
the next frame is taken just before inference can start on it, so it is fresh) and a blocking queue for files (every frame is processed exactly once). After
that every queue blocks, so nothing is dropped inside the pipeline. Stages with several workers
hand their results on in frame order (an ordered hand-off), so outputs are always in order.

The outputs run on the caller's thread, because OpenCV windows must be driven from one thread and
Ctrl-C (KeyboardInterrupt) arrives there. Any stop (end of stream, --frames reached, q, Ctrl-C,
SIGTERM, a source or stage error) stops every thread and closes every output, so video, events
and stats files are complete whatever ended the run.
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
from typing import Any, Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge_mm.errors import EdgeMMError
from runtime.overlay import render
from runtime.saliency import SaliencyModel, SaliencyResult, mask_iou
from runtime.sinks.window import Controls
from runtime.sources import CaptureThread, Frame, Source
from runtime.stats import PipelineStats

log = logging.getLogger("edge_mm.runtime.pipeline")

POLL_S = 0.1  # how often blocked threads look at the stop flag (and Ctrl-C gets through)
MEAN_WEIGHT = 0.2  # exponential running means of stage times (adapts within a few frames)


class _End:
    """Marks the end of the stream in the queues."""


END = _End()


class _Stopped(Exception):
    """Raised inside a worker when the pipeline is stopping."""


@dataclasses.dataclass
class FrameResult:
    """One processed frame, as the outputs see it."""

    frame: Frame
    saliency: SaliencyResult
    image: np.ndarray  # the annotated frame (BGR uint8)
    iou: Optional[float] = None  # mask vs the source's ground truth, when it has one (synthetic scenes)
    done_time: float = 0.0  # perf_counter when the outputs were written
    wall_time: float = 0.0  # time.time() at the same moment

    @property
    def latency_s(self) -> float:
        return max(0.0, self.done_time - self.frame.capture_time)


@dataclasses.dataclass
class RunOutcome:
    frames: int
    reason: str  # "end of stream", "frame limit", "quit", "interrupted", "error"
    error: Optional[BaseException] = None

    @property
    def interrupted(self) -> bool:
        return self.reason == "interrupted"


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
        start = time.perf_counter()
        frame = self.inner.read()
        if frame is not None:
            self.stats.add_stage("capture", time.perf_counter() - start)
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
    """Runs `model` on every frame of `source` and writes the results to `sinks`.

    max_frames:    stop after this many frames (None: the whole stream).
    workers:       threads for preprocessing and for postprocessing + rendering each (inference has
                   one: a backend runs one request at a time). More help on a GPU backend with idle
                   cores; on a CPU backend the model already uses every core.
    controls:      key state shared with a window (pause, overlay, snapshot, record), or None.
    render_lines:  returns the text lines drawn on each frame (stats), or None for none.
    on_result:     called on the caller's thread after each frame's outputs (progress prints, snapshots).
    idle:          called while paused or waiting for frames (keeps a window responsive).
    """

    def __init__(
        self,
        source: Source,
        model: SaliencyModel,
        sinks: Sequence[Any],
        stats: Optional[PipelineStats] = None,
        *,
        max_frames: Optional[int] = None,
        workers: int = 1,
        queue_size: Optional[int] = None,
        controls: Optional[Controls] = None,
        render_lines: Optional[Callable[[], List[str]]] = None,
        alpha: float = 0.5,
        colormap: str = "jet",
        on_result: Optional[Callable[[FrameResult], None]] = None,
        idle: Optional[Callable[[], None]] = None,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        self.source = source
        self.model = model
        self.sinks = list(sinks)
        self.stats = stats or PipelineStats()
        self.max_frames = max_frames
        self.workers = max(1, int(workers))
        self.live = bool(source.live)
        # One item per queue: each stage has its own thread, so a deeper queue adds latency, not throughput.
        self.queue_size = queue_size or 1
        self.controls = controls or Controls()
        self.render_lines = render_lines
        self.alpha = alpha
        self.colormap = colormap
        self.on_result = on_result
        self.idle = idle
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
        try:
            while not done.is_set():
                seq, frame = self._next_frame(capture)
                if frame is None:
                    return
                if frame is END:
                    handoff.put(seq, (seq, END))
                    done.set()
                    return
                start = time.perf_counter()
                feeds = self.model.preprocess(frame.color, frame.depth_m)
                took = time.perf_counter() - start
                self._preprocess_mean += MEAN_WEIGHT * (took - self._preprocess_mean)
                self.stats.add_stage("preprocess", took)
                handoff.put(seq, (seq, (frame, feeds)))
                with self._count_lock:
                    self._in_preprocess -= 1
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the caller's thread
            self._fail(exc)

    def _infer_worker(self, inbox: "queue.Queue[Any]", outbox: "queue.Queue[Any]") -> None:
        try:
            while True:
                seq, item = _get(inbox, self._stop)
                self._infer_took.set()
                if item is END:
                    _put(outbox, (seq, END), self._stop)
                    return
                frame, feeds = item
                start = self._infer_started = time.perf_counter()
                pred = self.model.infer(feeds)
                took = time.perf_counter() - start
                self._infer_started = None
                self._infer_mean += MEAN_WEIGHT * (took - self._infer_mean)
                self.stats.add_stage("infer", took)
                _put(outbox, (seq, (frame, pred)), self._stop)
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def _render_worker(self, inbox: "queue.Queue[Any]", handoff: _OrderedHandoff, done: threading.Event) -> None:
        try:
            while True:
                seq, item = _get(inbox, self._stop, done)
                if item is END:
                    handoff.put(seq, END)
                    done.set()
                    return
                frame, pred = item
                start = time.perf_counter()
                depth = frame.depth_m if frame.meta.get("depth_kind", "metric") == "metric" else None
                saliency = self.model.postprocess(pred, frame.size, depth)
                iou = None
                gt = frame.meta.get("mask")
                if isinstance(gt, np.ndarray) and saliency.mask is not None and gt.shape == saliency.mask.shape:
                    iou = mask_iou(saliency.mask, gt)
                mid = time.perf_counter()
                lines = self.render_lines() if self.render_lines else []
                image = render(
                    frame.color,
                    saliency,
                    lines,
                    show_heatmap=self.controls.show_heatmap,
                    alpha=self.alpha,
                    colormap=self.colormap,
                )
                end = time.perf_counter()
                self.stats.add_stage("postprocess", mid - start)
                self.stats.add_stage("render", end - mid)
                handoff.put(seq, FrameResult(frame, saliency, image, iou))
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001
            self._fail(exc)

    def _start_threads(self, capture: CaptureThread) -> "queue.Queue[Any]":
        to_infer: "queue.Queue[Any]" = queue.Queue(self.queue_size)
        self._to_infer = to_infer
        to_render: "queue.Queue[Any]" = queue.Queue(self.queue_size)
        to_output: "queue.Queue[Any]" = queue.Queue(self.queue_size)
        pre_done, render_done = threading.Event(), threading.Event()
        pre_handoff = _OrderedHandoff(to_infer, self._stop)
        render_handoff = _OrderedHandoff(to_output, self._stop)
        specs = [
            (f"preprocess-{i}", self._preprocess_worker, (capture, pre_handoff, pre_done)) for i in range(self.workers)
        ]
        specs.append(("infer", self._infer_worker, (to_infer, to_render)))
        specs += [
            (f"render-{i}", self._render_worker, (to_render, render_handoff, render_done)) for i in range(self.workers)
        ]
        for name, target, args in specs:
            thread = threading.Thread(target=target, args=args, name=f"pipeline-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return to_output

    # -- the caller's thread: outputs ------------------------------------------------------------
    @contextlib.contextmanager
    def _interrupts_between_frames(self):
        """Ctrl-C / SIGTERM stop the run between frames, never inside one frame's outputs.

        A KeyboardInterrupt raised between one sink's write and the next would leave the video one
        frame ahead of the events log. So while the loop runs, the signals only set a flag that
        the loop checks after each frame and while it waits (only the main thread can do this).
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def request_stop(signum, frame):
            self._interrupt_requested = True

        for sig in previous:
            signal.signal(sig, request_stop)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _check_interrupt(self) -> None:
        if self._interrupt_requested:
            raise KeyboardInterrupt

    def _write_outputs(self, result: FrameResult) -> None:
        start = time.perf_counter()
        # Sinks that record the latency (the events log) go after the others, once it is known.
        for sink in self.sinks:
            if not getattr(sink, "records_latency", False):
                sink.write(result)
        result.done_time = time.perf_counter()
        result.wall_time = time.time()
        for sink in self.sinks:
            if getattr(sink, "records_latency", False):
                sink.write(result)
        self.stats.add_stage("output", time.perf_counter() - start)
        self.stats.frame_done(result.frame.capture_time, result.done_time, result.iou)

    def _wait_while_paused(self) -> None:
        while self.controls.paused and not self.controls.quit and not self._stop.is_set():
            if self.idle:
                self.idle()
            else:
                time.sleep(POLL_S)

    def run(self) -> RunOutcome:
        """Process the stream; returns why it stopped. Source and stage errors are re-raised after cleanup."""
        capture = CaptureThread(_TimedSource(self.source, self.stats), live=self.live, queue_size=1)
        self._frames, self._last_reason, self._interrupt_requested = 0, "end of stream", False
        self.stats.start()
        capture.start()
        to_output = self._start_threads(capture)
        try:
            with self._interrupts_between_frames():
                self._loop(to_output, capture)
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

    def _loop(self, to_output: "queue.Queue[Any]", capture: CaptureThread) -> None:
        """Hand each result to the outputs, in order, until the stream, a limit, q or an error stops it."""
        while True:
            self._check_interrupt()
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
            self.stats.counters["dropped"] = capture.dropped
            reconnects = getattr(self.source, "reconnects", 0)
            if reconnects:
                self.stats.counters["reconnects"] = reconnects
            if self.on_result:
                self.on_result(item)

    def _shutdown(self, capture: CaptureThread) -> None:
        self._stop.set()
        capture.stop()
        for thread in self._threads:
            thread.join(timeout=5)
            if thread.is_alive():
                log.warning("%s did not stop within 5 s", thread.name)
        self.stats.counters["dropped"] = capture.dropped


def save_snapshot(result: FrameResult, folder: Path, stem: Optional[str] = None) -> List[Path]:
    """The annotated frame, the colour frame, the saliency map and the depth as PNGs; returns the paths."""
    from edge_mm.atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    stem = stem or time.strftime("snapshot-%Y%m%d-%H%M%S") + f"-{result.frame.index:06d}"
    images = {
        "overlay": result.image,
        "color": result.frame.color,
        "saliency": cv2.convertScaleAbs(result.saliency.prob, alpha=255.0),
        "depth": cv2.applyColorMap(cv2.convertScaleAbs(result.frame.depth_m, alpha=255.0 / 6.0), cv2.COLORMAP_TURBO),
    }
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
