"""`rosbag:PATH`: a robot's own recording (rosbag2 folder with sqlite3 or mcap storage, or a rosbag1
.bag file) played as a camera, read with the pure-Python `rosbags` (no ROS installation).

It looks for realsense-ros topics by their default names (`/camera/camera/color/image_raw` and
`/camera/camera/aligned_depth_to_color/image_raw`, or the pre-4.x `/camera/color/...` names) unless
`color_topic` / `depth_topic` name others, and reads camera_info beside the colour topic for the
intrinsics. Colour and depth messages are paired by header stamp: a first pass reads every stamp,
each colour message takes the nearest depth message within `tolerance_ms` (each depth message at
most once), and a second pass decodes the pairs in colour order. So playback is deterministic and
every pair comes out exactly once; colour messages without depth are counted and skipped.
"""

from __future__ import annotations

import bisect
import collections
import logging
import time
from pathlib import Path
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple

from edge_mm.errors import SourceError, UsageError

from .. import rosmsg
from .base import Frame, Source

log = logging.getLogger(__name__)

#: realsense-ros default topics: 4.x puts the node `camera` in namespace `camera`; older releases did not.
COLOR_TOPICS: Tuple[str, ...] = ("/camera/camera/color/image_raw", "/camera/color/image_raw")
DEPTH_TOPICS: Tuple[str, ...] = (
    "/camera/camera/aligned_depth_to_color/image_raw",
    "/camera/aligned_depth_to_color/image_raw",
)
IMAGE_TYPE = "sensor_msgs/msg/Image"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
DEFAULT_TOLERANCE_MS = 20.0  # under a frame period at 30 fps; realsense-ros stamps both streams of a frameset


def camera_info_topic(image_topic: str) -> str:
    """realsense-ros publishes `.../camera_info` beside `.../image_raw`."""
    return image_topic.rsplit("/", 1)[0] + "/camera_info"


def _ros_type(msgtype: str) -> str:
    # rosbag1 names types `sensor_msgs/Image`; rosbags' rosbag2 names are `sensor_msgs/msg/Image`.
    parts = msgtype.split("/")
    return f"{parts[0]}/msg/{parts[-1]}" if len(parts) == 2 else msgtype


