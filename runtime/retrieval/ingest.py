"""Fill a retrieval index: image folders, video files and RGB-D sources -> CLIP embeddings (torch-free).

Targets (checked before anything is embedded):

    DIR or IMAGE          image files (.jpg .jpeg .png .bmp .tif .tiff .webp), folders walked recursively
    VIDEO                 frames sampled at --fps (frame time = frame number / the video's frame rate)
    recording:FILE        a RealSense .bag/.db3 (a bare .bag/.db3 path works too), sampled at --fps
    realsense[:SERIAL]    a live camera, until --max-frames or Ctrl-C
    folder:DIR            an RGB-D folder (RGB/ + depth/), as runtime.sources reads it
    synthetic:SEED        synthetic RGB-D scenes (needs --max-frames)

With a saliency model (--saliency CDINET_ARTIFACT), each sampled frame of an RGB-D source is cut
to its salient object (the box of the largest salient region, padded to a square as in
runtime.retrieval.crop) and the box is recorded; frames with no salient object are skipped.
Images and videos have no depth, so they are always embedded whole.

Content hashes make a second run skip what is indexed: sha256 of the file's bytes for an image;
sha256 of (file hash, frame time, view) for a video or recording frame, where view is "frame" or
"salient"; sha256 of (source, timestamp, pixels) for a live or synthetic frame. An image whose hash
is indexed is not even decoded. Items are embedded and committed in batches, so Ctrl-C loses at
most the batch in flight and the same command resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import cv2
import numpy as np

from edge_mm.errors import SourceError, UsageError
from edge_mm.hashing import sha256_file
from runtime.retrieval.crop import DEFAULT_PAD, padded_square_crop
from runtime.retrieval.embed import ClipEmbedder, iter_batches
from runtime.retrieval.store import IndexStore
from runtime.retrieval.thumbnail import make_thumbnail

log = logging.getLogger("edge_mm.runtime.ingest")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".mjpeg"})
RECORDING_SUFFIXES = frozenset({".bag", ".db3"})
SOURCE_KINDS = ("recording", "rosbag", "realsense", "folder", "synthetic")
DEFAULT_FPS = 1.0


# --------------------------------------------------------------------------- targets


@dataclasses.dataclass(frozen=True)
class Target:
    """One thing named on the command line. kind: images | video | source."""

    text: str
    kind: str
    files: tuple = ()  # image files, for kind "images"
    path: Optional[Path] = None  # video file, or the recording file of a source


def _list_images(folder: Path) -> List[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(
            Path(root) / f for f in sorted(files) if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".")
        )
    return found


def _is_source_uri(text: str) -> bool:
    """recording:X, rosbag:X, folder:X, realsense[:SERIAL], synthetic[:SEED]; a bare word only if no such path exists."""
    kind, sep, rest = text.partition(":")
    kind = kind.lower()
    if sep:
        return kind in SOURCE_KINDS and (bool(rest) or kind in ("realsense", "synthetic"))
    return kind in ("realsense", "synthetic") and not Path(text).exists()


def resolve_target(text: str) -> Target:
    """What a command-line target names; UsageError for anything that is not there or not known."""
    if _is_source_uri(text):
        path = Path(text.split(":", 1)[1]) if text.lower().startswith("recording:") else None
        if path is not None and not path.is_file():
            raise UsageError(f"{text}: no recording at {path}; give an existing .bag or .db3 file")
        return Target(text, "source", path=path.resolve() if path else None)
    path = Path(text)
    if path.is_dir():
        files = _list_images(path)
        if not files:
            raise UsageError(
                f"{path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); for an RGB-D folder write folder:{path}"
            )
        return Target(text, "images", files=tuple(f.resolve() for f in files))
    if not path.exists():
        raise UsageError(f"{text} does not exist; give an image folder, an image, a video or recording:FILE")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Target(text, "images", files=(path.resolve(),))
    if suffix in VIDEO_SUFFIXES:
        return Target(text, "video", path=path.resolve())
    if suffix in RECORDING_SUFFIXES:
        return Target(f"recording:{path}", "source", path=path.resolve())
    raise UsageError(
        f"{text}: unknown file type {suffix or '(none)'}; give images ({', '.join(sorted(IMAGE_SUFFIXES))}), "
        f"videos ({', '.join(sorted(VIDEO_SUFFIXES))}) or recording:FILE"
    )


def check_targets(targets: Sequence[Target], max_frames: Optional[int]) -> None:
    """Option problems that would otherwise show only when a target's turn comes."""
    for target in targets:
        if target.kind == "source" and target.text.lower().startswith("synthetic") and not max_frames:
            raise UsageError(f"{target.text} is endless; pass --max-frames N to say how many scenes to index")


