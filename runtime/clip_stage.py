"""Saliency-gated CLIP: label (and remember) the salient object of the live stream, beside the saliency model.

As a pipeline stage (runtime.stages.base.Stage): reads the "saliency" result's box, adds "clip"
(the newest ClipResult, which may be of an earlier frame), takes its crop on the pipeline's output
thread (`after_output`, in frame order), draws its lines in the text panel and hands its events
(`clip`, `clip_query`) to the pipeline, which writes them to the events log and the subscribers.
Used on its own:

    embedder = ClipEmbedder.open("artifacts/clip-demo", text="now")
    stage = ClipStage(embedder, labels=["mug", "phone", "keys"], query="a red mug", index="memory/")
    stage.start()
    for result in saliency_results:                  # the saliency pipeline's thread
        stage.submit(result.frame, result.saliency)  # returns at once, never waits for CLIP
        lines = stage.overlay_lines()                # e.g. ["clip: mug 82%", "query 0.31 MATCH"]
        for event in stage.drain_events(): events_sink.write_event(event)
    stage.stop()

Pacing. CLIP runs in its own thread at its own rate: at most `max_rate_hz` crops per second, from
a newest-crop slot. `submit` only compares a clock with the next allowed time and, when a crop is
due, cuts it (a slice of the frame, well under a millisecond) and swaps it into the slot; it never
waits on the CLIP thread, so a slow CLIP backend lowers CLIP's rate, never the saliency stream's.
A crop still waiting when a newer one arrives is replaced (counted in `stats()["replaced"]`).

Per crop: the padded square around the saliency box (runtime.retrieval.crop, as the demo CLIP was
trained) is embedded; with `labels`, a zero-shot label (prompt-ensembled over `templates`); with a
`query`, the cosine between crop and query text, and a `clip_query` event when it rises to
`query_threshold` (one event per match episode: it re-arms when the score falls below the
threshold or the object is lost); with an `index`, the crop is added every `index_interval_s`, so
the device builds a searchable memory of what it saw (`edge-mm-index search --index ...`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_mm.clip.zero_shot import DEFAULT_TEMPLATES
from edge_mm.errors import IndexStoreError, UsageError
from runtime.retrieval.crop import DEFAULT_PAD, clamp_box, padded_square_crop
from runtime.retrieval.thumbnail import make_thumbnail
from runtime.stages.base import FrameResult, Stage

log = logging.getLogger("edge_mm.runtime.clip_stage")

DEFAULT_RATE_HZ = 4.0
DEFAULT_QUERY_THRESHOLD = 0.25  # cosine; OpenAI CLIP's matching image-text pairs score ~0.25-0.35
DEFAULT_INDEX_INTERVAL_S = 2.0
MAX_EVENTS = 10_000  # events kept for drain_events(); the oldest go first if nobody drains
_WAIT_S = 0.1  # how often the CLIP thread looks at the stop flag
_COUNTS = ("submitted", "no_object", "not_due", "accepted", "replaced", "embedded", "indexed", "query_events")


def read_labels(text: str) -> List[str]:
    """--labels: a comma-separated list, or a file with one label per line ('#' starts a comment)."""
    path = Path(text)
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"cannot read the labels file {path} ({exc}); give a UTF-8 text file, one label per line"
            ) from None
        labels = [line.split("#", 1)[0].strip() for line in lines]
    else:
        labels = [part.strip() for part in text.split(",")]
    labels = [label for label in labels if label]
    if not labels:
        raise UsageError(
            f"--labels {text!r} names no labels; give e.g. 'mug,phone,keys' or a file with one label per line"
        )
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UsageError(f"--labels repeats {duplicates}; give each label once")
    return labels


@dataclasses.dataclass
class ClipResult:
    """CLIP's view of one frame's salient object."""

    frame_index: int
    timestamp_ms: float
    box: Tuple[int, int, int, int]
    label: Optional[str] = None  # best zero-shot label (None without labels)
    prob: float = 0.0  # its softmax probability among the labels
    top: List[Tuple[str, float]] = dataclasses.field(default_factory=list)  # up to 3 (label, prob)
    query_score: Optional[float] = None  # cosine with the query text (None without a query)
    query_match: bool = False
    indexed: bool = False  # the crop was added to the index
    embed_ms: float = 0.0  # preprocessing + embedding time of this crop
    wall_time: float = 0.0  # Unix time when the result was ready

    def to_event(self) -> Dict[str, Any]:
        event: Dict[str, Any] = {
            "type": "clip",
            "index": self.frame_index,
            "time": round(self.wall_time, 6),
            "timestamp_ms": round(float(self.timestamp_ms), 3),
            "box": list(self.box),
            "embed_ms": round(self.embed_ms, 3),
        }
        if self.label is not None:
            event["label"] = self.label
            event["prob"] = round(self.prob, 4)
        if self.query_score is not None:
            event["query_score"] = round(self.query_score, 4)
            event["query_match"] = self.query_match
        if self.indexed:
            event["indexed"] = True
        return event


@dataclasses.dataclass
class _Crop:
    image: np.ndarray
    box: Tuple[int, int, int, int]
    frame_index: int
    timestamp_ms: float
    submitted: float  # time.perf_counter() at submit
    depth_m: Optional[float] = None  # the salient object's distance, when the saliency result has one


class ClipStage(Stage):
    """CLIP on the salient object of each frame, in its own thread, at its own rate (see module docstring).

    embedder: a runtime.retrieval.embed.ClipEmbedder (its text graph is needed for labels and query).
    labels / templates: zero-shot labels and their prompt templates ('{}' is the label).
    query / query_threshold: a text to watch for and the cosine at which it counts as seen.
    index: an IndexStore opened for adding, or a folder (opened or created here, closed by stop()).
    index_interval_s: at most one crop added to the index per this many seconds.
    max_rate_hz: at most this many crops embedded per second.
    pad: crop padding (share of the box's longer side on each edge).
    min_box_px: smaller boxes are ignored (too few pixels to name).
    source_name: recorded as the indexed items' path (e.g. "realsense:123456" or the recording file).
    keep_results: publish a `clip` event for every embedded crop (not only query matches).
    own_embedder: stop() also closes the embedder (its backends).
    box_key: the result key whose `.box` gates the crop (as a pipeline stage).
    """

    name = "clip"
    reads = ("saliency",)
    adds = ("clip",)

    def __init__(
        self,
        embedder: Any,
        *,
        labels: Sequence[str] = (),
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        query: Optional[str] = None,
        query_threshold: float = DEFAULT_QUERY_THRESHOLD,
        index: Any = None,
        index_interval_s: float = DEFAULT_INDEX_INTERVAL_S,
        max_rate_hz: float = DEFAULT_RATE_HZ,
        pad: float = DEFAULT_PAD,
        min_box_px: int = 8,
        source_name: str = "stream",
        keep_results: bool = True,
        own_embedder: bool = False,
        clock: Callable[[], float] = time.perf_counter,
        box_key: str = "saliency",
    ) -> None:
        if not (isinstance(max_rate_hz, (int, float)) and math.isfinite(max_rate_hz) and max_rate_hz > 0):
            raise UsageError(f"--clip-rate {max_rate_hz!r} must be a positive number of crops per second, e.g. 4")
        if not (math.isfinite(index_interval_s) and index_interval_s >= 0):
            raise UsageError(f"--index-every {index_interval_s!r} must be >= 0 seconds")
        if not (math.isfinite(query_threshold) and -1.0 <= query_threshold <= 1.0):
            raise UsageError(f"--query-threshold {query_threshold!r} is a cosine: give a number in [-1, 1], e.g. 0.25")
        if not (math.isfinite(pad) and pad >= 0):
            raise UsageError(f"--pad {pad!r} must be >= 0")
        if not labels and query is None and index is None:
            raise UsageError("the CLIP stage needs something to do: --labels, --query or --index")
        self.embedder = embedder
        self.own_embedder = own_embedder
        self.box_key = box_key
        self.reads = (box_key,)
        self._clock = clock  # pacing reads this clock (tests step a fake one)
        self.period_s = 1.0 / float(max_rate_hz)
        self.pad = float(pad)
        self.min_box_px = int(min_box_px)
        self.query = query
        self.query_threshold = float(query_threshold)
        self.index_interval_s = float(index_interval_s)
        self.source_name = source_name
        self.keep_results = keep_results
        # Text embeddings are made once, here, on the caller's thread: the CLIP thread only embeds crops.
        self.classifier = embedder.classifier(list(labels), list(templates)) if labels else None
        self._query_vec = embedder.embed_texts([query])[0] if query is not None else None
        self.store, self._owns_store = self._open_index(index)

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._slot: Optional[_Crop] = None
        self._next_allowed = 0.0  # time.perf_counter() before which submit() drops frames unseen
        self._latest: Optional[ClipResult] = None
        self._events: Deque[Dict[str, Any]] = collections.deque(maxlen=MAX_EVENTS)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._match_active = False
        self._last_indexed: Optional[float] = None
        self.error: Optional[BaseException] = None
        # Held around every embedding call: others (the web page's search) share this embedder, and a
        # backend runs one request at a time.
        self.embed_lock = threading.Lock()
        # Every key exists from the start: the two threads then only ever update, never insert.
        self._counts = collections.Counter({k: 0 for k in _COUNTS})
        self._embed_ms: Deque[float] = collections.deque(maxlen=256)
        self._wait_ms: Deque[float] = collections.deque(maxlen=256)
        self._started_at: Optional[float] = None

    def _open_index(self, index: Any) -> Tuple[Any, bool]:
        if index is None:
            return None, False
        from runtime.retrieval.store import IndexStore

        if isinstance(index, IndexStore):
            if index.mode != "a":
                raise UsageError(f"index {index.path} was opened for searching; the CLIP stage adds to it (mode 'a')")
            if not index.model_info.same_model(self.embedder.model_info):
                raise IndexStoreError(
                    f"index {index.path} holds another model's embeddings ({index.model_info.describe()}); use a new index path"
                )
            return index, False
        store = IndexStore(index, dim=self.embedder.dim, model_info=self.embedder.model_info, mode="a")
        paths = getattr(self.embedder, "paths", None)
        if paths is not None:
            from runtime.retrieval.artifact_note import remember_artifact

            remember_artifact(index, paths.root, self.embedder.model_info)
        return store, True

    # -- the caller's side ------------------------------------------------------------------------
    def start(self) -> "ClipStage":
        if self._thread is None:
            self._started_at = time.perf_counter()
            self._thread = threading.Thread(target=self._run, name="clip-stage", daemon=True)
            self._thread.start()
        return self

    def submit(self, frame: Any, saliency: Any) -> bool:
        """Offer a frame and its salient box (a SaliencyResult, a box or None); never waits for CLIP.

        Returns True when the crop was taken into the slot, False when it was not due (rate),
        had no usable box, or the stage is stopped/failed.
        """
        if self._stop.is_set() or self.error is not None:
            return False
        now = self._clock()
        self._count("submitted")
        box = getattr(saliency, "box", saliency)
        color = frame.color
        clipped = clamp_box(box, color.shape[:2]) if box is not None else None
        if clipped is None or min(clipped[2] - clipped[0], clipped[3] - clipped[1]) < self.min_box_px:
            with self._lock:
                self._counts["no_object"] += 1
                self._match_active = False  # the object is gone: a later match is a new episode
            return False
        if now < self._next_allowed:
            self._count("not_due")
            return False
        depth = getattr(saliency, "depth_m", None)
        crop = _Crop(
            padded_square_crop(color, clipped, self.pad),
            clipped,
            int(frame.index),
            float(frame.timestamp_ms),
            now,
            None if depth is None else float(depth),
        )
        with self._wake:
            if self._slot is not None:
                self._counts["replaced"] += 1
            self._slot = crop
            self._counts["accepted"] += 1
            self._wake.notify()
        return True

    def _count(self, key: str) -> None:
        with self._lock:  # submit() may run on several threads; the CLIP thread updates these too
            self._counts[key] += 1

    @property
    def latest(self) -> Optional[ClipResult]:
        """The newest result (for the overlay); None before the first crop is done."""
        with self._lock:
            return self._latest

    def overlay_lines(self, max_age_s: float = 3.0) -> List[str]:
        """Text for the overlay panel: the label and the query score of the newest result."""
        if self.error is not None:
            return ["clip: stopped (error)"]
        result = self.latest
        if result is None or time.time() - result.wall_time > max_age_s:
            return ["clip: -"]
        lines = []
        if result.label is not None:
            lines.append(f"clip: {result.label} {100 * result.prob:.0f}%")
        if result.query_score is not None:
            mark = " MATCH" if result.query_match else ""
            lines.append(f"query {result.query_score:.2f}{mark}")
        return lines or [f"clip: {result.embed_ms:.0f} ms/crop"]

    def drain_events(self) -> List[Dict[str, Any]]:
        """Events since the last call, oldest first: `clip` results (keep_results) and `clip_query` matches."""
        with self._lock:
            out = list(self._events)
            self._events.clear()
        return out

    def stats(self) -> Dict[str, Any]:
        """Counts (submitted, not_due, no_object, accepted, replaced, embedded, indexed, query_events) and timings."""
        with self._lock:
            counts = dict(self._counts)
            embed = sorted(self._embed_ms)
            wait = sorted(self._wait_ms)
        elapsed = time.perf_counter() - self._started_at if self._started_at else 0.0
        out: Dict[str, Any] = {k: counts.get(k, 0) for k in _COUNTS}
        out["rate_hz"] = round(out["embedded"] / elapsed, 3) if elapsed > 0 else 0.0
        for name, values in (("embed_ms", embed), ("wait_ms", wait)):
            out[f"{name}_p50"] = round(values[len(values) // 2], 3) if values else None
        return out

    def raise_if_failed(self) -> None:
        """Re-raise, on the caller's thread, an error that stopped the CLIP thread."""
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the CLIP thread (the crop in progress finishes) and close an index opened here."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the CLIP thread did not stop within %.0f s (a slow backend call); leaving it", timeout)
        if self._thread is not None and self._thread.is_alive():
            return  # still inside a backend call: closing what it uses would crash it
        if self._owns_store and self.store is not None:
            self.store.close()
        if self.own_embedder:
            self.embedder.close()

    # -- as a pipeline stage (runtime.stages.base.Stage) -----------------------------------------------
    def finish(self, result: FrameResult, inferred: Any) -> None:
        result.values["clip"] = self.latest

    def after_output(self, result: FrameResult) -> None:
        # On the output thread, in frame order: the match episodes see the frames as they came.
        self.submit(result.frame, result.values.get(self.box_key))

    def text_lines(self, result: FrameResult) -> List[str]:
        return self.overlay_lines()

    def summary(self) -> Optional[Dict[str, Any]]:
        return self.stats()

    def describe(self) -> str:
        return "clip (own thread, own rate)"

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> "ClipStage":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the CLIP thread ----------------------------------------------------------------------------
    def _take(self) -> Optional[_Crop]:
        with self._wake:
            while self._slot is None and not self._stop.is_set():
                self._wake.wait(_WAIT_S)
            crop, self._slot = self._slot, None
            if crop is not None:
                # The rate limit counts from when a crop is taken: frames before then are not even cut.
                self._next_allowed = self._clock() + self.period_s
            return crop

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                crop = self._take()
                if crop is None:
                    return
                self._process(crop)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller through .error
            self.error = exc
            log.error("the CLIP stage stopped: %s", exc)

    def _process(self, crop: _Crop) -> None:
        now, start = self._clock(), time.perf_counter()
        with self.embed_lock:
            embedding = self.embedder.embed_images([crop.image])[0]
        embed_ms = (time.perf_counter() - start) * 1000.0
        result = ClipResult(crop.frame_index, crop.timestamp_ms, crop.box, embed_ms=embed_ms)
        if self.classifier is not None:
            order, probs = self.classifier.classify(embedding, top_k=min(3, len(self.classifier)))
            names = self.classifier.labels(order)
            result.top = [(str(n), float(p)) for n, p in zip(names, probs)]
            result.label, result.prob = result.top[0]
        events: List[Dict[str, Any]] = []
        if self._query_vec is not None:
            result.query_score = float(np.dot(embedding, self._query_vec))
            result.query_match = result.query_score >= self.query_threshold
        if self.store is not None and (self._last_indexed is None or now - self._last_indexed >= self.index_interval_s):
            self._add_to_index(crop, embedding, result)
            self._last_indexed = now
        result.wall_time = time.time()
        with self._lock:
            if result.query_match and not self._match_active:
                events.append(
                    {
                        "type": "clip_query",
                        "query": self.query,
                        "score": round(result.query_score, 4),
                        "threshold": self.query_threshold,
                        "index": result.frame_index,
                        "time": round(result.wall_time, 6),
                        "timestamp_ms": round(result.timestamp_ms, 3),
                        "box": list(result.box),
                        "label": result.label,
                    }
                )
                self._counts["query_events"] += 1
            self._match_active = result.query_match
            if self.keep_results:
                self._events.append(result.to_event())
            self._events.extend(events)
            self._latest = result
            self._counts["embedded"] += 1
            self._embed_ms.append(embed_ms)
            self._wait_ms.append((start - crop.submitted) * 1000.0)

    def _add_to_index(self, crop: _Crop, embedding: np.ndarray, result: ClipResult) -> None:
        digest = hashlib.sha256(f"{self.source_name}|{crop.timestamp_ms!r}|{crop.box}|".encode())
        digest.update(crop.image.tobytes())
        extra: Dict[str, Any] = {"frame": crop.frame_index, "timestamp_ms": crop.timestamp_ms}
        if result.label is not None:
            extra.update(label=result.label, prob=round(result.prob, 4))
        if crop.depth_m is not None and math.isfinite(crop.depth_m):
            extra["depth_m"] = round(crop.depth_m, 4)
        self.store.add(
            embedding[None],
            [
                {
                    "content_hash": digest.hexdigest(),
                    "path": self.source_name,
                    "frame_time": crop.timestamp_ms / 1000.0,
                    "box": list(crop.box),
                    "source": "stream",
                    "extra": extra,
                    "thumbnail": make_thumbnail(crop.image),
                }
            ],
        )
        result.indexed = True
        with self._lock:
            self._counts["indexed"] += 1


