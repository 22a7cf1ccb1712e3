"""Results as ROS 2 messages: `--out run.mcap` (an MCAP file Foxglove opens) or `--out run.rosbag2`
(a rosbag2 folder, metadata.yaml + MCAP storage, for `ros2 bag play`).

Per frame, stamped with the source's own time (a rosbag's header stamp; other sources' timestamp_ms)
and its colour frame id, every message on its topic under `/edge_mm`:

    image              sensor_msgs/Image bgr8: the annotated frame (image/compressed: JPEG, jpeg=True)
    saliency/mask      sensor_msgs/Image mono8: 255 where salient (the runtime's mask)
    saliency/prob      sensor_msgs/Image mono8: the saliency map, probability x 255
    depth              sensor_msgs/Image 32FC1: the aligned depth in metres (0 = none)
    detections         vision_msgs/Detection2DArray: the salient box, class "salient", its score
    camera_info        sensor_msgs/CameraInfo: when the source knows the intrinsics
    clip               vision_msgs/Detection2DArray, with --clip: the label and query hits on the box

Messages are CDR-encoded by `rosbags` with ROS 2 Humble's definitions (vision_msgs registered from
its .msg text) and every schema is written into the file, so readers need no ROS installation.
Written under a hidden name unique to this writer and renamed on close(), which runs at the end,
on Ctrl-C / SIGTERM and on errors: the target is absent or complete, up to the last frame.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import cv2
import numpy as np

from edge_mm.errors import UsageError

from .. import rosmsg
from .base import Sink

MCAP_SUFFIX = ".mcap"
ROSBAG2_SUFFIX = ".rosbag2"
TOPIC_PREFIX = "/edge_mm"
DEFAULT_FRAME_ID = "camera_color_optical_frame"  # realsense-ros' colour optical frame
ROSBAG2_VERSION = 8  # rosbag2 metadata version; rosbags writes 8 or 9, and newer ROS 2 releases read older ones
JPEG_QUALITY = 90
RECENT_FRAMES = 512  # frame index -> stamp, for CLIP results that arrive a few frames late


def is_ros_output(path: Union[str, Path]) -> bool:
    """True for the outputs this sink writes (`.mcap` file, `.rosbag2` folder)."""
    return Path(path).suffix.lower() in (MCAP_SUFFIX, ROSBAG2_SUFFIX)


def check_ros_output(path: Union[str, Path]) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == MCAP_SUFFIX and path.is_dir():
        raise UsageError(f"--out {path} is a folder; give a file name such as {path / 'run.mcap'}")
    if suffix == ROSBAG2_SUFFIX and path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is a file; a .rosbag2 output is a folder (metadata.yaml + MCAP), remove it")
    if suffix not in (MCAP_SUFFIX, ROSBAG2_SUFFIX):
        raise UsageError(f"--out {path}: ROS output must end in .mcap (a file) or .rosbag2 (a folder)")
    rosmsg.import_rosbags()  # a missing package is a startup error, not a failure at the first frame
    return path


def _temp_name(final: Path, suffix: str) -> Path:
    # Hidden, beside the target, unique per writer (pid + random): two runs never share one.
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


class _McapFile:
    """One MCAP file (ROS 2 profile) written with the `mcap` package's writer."""

    def __init__(self, final: Path) -> None:
        try:
            from mcap.writer import CompressionType, Writer
        except ImportError as exc:
            raise UsageError(f"--out {final} needs the `mcap` package ({exc}); {rosmsg.ROS_INSTALL_HINT}") from None
        self.final = final
        self.temp = _temp_name(final, ".part")
        self._fh = open(self.temp, "xb")
        # LZ4 chunks without CRCs: with the writer's defaults (zstd, CRCs) bench/bench_ros.py wrote
        # 640x480 results 3-5x slower, too slow for a 30 FPS camera on a small CPU. Foxglove and
        # rosbag2 read LZ4; the MCAP format makes the CRCs optional.
        self._writer = Writer(self._fh, compression=CompressionType.LZ4, enable_crcs=False)
        self._writer.start(profile="ros2", library="edge-mm")
        self._schemas: Dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str) -> Any:
        if msgtype not in self._schemas:
            text, _ = rosmsg.typestore().generate_msgdef(msgtype, ros_version=2)
            self._schemas[msgtype] = self._writer.register_schema(name=msgtype, encoding="ros2msg", data=text.encode())
        return self._writer.register_channel(topic=topic, message_encoding="cdr", schema_id=self._schemas[msgtype])

    def write(self, handle: Any, stamp: int, data: bytes, sequence: int) -> None:
        self._writer.add_message(handle, log_time=stamp, data=data, publish_time=stamp, sequence=sequence)

    def finish(self) -> None:
        self._writer.finish()
        self._fh.close()
        os.replace(self.temp, self.final)

    def abort(self) -> None:
        self._fh.close()
        self.temp.unlink(missing_ok=True)


