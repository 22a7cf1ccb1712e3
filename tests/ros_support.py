"""Write ROS bags the way a robot would (realsense-ros topic names and encodings) with `rosbags`,
for tests/test_sources_rosbag.py and tests/test_sinks_mcap.py.

`write_bag(path, frames, storage=...)` writes rosbag2 (storage "sqlite3" or "mcap") or rosbag1
(storage "ros1"). Each frame is (bgr uint8, depth metres float32, stamp_ns[, depth_stamp_ns]).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

COLOR = "/camera/camera/color/image_raw"
DEPTH = "/camera/camera/aligned_depth_to_color/image_raw"
INFO = "/camera/camera/color/camera_info"
COLOR_FRAME_ID = "camera_color_optical_frame"


def _store(storage: str) -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS1_NOETIC if storage == "ros1" else Stores.ROS2_HUMBLE)


def _header(types: Any, storage: str, stamp_ns: int, frame_id: str, seq: int) -> Any:
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    stamp = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    if storage == "ros1":
        return types["std_msgs/msg/Header"](seq=seq, stamp=stamp, frame_id=frame_id)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def encode_color(bgr: np.ndarray, encoding: str) -> Tuple[np.ndarray, int]:
    """(row-major bytes, step) of a BGR image in a ROS colour encoding (or any raw layout for bad bags)."""
    if encoding == "rgb8":
        pixels = bgr[:, :, ::-1]
    elif encoding == "bgr8":
        pixels = bgr
    elif encoding == "mono8":
        pixels = bgr[:, :, 1]  # green as grey: the test compares against the same channel
    else:
        pixels = bgr
    pixels = np.ascontiguousarray(pixels)
    return pixels.view(np.uint8).reshape(-1), pixels.nbytes // pixels.shape[0]


def encode_depth(depth_m: np.ndarray, encoding: str) -> Tuple[np.ndarray, int]:
    if encoding == "16UC1":
        pixels = np.round(depth_m * 1000.0).astype("<u2")
    elif encoding == "32FC1":
        pixels = depth_m.astype("<f4")
    else:
        pixels = np.round(depth_m * 1000.0).astype(np.uint8)
    pixels = np.ascontiguousarray(pixels)
    return pixels.view(np.uint8).reshape(-1), pixels.nbytes // pixels.shape[0]


def image(types, storage, stamp_ns, frame_id, seq, data, step, height, width, encoding) -> Any:
    return types["sensor_msgs/msg/Image"](
        header=_header(types, storage, stamp_ns, frame_id, seq),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=step,
        data=data,
    )


def camera_info(types, storage, stamp_ns, seq, intrinsics: Dict[str, Any]) -> Any:
    fx, fy, cx, cy = (float(intrinsics[k]) for k in ("fx", "fy", "ppx", "ppy"))
    k = np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], dtype=np.float64)
    p = np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], dtype=np.float64)
    d = np.asarray(intrinsics.get("coeffs", [0.0] * 5), dtype=np.float64)
    mats = (
        dict(D=d, K=k, R=np.eye(3).reshape(-1), P=p)
        if storage == "ros1"
        else dict(d=d, k=k, r=np.eye(3).reshape(-1), p=p)
    )
    roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return types["sensor_msgs/msg/CameraInfo"](
        header=_header(types, storage, stamp_ns, COLOR_FRAME_ID, seq),
        height=int(intrinsics["height"]),
        width=int(intrinsics["width"]),
        distortion_model="plumb_bob",
        binning_x=0,
        binning_y=0,
        roi=roi,
        **mats,
    )


class BagWriter:
    """One bag being written: `topic(name, type)` then `write(name, stamp_ns, message)`; close() finishes it."""

    def __init__(self, path: Path, storage: str) -> None:
        self.storage = storage
        self.store = _store(storage)
        self.types = self.store.types
        if storage == "ros1":
            from rosbags.rosbag1 import Writer

            self.writer = Writer(path)
        else:
            from rosbags.rosbag2 import StoragePlugin, Writer

            plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
            self.writer = Writer(path, version=9, storage_plugin=plugin)
        self.writer.open()
        self.connections: Dict[str, Any] = {}

    def topic(self, name: str, msgtype: str) -> None:
        self.connections[name] = self.writer.add_connection(name, msgtype, typestore=self.store)

    def write(self, name: str, stamp_ns: int, message: Any) -> None:
        connection = self.connections[name]
        if self.storage == "ros1":
            raw = self.store.serialize_ros1(message, connection.msgtype)
        else:
            raw = self.store.serialize_cdr(message, connection.msgtype)
        self.writer.write(connection, int(stamp_ns), raw)

    def close(self) -> None:
        self.writer.close()


def write_bag(
    path: Path,
    frames: Iterable[Sequence[Any]],
    storage: str = "sqlite3",
    *,
    color_encoding: str = "rgb8",
    depth_encoding: str = "16UC1",
    color_topic: Optional[str] = COLOR,
    depth_topic: Optional[str] = DEPTH,
    info_topic: Optional[str] = INFO,
    intrinsics: Optional[Dict[str, Any]] = None,
    extra_topics: Sequence[Tuple[str, str]] = (),
) -> Path:
    """A bag with one colour and one depth message per frame (and camera_info when intrinsics are given)."""
    bag = BagWriter(Path(path), storage)
    image_type = "sensor_msgs/msg/Image"
    for name in (color_topic, depth_topic):
        if name:
            bag.topic(name, image_type)
    if info_topic and intrinsics:
        bag.topic(info_topic, "sensor_msgs/msg/CameraInfo")
    for name, msgtype in extra_topics:
        bag.topic(name, msgtype)
    types = bag.types
    for seq, frame in enumerate(frames):
        bgr, depth_m, stamp = frame[0], frame[1], int(frame[2])
        depth_stamp = int(frame[3]) if len(frame) > 3 else stamp
        h, w = bgr.shape[:2]
        if color_topic:
            data, step = encode_color(bgr, color_encoding)
            msg = image(types, storage, stamp, COLOR_FRAME_ID, seq, data, step, h, w, color_encoding)
            bag.write(color_topic, stamp, msg)
        if info_topic and intrinsics:
            bag.write(info_topic, stamp, camera_info(types, storage, stamp, seq, intrinsics))
        if depth_topic:
            dh, dw = depth_m.shape
            data, step = encode_depth(depth_m, depth_encoding)
            msg = image(types, storage, depth_stamp, COLOR_FRAME_ID, seq, data, step, dh, dw, depth_encoding)
            bag.write(depth_topic, depth_stamp, msg)
    bag.close()
    return Path(path)


def synthetic_frames(count: int, size=(48, 64), seed: int = 0, start_ns: int = 1_700_000_000_000_000_000, period_ms=33):
    """(bgr, depth_m, stamp_ns) of edge_mm.synthetic scenes at a camera-like rate."""
    from edge_mm.synthetic import SceneGenerator

    generator = SceneGenerator(size=size, seed=seed)
    out = []
    for i in range(count):
        scene = generator.generate(i)
        out.append((scene.bgr, scene.depth_m.astype(np.float32), start_ns + i * period_ms * 1_000_000))
    return out