# --------------------------------------------------------------------------- edge-mm-run wiring (stage factory)

NAME = "clip"


def add_arguments(parser: Any) -> None:
    add_clip_arguments(parser)


def from_args(args: Any, ctx: Any) -> Optional[ClipStage]:
    """The stage for edge-mm-run's --clip options, or None without --clip (runtime.stages factory)."""
    stage = clip_stage_from_args(args, source_name=ctx.source_name, warn=ctx.warn)
    if stage is not None:
        ctx.say(f"clip: {args.clip} beside the saliency stream")
    return stage


def add_clip_arguments(parser: Any) -> None:
    """The CLIP stage's options, for edge-mm-run's argparse parser."""
    group = parser.add_argument_group("saliency-gated CLIP (runtime/clip_stage.py)")
    group.add_argument(
        "--clip", metavar="CLIP_ARTIFACT", help="CLIP artifact folder: label, match or index the salient object"
    )
    group.add_argument("--labels", help="zero-shot labels: 'mug,phone,keys' or a file with one label per line")
    group.add_argument(
        "--label-template",
        action="append",
        dest="label_templates",
        metavar="TEMPLATE",
        help="prompt template for --labels, '{}' is the label (repeatable; default: OpenAI's 7-prompt ensemble)",
    )
    group.add_argument("--query", help="raise a clip_query event when the salient object matches this text")
    group.add_argument(
        "--query-threshold",
        type=float,
        default=DEFAULT_QUERY_THRESHOLD,
        help=f"cosine at which --query counts as seen (default {DEFAULT_QUERY_THRESHOLD})",
    )
    group.add_argument(
        "--index", dest="clip_index", metavar="PATH", help="add salient crops of the stream to this retrieval index"
    )
    group.add_argument(
        "--index-every",
        type=float,
        default=DEFAULT_INDEX_INTERVAL_S,
        help=f"seconds between crops added to --index (default {DEFAULT_INDEX_INTERVAL_S})",
    )
    group.add_argument(
        "--clip-rate",
        type=float,
        default=DEFAULT_RATE_HZ,
        help=f"most crops CLIP embeds per second (default {DEFAULT_RATE_HZ}); it never slows the saliency stream",
    )
    group.add_argument(
        "--clip-backend",
        default="auto",
        choices=("auto", "tensorrt", "ort-cuda", "ort-cpu"),
        help="backend for CLIP (default auto)",
    )
    group.add_argument(
        "--clip-precision", default="auto", choices=("auto", "fp32", "fp16", "int8"), help="CLIP variant (default auto)"
    )
    group.add_argument("--clip-threads", type=int, help="ONNX Runtime CPU threads for CLIP (default: its own)")