class _Rosbag2Folder:
    """A rosbag2 folder (metadata.yaml + one MCAP file) written with rosbags' rosbag2 writer."""

    def __init__(self, final: Path) -> None:
        rosbags = rosmsg.import_rosbags()
        self.final = final
        self.temp = _temp_name(final, ".part")
        self.temp.mkdir()
        # The bag is made inside the hidden folder under its final name, so the storage file inside it
        # (named after the bag) and metadata.yaml are already right when the bag is moved out.
        self._writer = rosbags.rosbag2.Writer(
            self.temp / final.name, version=ROSBAG2_VERSION, storage_plugin=rosbags.rosbag2.StoragePlugin.MCAP
        )
        self._writer.open()

    def add_topic(self, topic: str, msgtype: str) -> Any:
        return self._writer.add_connection(topic, msgtype, typestore=rosmsg.typestore())

    def write(self, handle: Any, stamp: int, data: bytes, sequence: int) -> None:
        self._writer.write(handle, stamp, data)

    def finish(self) -> None:
        self._writer.close()
        if self.final.exists():
            old = _temp_name(self.final, ".old")
            os.replace(self.final, old)
            os.replace(self.temp / self.final.name, self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.temp / self.final.name, self.final)
        shutil.rmtree(self.temp, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)