class RosbagSource(Source):
    """Play the colour + aligned-depth pairs of a ROS bag once (or forever with loop=True).

    color_topic / depth_topic: the topics to pair (default: the realsense-ros names found in the bag).
    info_topic:   camera_info for the intrinsics (default: beside the colour topic, when present).
    tolerance_ms: the largest colour-depth stamp difference that still makes a pair.
    """

    live = False

    def __init__(
        self,
        path: str,
        *,
        color_topic: Optional[str] = None,
        depth_topic: Optional[str] = None,
        info_topic: Optional[str] = None,
        tolerance_ms: float = DEFAULT_TOLERANCE_MS,
        loop: bool = False,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        if not tolerance_ms >= 0:
            raise UsageError(f"tolerance_ms must be >= 0, got {tolerance_ms}")
        self.color_topic = color_topic
        self.depth_topic = depth_topic
        self.info_topic = info_topic
        self.tolerance_ms = float(tolerance_ms)
        self.loop = bool(loop)
        self.loops_done = 0
        self.topics = ""  # 'topic (type, N msgs), ...' for messages
        self.pairs: List[Tuple[int, int]] = []  # (colour ordinal, depth ordinal) in colour order
        self.pairing: Dict[str, Any] = {}
        self.summary = ""
        self.intrinsics: Optional[Dict[str, Any]] = None
        self._reader: Any = None
        self._stamps: Dict[str, List[int]] = {}
        self._frames: Optional[Iterator[Tuple[Any, Any, Tuple[int, int]]]] = None
        self._pending: Optional[Frame] = None

    @property
    def name(self) -> str:
        return f"rosbag:{self.path}"

    # --- open / close -------------------------------------------------------------------------

    def _open(self) -> None:
        rosbags = rosmsg.import_rosbags()
        bag = self._bag_path()
        try:
            self._reader = rosbags.highlevel.AnyReader([bag], default_typestore=rosmsg.typestore())
            self._reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises many types for damaged files
            self._reader = None
            raise SourceError(
                f"cannot read rosbag {self.path} ({_one_line(exc)}); the file is truncated or not a rosbag"
            ) from None
        self.topics = self._describe_topics()
        self.color_topic = self._pick_topic("colour", self.color_topic, COLOR_TOPICS, "color_topic")
        self.depth_topic = self._pick_topic("depth", self.depth_topic, DEPTH_TOPICS, "depth_topic")
        self._read_stamps()
        self._pair()
        self._frames = self._decode_pairs()
        # Decode the first pair now, so a bag with unaligned depth or an unknown encoding fails at open.
        self._pending = self._convert(next(self._frames))

    def _bag_path(self) -> Path:
        if not self.path.exists():
            raise SourceError(f"rosbag {self.path} does not exist; give a rosbag2 folder or a rosbag1 .bag file")
        if (
            self.path.is_file()
            and self.path.suffix.lower() in (".db3", ".mcap")
            and (self.path.parent / "metadata.yaml").is_file()
        ):
            return self.path.parent  # a storage file of a rosbag2 folder: read the whole bag
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            raise SourceError(
                f"{self.path} is a folder without metadata.yaml, so not a rosbag2 bag; "
                "give the folder `ros2 bag record` wrote (or folder:DIR for RGB/ + depth/ images)"
            )
        return self.path

    def _describe_topics(self) -> str:
        parts = [
            f"{t} ({_ros_type(info.msgtype)}, {info.msgcount} msgs)" for t, info in sorted(self._reader.topics.items())
        ]
        return ", ".join(parts) or "no topics"

    def _image_topics(self) -> List[str]:
        return sorted(t for t, info in self._reader.topics.items() if _ros_type(info.msgtype) == IMAGE_TYPE)

    def _pick_topic(self, what: str, named: Optional[str], defaults: Sequence[str], option: str) -> str:
        topics = self._reader.topics
        if named is not None:
            if named not in topics:
                raise SourceError(f"rosbag {self.path} has no topic {named} ({option}); it has: {self.topics}")
            if _ros_type(topics[named].msgtype) != IMAGE_TYPE:
                raise SourceError(
                    f"{option} {named} in rosbag {self.path} holds {topics[named].msgtype}, not {IMAGE_TYPE}; "
                    f"image topics: {', '.join(self._image_topics()) or 'none'}"
                )
            return named
        found = [t for t in defaults if t in topics and _ros_type(topics[t].msgtype) == IMAGE_TYPE]
        if found:
            return found[0]
        images = self._image_topics()
        if not images:
            raise SourceError(
                f"rosbag {self.path} has no {IMAGE_TYPE} topic (it has: {self.topics}); "
                "record the camera's colour and aligned depth images"
            )
        hint = ""
        if what == "depth":
            unaligned = [t for t in images if "depth" in t and "aligned" not in t]
            hint = (
                f" ({', '.join(unaligned)} is not aligned to colour)" if unaligned else ""
            ) + "; record with realsense-ros align_depth.enable:=true"
        raise SourceError(
            f"rosbag {self.path} has no {what} topic at {' or '.join(defaults)}{hint}, "
            f"or name one with {option}=TOPIC; image topics: {', '.join(images)}"
        )

    def _close(self) -> None:
        self._frames = self._pending = None
        if self._reader is not None:
            try:
                self._reader.close()
            finally:
                self._reader = None

    # --- pairing --------------------------------------------------------------------------------

    def _raw_messages(self, topics: Sequence[str]) -> Iterator[Tuple[Any, bytes]]:
        """(connection, raw bytes) in the bag's order; damage becomes a one-line SourceError."""
        connections = [c for c in self._reader.connections if c.topic in topics]
        iterator = self._reader.messages(connections=connections)
        while True:
            try:
                connection, _, raw = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - rosbags raises many types for damaged data
                raise self._damaged(exc) from None
            yield connection, raw

    def _messages(self, topics: Sequence[str]) -> Iterator[Tuple[str, Any]]:
        """(topic, decoded message) in the bag's order."""
        for connection, raw in self._raw_messages(topics):
            try:
                msg = self._reader.deserialize(raw, connection.msgtype)
            except Exception as exc:  # noqa: BLE001
                raise self._damaged(exc) from None
            yield connection.topic, msg

    def _damaged(self, exc: BaseException) -> SourceError:
        return SourceError(f"rosbag {self.path} is damaged ({_one_line(exc)}); the file is truncated or corrupt")

    def _read_stamps(self) -> None:
        """Pass 1: every colour and depth stamp (in bag order), and the first camera_info.

        Stamps are read from the start of each raw message (the header comes first in both
        encodings), so this pass does not decode the images.
        """
        info_topic = self.info_topic or camera_info_topic(self.color_topic)
        topics = self._reader.topics
        if self.info_topic is not None and info_topic not in topics:
            raise SourceError(f"rosbag {self.path} has no topic {info_topic} (info_topic); it has: {self.topics}")
        read_info = info_topic in topics and _ros_type(topics[info_topic].msgtype) == INFO_TYPE
        self._stamps = {self.color_topic: [], self.depth_topic: []}
        wanted = [self.color_topic, self.depth_topic] + ([info_topic] if read_info else [])
        for connection, raw in self._raw_messages(wanted):
            if connection.topic == info_topic:
                if self.intrinsics is None:
                    try:
                        info = self._reader.deserialize(raw, connection.msgtype)
                    except Exception as exc:  # noqa: BLE001
                        raise self._damaged(exc) from None
                    self.intrinsics = rosmsg.intrinsics_of(info)
                continue
            try:
                stamp = rosmsg.raw_header_stamp_ns(raw, ros2=self._reader.is2)
            except ValueError as exc:
                raise self._damaged(exc) from None
            self._stamps[connection.topic].append(stamp)
        self.info_topic = info_topic if read_info else None
        for what, topic in (("colour", self.color_topic), ("depth", self.depth_topic)):
            if not self._stamps[topic]:
                raise SourceError(
                    f"rosbag {self.path}: the {what} topic {topic} has no messages; topics: {self.topics}"
                )

    def _pair(self) -> None:
        """Each colour stamp takes the nearest unused depth stamp within the tolerance."""
        colour, depth = self._stamps[self.color_topic], self._stamps[self.depth_topic]
        order = sorted(range(len(depth)), key=lambda j: (depth[j], j))
        sorted_stamps = [depth[j] for j in order]
        used = set()
        tolerance_ns = self.tolerance_ms * 1e6
        pairs, skews, nearest_miss = [], [], None
        for i, stamp in enumerate(colour):
            k = bisect.bisect_left(sorted_stamps, stamp)
            candidates = [order[c] for c in (k - 1, k, k + 1) if 0 <= c < len(order) and order[c] not in used]
            if not candidates:
                continue
            j = min(candidates, key=lambda c: (abs(depth[c] - stamp), c))
            skew = abs(depth[j] - stamp)
            if skew > tolerance_ns:
                nearest_miss = skew if nearest_miss is None else min(nearest_miss, skew)
                continue
            used.add(j)
            pairs.append((i, j))
            skews.append(skew)
        if not pairs:
            raise SourceError(
                f"rosbag {self.path}: no colour message on {self.color_topic} has a depth message on "
                f"{self.depth_topic} within {self.tolerance_ms:g} ms (nearest: {nearest_miss / 1e6:.1f} ms); "
                "raise tolerance_ms or check the topics"
            )
        self.pairs = pairs
        self.pairing = {
            "pairs": len(pairs),
            "colour_without_depth": len(colour) - len(pairs),
            "depth_unused": len(depth) - len(pairs),
            "tolerance_ms": self.tolerance_ms,
            "max_skew_ms": round(max(skews) / 1e6, 3),
        }
        self.summary = (
            f"rosbag: {len(pairs)} pairs of {self.color_topic} + {self.depth_topic} "
            f"(stamps within {self.tolerance_ms:g} ms, largest difference {max(skews) / 1e6:.1f} ms)"
        )
        if len(pairs) < len(colour):
            self.summary += f"; {len(colour) - len(pairs)} colour messages without depth skipped"
            log.warning("%s", self.summary)

    def _decode_pairs(self) -> Iterator[Tuple[Any, Any, Tuple[int, int]]]:
        """Pass 2: (colour msg, depth msg, pair) in colour order, holding only messages still waiting."""
        want_colour = {i: j for i, j in self.pairs}
        want_depth = {j for _, j in self.pairs}
        queue: Deque[Tuple[int, int]] = collections.deque(self.pairs)
        held_colour: Dict[int, Any] = {}
        held_depth: Dict[int, Any] = {}
        seen = {self.color_topic: -1, self.depth_topic: -1}
        for topic, msg in self._messages([self.color_topic, self.depth_topic]):
            seen[topic] += 1
            n = seen[topic]
            if topic == self.color_topic and n in want_colour:
                held_colour[n] = msg
            elif topic == self.depth_topic and n in want_depth:
                held_depth[n] = msg
            while queue and queue[0][0] in held_colour and queue[0][1] in held_depth:
                i, j = queue.popleft()
                yield held_colour.pop(i), held_depth.pop(j), (i, j)
        if queue:
            raise SourceError(f"rosbag {self.path} changed while it was read; {len(queue)} pairs went missing")

    # --- reading ------------------------------------------------------------------------------

    def _read(self) -> Optional[Frame]:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            frame.capture_time = time.perf_counter()
            return frame
        while True:
            if self._interrupted.is_set():
                return None
            item = next(self._frames, None)
            if item is not None:
                break
            if not self.loop:
                return None
            self.loops_done += 1
            self._frames = self._decode_pairs()
        return self._convert(item)

    def _convert(self, item: Tuple[Any, Any, Tuple[int, int]]) -> Frame:
        colour_msg, depth_msg, (i, j) = item
        capture_time = time.perf_counter()
        bgr = rosmsg.color_to_bgr(colour_msg, self.color_topic)
        depth_m = rosmsg.depth_to_metres(depth_msg, self.depth_topic)
        if depth_m.shape != bgr.shape[:2]:
            raise SourceError(
                f"depth on {self.depth_topic} is {depth_m.shape[1]}x{depth_m.shape[0]} but colour on {self.color_topic} "
                f"is {bgr.shape[1]}x{bgr.shape[0]}: depth is not aligned to colour; record "
                "aligned_depth_to_color (realsense-ros align_depth.enable:=true) or name it with depth_topic"
            )
        stamp = rosmsg.stamp_ns(colour_msg.header)
        depth_stamp = rosmsg.stamp_ns(depth_msg.header)
        meta: Dict[str, Any] = {
            "source": "rosbag",
            "file": str(self.path),
            "stamp_ns": stamp,
            "frame_id": str(colour_msg.header.frame_id),
            "depth_stamp_ns": depth_stamp,
            "depth_skew_ms": (depth_stamp - stamp) / 1e6,
            "color_encoding": str(colour_msg.encoding),
            "depth_encoding": str(depth_msg.encoding),
            "color_message": i,
            "depth_message": j,
            "loop": self.loops_done,
        }
        if str(depth_msg.encoding) != "32FC1":
            meta["depth_scale"] = 0.001
        if self.intrinsics is not None:
            meta["intrinsics"] = dict(self.intrinsics)
        return Frame(bgr, depth_m, stamp / 1e6, capture_time, meta=meta)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