# --------------------------------------------------------------------------- hashing and sampling


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def frame_hash(file_hash: str, frame_time_s: float, view: str) -> str:
    """The content hash of one frame of a file: its file's hash, its time (to the microsecond) and the view."""
    return sha256_bytes(f"{file_hash}|t={frame_time_s:.6f}|{view}".encode())


class RateSampler:
    """Keeps frames at `fps` per second of stream time (0 or less: every frame).

    The kept times lie on a grid t0, t0 + 1/fps, ...: a frame is kept when it reaches the next grid
    point, so a 30 fps video sampled at 1 fps keeps frames 0, 30, 60, ... (times 0 s, 1 s, 2 s).
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps if fps and fps > 0 else 0.0
        self._next: Optional[float] = None

    def take(self, t: float) -> bool:
        if self.period == 0.0:
            return True
        eps = 1e-6 * self.period
        if self._next is None:
            self._next = t
        if t + eps < self._next:
            return False
        while self._next <= t + eps:
            self._next += self.period
        return True


# --------------------------------------------------------------------------- saliency crops


class SalientCropper:
    """A CDINet artifact on a backend: RGB-D frame -> (padded crop of the salient object, box) or None."""

    def __init__(self, saliency_model: Any, pad: float = DEFAULT_PAD) -> None:
        self.model = saliency_model  # runtime.saliency.SaliencyModel
        self.pad = float(pad)

    @classmethod
    def open(
        cls,
        artifact: str,
        backend: str = "auto",
        precision: str = "auto",
        threads: Optional[int] = None,
        threshold: float = 0.5,
        pad: float = DEFAULT_PAD,
    ) -> "SalientCropper":
        from edge_mm.artifact import Artifact
        from runtime.backends.select import select_backend
        from runtime.saliency import SaliencyModel

        selection = select_backend(Artifact(artifact), backend, precision, threads=threads)
        try:
            return cls(SaliencyModel(selection.backend, threshold=threshold), pad)
        except BaseException:
            selection.backend.deactivate()
            raise

    def find(self, color: np.ndarray, depth_m: np.ndarray):
        """The frame's SaliencyResult (box None when nothing is salient)."""
        feeds = self.model.preprocess(color, depth_m)
        return self.model.postprocess(self.model.infer(feeds), color.shape[:2], depth_m)

    def close(self) -> None:
        self.model.backend.deactivate()


# --------------------------------------------------------------------------- samples


@dataclasses.dataclass
class Sample:
    """One image to embed and the metadata it is indexed with (keys of IndexStore items)."""

    image: np.ndarray
    item: Dict[str, Any]