class RosResultsSink(Sink):
    """Writes each FrameResult as ROS 2 messages (see the module docstring); thread-safe, frames in order."""

    name = "ros"

    def __init__(self, path: Union[str, Path], *, jpeg: bool = False, prefix: str = TOPIC_PREFIX) -> None:
        self.path = check_ros_output(path)
        self.jpeg = bool(jpeg)
        self.prefix = prefix.rstrip("/")
        self.frames_written = 0
        self.messages_written = 0
        self._out: Optional[Any] = None
        self._topics: Dict[str, Any] = {}
        self._sequence: Dict[str, int] = {}
        self._stamps: Dict[int, Tuple[int, str]] = {}
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create the folder for {self.path} ({exc.strerror}); choose another --out"
            ) from None

    def topic(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def _open(self) -> None:
        try:
            if self.path.suffix.lower() == MCAP_SUFFIX:
                self._out = _McapFile(self.path)
            else:
                self._out = _Rosbag2Folder(self.path)
        except OSError as exc:
            raise UsageError(f"cannot write {self.path} ({exc.strerror}); choose another --out") from None

    def _emit(self, name: str, msgtype: str, stamp: int, message: Any) -> None:
        topic = self.topic(name)
        if topic not in self._topics:
            self._topics[topic] = self._out.add_topic(topic, msgtype)
            self._sequence[topic] = 0
        data = rosmsg.typestore().serialize_cdr(message, msgtype)
        self._out.write(self._topics[topic], stamp, bytes(data), self._sequence[topic])
        self._sequence[topic] += 1
        self.messages_written += 1

    def write(self, result: Any) -> None:
        frame, saliency = result.frame, result.saliency
        stamp, frame_id = stamp_of(frame), str(frame.meta.get("frame_id") or DEFAULT_FRAME_ID)
        hdr = rosmsg.header(stamp, frame_id)
        with self._lock:
            if self._closed:
                return
            if self._out is None:
                self._open()
            if self.jpeg:
                ok, buf = cv2.imencode(".jpg", result.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if ok:
                    self._emit(
                        "image/compressed",
                        "sensor_msgs/msg/CompressedImage",
                        stamp,
                        rosmsg.compressed_image_msg(hdr, buf.tobytes()),
                    )
            else:
                self._emit("image", "sensor_msgs/msg/Image", stamp, rosmsg.image_msg(hdr, result.image, "bgr8"))
            if saliency.mask is not None:
                mask = np.where(saliency.mask, np.uint8(255), np.uint8(0))
                self._emit("saliency/mask", "sensor_msgs/msg/Image", stamp, rosmsg.image_msg(hdr, mask, "mono8"))
            prob = np.clip(np.rint(saliency.prob * 255.0), 0, 255).astype(np.uint8)
            self._emit("saliency/prob", "sensor_msgs/msg/Image", stamp, rosmsg.image_msg(hdr, prob, "mono8"))
            depth = np.asarray(frame.depth_m, dtype=np.float32)
            self._emit("depth", "sensor_msgs/msg/Image", stamp, rosmsg.image_msg(hdr, depth, "32FC1"))
            detections = []
            if saliency.box is not None:
                hypotheses = (("salient", float(saliency.score)),)
                detections.append(rosmsg.detection(hdr, saliency.box, hypotheses, str(frame.index)))
            self._emit("detections", "vision_msgs/msg/Detection2DArray", stamp, rosmsg.detection_array(hdr, detections))
            intrinsics = frame.meta.get("intrinsics")
            if intrinsics:
                self._emit("camera_info", "sensor_msgs/msg/CameraInfo", stamp, rosmsg.camera_info_msg(hdr, intrinsics))
            self._stamps[int(frame.index)] = (stamp, frame_id)
            self._stamps.pop(int(frame.index) - RECENT_FRAMES, None)
            self.frames_written += 1

    def write_event(self, event: Dict[str, Any]) -> None:
        """A CLIP event (runtime.clip_stage): its label and query hit on the box, stamped like its frame."""
        if event.get("type") not in ("clip", "clip_query") or not event.get("box"):
            return
        hypotheses = []
        if event["type"] == "clip":
            if event.get("label") is not None:
                hypotheses.append((str(event["label"]), float(event.get("prob", 0.0))))
            if event.get("query_score") is not None:
                hypotheses.append(("query", float(event["query_score"])))
        else:
            hypotheses.append((f"query: {event.get('query')}", float(event.get("score", 0.0))))
            if event.get("label") is not None:
                hypotheses.append((str(event["label"]), 0.0))
        if not hypotheses:
            return
        with self._lock:
            if self._closed or self._out is None:
                return
            known = self._stamps.get(int(event.get("index", -1)))
            stamp, frame_id = known or (_ms_to_ns(event.get("timestamp_ms", 0.0)), DEFAULT_FRAME_ID)
            hdr = rosmsg.header(stamp, frame_id)
            det = rosmsg.detection(hdr, tuple(event["box"]), tuple(hypotheses), str(event.get("index", "")))
            self._emit("clip", "vision_msgs/msg/Detection2DArray", stamp, rosmsg.detection_array(hdr, [det]))

    def close(self) -> None:
        """Finish and rename the output; without a single frame no output is left (like the video)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._out is None:
                return
            out, self._out = self._out, None
            try:
                out.finish()
            except BaseException:
                out.abort()
                raise

    def describe(self) -> str:
        kind = "MCAP" if self.path.suffix.lower() == MCAP_SUFFIX else "rosbag2 (MCAP)"
        return f"{kind} {self.path}"


def _ms_to_ns(ms: float) -> int:
    return max(0, int(round(float(ms) * 1e6)))


def stamp_of(frame: Any) -> int:
    """The frame's own time in ns: a rosbag's exact header stamp, else the source's timestamp_ms."""
    stamp = frame.meta.get("stamp_ns")
    return int(stamp) if stamp is not None else _ms_to_ns(frame.timestamp_ms)