def clip_stage_from_args(args: Any, source_name: str = "stream", warn: Any = None) -> Optional[ClipStage]:
    """A started ClipStage for parsed edge-mm-run arguments, or None without --clip; its stop() also closes the CLIP backends."""
    wanted = [
        name
        for name, value in (("--labels", args.labels), ("--query", args.query), ("--index", args.clip_index))
        if value is not None
    ]
    if args.clip is None:
        if wanted:
            raise UsageError(
                f"{', '.join(wanted)} {'needs' if len(wanted) == 1 else 'need'} a CLIP model: add --clip CLIP_ARTIFACT"
            )
        return None
    if args.label_templates and not args.labels:
        raise UsageError("--label-template applies to --labels; give --labels too")
    labels = read_labels(args.labels) if args.labels else []
    if args.clip_threads is not None and args.clip_threads < 1:
        raise UsageError(f"--clip-threads {args.clip_threads} must be >= 1")
    from runtime.retrieval.embed import ClipEmbedder

    # Without labels or a query the text graph opens on the first search from the web page, if any.
    text = "now" if labels or args.query is not None else "lazy"
    embedder = ClipEmbedder.open(
        args.clip,
        backend=args.clip_backend,
        precision=args.clip_precision,
        threads=args.clip_threads,
        text=text,
        warn=warn,
        option="--clip",
    )
    try:
        stage = ClipStage(
            embedder,
            labels=labels,
            templates=args.label_templates or DEFAULT_TEMPLATES,
            query=args.query,
            query_threshold=args.query_threshold,
            index=args.clip_index,
            index_interval_s=args.index_every,
            max_rate_hz=args.clip_rate,
            source_name=source_name,
            own_embedder=True,
        )
    except BaseException:
        embedder.close()
        raise
    return stage.start()