@dataclasses.dataclass
class IngestReport:
    added: int = 0  # new items committed
    skipped: int = 0  # already in the index (content hash)
    unreadable: int = 0  # image files OpenCV could not decode
    no_object: int = 0  # frames without a salient object (with --saliency)
    seen: int = 0  # images and sampled frames looked at
    seconds: float = 0.0
    interrupted: bool = False
    targets: List[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        parts = [f"added {self.added}", f"skipped {self.skipped} already indexed"]
        if self.unreadable:
            parts.append(f"{self.unreadable} unreadable")
        if self.no_object:
            parts.append(f"{self.no_object} frames without a salient object")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"


@dataclasses.dataclass
class IngestOptions:
    fps: float = DEFAULT_FPS  # video and recording sampling rate; 0 = every frame
    max_frames: Optional[int] = None  # per source/video: stop after this many sampled frames
    cropper: Optional[SalientCropper] = None
    batch_size: int = 32
    progress: bool = True


class Ingest:
    """Walks targets, skips what `store` holds, embeds in batches with `embedder`, commits to `store`."""

    def __init__(
        self, embedder: ClipEmbedder, store: IndexStore, options: IngestOptions, say: Callable[[str], None] = print
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.options = options
        self.report = IngestReport()
        self.say = say
        self._bar: Any = None

    # -- per target kind -------------------------------------------------------------------------
    def _image_samples(self, target: Target) -> Iterator[Sample]:
        self._new_bar(target.text, len(target.files), "img")
        for path in target.files:
            self._tick()
            try:
                data = path.read_bytes()
            except OSError as exc:
                self._warn(f"cannot read {path} ({exc.strerror}); skipped")
                self.report.unreadable += 1
                continue
            content_hash = sha256_bytes(data)
            if self.store.has(content_hash):
                self.report.skipped += 1
                continue
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                self._warn(f"{path} is not an image OpenCV can decode; skipped")
                self.report.unreadable += 1
                continue
            yield Sample(
                image,
                {
                    "content_hash": content_hash,
                    "path": str(path),
                    "source": "image",
                    "extra": {"size": [int(image.shape[1]), int(image.shape[0])]},
                },
            )

    def _video_samples(self, target: Target) -> Iterator[Sample]:
        path = target.path
        assert path is not None
        file_hash = sha256_file(path)
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise SourceError(f"OpenCV cannot open the video {path}; convert it to .mp4 (H.264) or .avi (MJPEG)")
        try:
            video_fps = capture.get(cv2.CAP_PROP_FPS)
            frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            fps_known = bool(video_fps and np.isfinite(video_fps) and video_fps > 0)
            expected = None
            if fps_known and frames > 0:
                expected = frames if self.options.fps <= 0 else int(np.ceil(frames / video_fps * self.options.fps))
            if self.options.max_frames:
                expected = min(expected or self.options.max_frames, self.options.max_frames)
            self._new_bar(target.text, expected, "frame")
            sampler = RateSampler(self.options.fps)
            kept, index = 0, -1
            while self.options.max_frames is None or kept < self.options.max_frames:
                if not capture.grab():
                    break
                index += 1
                t = index / video_fps if fps_known else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if not sampler.take(t):
                    continue
                kept += 1
                self._tick()
                content_hash = frame_hash(file_hash, t, "frame")
                if self.store.has(content_hash):
                    self.report.skipped += 1
                    continue
                ok, image = capture.retrieve()
                if not ok or image is None:
                    self._warn(f"{path}: frame {index} does not decode; skipped")
                    self.report.unreadable += 1
                    continue
                yield Sample(
                    image,
                    {
                        "content_hash": content_hash,
                        "path": str(path),
                        "frame_time": round(t, 6),
                        "source": "video",
                        "extra": {"frame": index},
                    },
                )
        finally:
            capture.release()

    def _source_samples(self, target: Target) -> Iterator[Sample]:
        from runtime.sources import open_source

        options: Dict[str, Any] = {}
        lowered = target.text.lower()
        check_targets([target], self.options.max_frames)
        if lowered.startswith("synthetic"):
            options["count"] = self.options.max_frames
        if lowered.startswith("realsense") and not self.options.max_frames:
            self.say(f"{target.text}: indexing until Ctrl-C (or pass --max-frames N)")
        file_hash = sha256_file(target.path) if target.path is not None else None
        cropper = self.options.cropper
        view = "salient" if cropper is not None else "frame"
        kind = "recording" if target.path is not None else lowered.split(":", 1)[0]
        sampler = RateSampler(self.options.fps if target.path is not None or kind == "realsense" else 0.0)
        self._new_bar(target.text, self.options.max_frames, "frame")
        source = open_source(target.text, **options)
        try:
            first_ms: Optional[float] = None
            kept = 0
            while self.options.max_frames is None or kept < self.options.max_frames:
                frame = source.read()
                if frame is None:
                    break
                if first_ms is None:
                    first_ms = float(frame.timestamp_ms)
                t = (float(frame.timestamp_ms) - first_ms) / 1000.0
                if not sampler.take(t):
                    continue
                kept += 1
                self._tick()
                if file_hash is not None:
                    content_hash = frame_hash(file_hash, float(frame.timestamp_ms) / 1000.0, view)
                else:
                    content_hash = sha256_bytes(
                        f"{source.name}|{frame.timestamp_ms!r}|{view}|".encode() + frame.color.tobytes()
                    )
                if self.store.has(content_hash):
                    self.report.skipped += 1
                    continue
                item: Dict[str, Any] = {
                    "content_hash": content_hash,
                    "path": str(target.path)
                    if target.path is not None
                    else str(frame.meta.get("rgb_path") or source.name),
                    "frame_time": round(t, 6),
                    "source": "recording" if target.path is not None else ("camera" if kind == "realsense" else kind),
                    "extra": {"frame": frame.index, "timestamp_ms": float(frame.timestamp_ms)},
                }
                image = frame.color
                if cropper is not None:
                    result = cropper.find(frame.color, frame.depth_m)
                    if result.box is None:
                        self.report.no_object += 1
                        continue
                    image = padded_square_crop(frame.color, result.box, cropper.pad)
                    item["box"] = [int(v) for v in result.box]
                    item["extra"].update(
                        saliency_score=round(float(result.score), 4),
                        crop_pad=cropper.pad,
                        frame_size=[int(frame.color.shape[1]), int(frame.color.shape[0])],
                    )
                    if result.depth_m is not None:
                        item["extra"]["depth_m"] = round(float(result.depth_m), 4)
                yield Sample(image, item)
        finally:
            source.close()

    # -- driving ---------------------------------------------------------------------------------
    def samples(self, target: Target) -> Iterator[Sample]:
        if target.kind == "images":
            return self._image_samples(target)
        if target.kind == "video":
            return self._video_samples(target)
        return self._source_samples(target)

    def run(self, targets: Sequence[Target]) -> IngestReport:
        """Index every target; KeyboardInterrupt is recorded (report.interrupted) after the last commit."""
        started = time.perf_counter()
        self.report.targets = [t.text for t in targets]
        if self.options.cropper is not None and not any(t.kind == "source" for t in targets):
            self.say(
                "note: --saliency applies to RGB-D sources (recording:, realsense, folder:, synthetic:); "
                "images and videos are embedded whole"
            )
        try:
            for target in targets:
                samples = self.samples(target)
                try:
                    for batch in iter_batches(samples, self.options.batch_size):
                        self._commit(batch)
                finally:
                    samples.close()  # releases the video or source now, also on Ctrl-C
                    self._close_bar()
        except KeyboardInterrupt:
            self.report.interrupted = True
        finally:
            self.report.seconds = time.perf_counter() - started
        return self.report

    def _commit(self, batch: List[Sample]) -> None:
        vectors = self.embedder.embed_images([s.image for s in batch])
        before = len(self.store)
        self.store.add(vectors, [dict(s.item, thumbnail=make_thumbnail(s.image)) for s in batch])
        added = len(self.store) - before
        self.report.added += added
        self.report.skipped += len(batch) - added  # duplicates within the run (the same file twice)

    # -- progress --------------------------------------------------------------------------------
    def _new_bar(self, label: str, total: Optional[int], unit: str) -> None:
        self._close_bar()
        if self.options.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=_short(label), unit=unit, dynamic_ncols=True, leave=False)

    def _tick(self) -> None:
        self.report.seen += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(added=self.report.added, skipped=self.report.skipped, refresh=False)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _warn(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(f"warning: {text}")
        else:
            log.warning(text)


def _short(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]
