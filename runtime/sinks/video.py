"""The annotated video: cv2.VideoWriter to a hidden partial file, renamed to the target on close.

Why rename instead of writing in place: an MP4's index (the `moov` atom) is written when the writer
is released, so until then a file at the target name would be unplayable. Writing beside the target
and renaming on close means the target either does not exist or is a complete video. close() runs
at the end of the stream, on Ctrl-C (SIGINT/SIGTERM), on a camera that is lost for good and on any
other error, so all of those leave a valid file with every frame written so far. Only a hard kill
(SIGKILL, power loss) leaves the hidden `.NAME.<pid>.<random>.partial.mp4` behind, and the next run
to the same target removes it once that pid is gone. The partial name is unique per writer, so two
runs with one --out never write into one file: each renames its own complete video, the last wins.

The pip OpenCV wheels encode `mp4v` into .mp4 and `MJPG` into .avi (H.264 is not available there).

Encoding runs on a thread of its own at helper priority (runtime.threads), fed through a short
queue: the pipeline's output thread hands a frame over and goes on, and the encoder uses the cycles
the model leaves idle instead of taking a core from it. The queue blocks when full, so every frame is
written (a file is not a live view); an encoder error is raised by the next write() or by close().
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import cv2
import numpy as np

from edge_mm.atomic import clean_stale, temp_prefix
from edge_mm.errors import EdgeMMError, UsageError
from runtime.threads import become_helper_thread

from .base import Sink

log = logging.getLogger("edge_mm.runtime.video")

# No camera delivers more, and OpenCV's encoders fail (with their own log lines) on absurd rates.
MAX_FPS = 1000.0
QUEUE_FRAMES = 4  # frames waiting for the encoder (~3.6 MB at 640x480): rides out a slow encode or two

FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}


def partial_suffix(target: Path) -> str:
    # Keep the suffix: OpenCV's FFmpeg backend picks the container from it.
    return f".partial{target.suffix}"


def partial_path(target: Path) -> Path:
    """A hidden temporary beside `target`, unique to this writer (pid + random)."""
    return target.with_name(f"{temp_prefix(target)}{secrets.token_hex(4)}{partial_suffix(target)}")


def check_video_path(path: Union[str, Path]) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder; give a file name such as {path / 'annotated.mp4'}")
    if path.suffix.lower() not in FOURCC_BY_SUFFIX:
        raise UsageError(
            f"--out {path}: write video as .mp4 (mp4v) or .avi (MJPG); {path.suffix or 'no suffix'} is not supported"
        )
    return path


class VideoSink(Sink):
    """Writes each annotated image; the size is fixed by the first frame (later ones are resized to it).

    background=True encodes on the sink's own thread (see the module docstring); False encodes in
    write() itself.
    """

    name = "video"

    def __init__(self, path: Union[str, Path], fps: float = 30.0, background: bool = True) -> None:
        self.path = check_video_path(path)
        if not 0 < fps <= MAX_FPS:  # also refuses nan
            raise UsageError(f"video frame rate must be above 0 and at most {MAX_FPS:g}, got {fps}")
        self.fps = float(fps)
        self.background = background
        self.partial = partial_path(self.path)
        self.frames_written = 0
        self.encode_cpu_s = 0.0  # CPU time spent encoding (on whichever thread encodes)
        self._writer: Optional[Any] = None
        self._size: Optional[Tuple[int, int]] = None
        self._closed = False
        self._queue: "queue.Queue[Optional[np.ndarray]]" = queue.Queue(QUEUE_FRAMES)
        self._encoder: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._error_raised = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create the folder for {self.path} ({exc.strerror}); choose another --out"
            ) from None
        clean_stale(self.path, partial_suffix(self.path))  # left by killed runs

    def _open(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        fourcc = cv2.VideoWriter_fourcc(*FOURCC_BY_SUFFIX[self.path.suffix.lower()])
        writer = cv2.VideoWriter(str(self.partial), fourcc, self.fps, (w, h))
        if not writer.isOpened():
            writer.release()
            raise UsageError(
                f"OpenCV cannot write {self.path.suffix} video to {self.path} (codec {FOURCC_BY_SUFFIX[self.path.suffix.lower()]}, "
                "check the folder is writable); try an .avi file"
            )
        self._writer, self._size = writer, (w, h)

    def write(self, result: Any) -> None:
        self.write_image(result.image)

    def write_image(self, image: np.ndarray) -> None:
        """Queue (or encode) one frame; the writer is opened on the first, so a bad path fails here."""
        if self._closed:
            return
        self._raise_encoder_error()
        if self._writer is None:
            self._open(image)
        if not self.background:
            self._encode(image)
            return
        if self._encoder is None:
            self._encoder = threading.Thread(target=self._encode_queued, name="video-encoder", daemon=True)
            self._encoder.start()
        while True:  # blocks while the encoder is behind; notices an encoder that died
            try:
                self._queue.put(image, timeout=0.1)
                return
            except queue.Full:
                self._raise_encoder_error()

    def _encode(self, image: np.ndarray) -> None:
        cpu = time.thread_time()
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames_written += 1
        self.encode_cpu_s += time.thread_time() - cpu

    def _encode_queued(self) -> None:
        become_helper_thread()
        try:
            while True:
                image = self._queue.get()
                if image is None:
                    return
                self._encode(image)
        except BaseException as exc:  # noqa: BLE001 - raised on the pipeline's thread by write()/close()
            self._error = exc

    def _raise_encoder_error(self) -> None:
        if self._error is not None and not self._error_raised:
            self._error_raised = True  # once: the write that meets it stops the run; close() then only cleans up
            raise EdgeMMError(f"encoding video {self.path} failed: {self._error}") from self._error

    def close(self) -> None:
        """Finish the file and move it to its name; without a single frame, no file is left."""
        if self._closed:
            return
        self._closed = True
        if self._encoder is not None:
            while self._encoder.is_alive():  # the encoder drains what is queued, then stops
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._encoder.join()
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if self.partial.exists():
            os.replace(self.partial, self.path)  # the frames encoded before any error make a valid video
        else:
            log.warning("the video writer produced no file for %s", self.path)
        self._raise_encoder_error()

    def describe(self) -> str:
        return f"video {self.path}"
