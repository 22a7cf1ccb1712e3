"""ROS 2 messages without ROS: the one place that knows image encodings, headers, camera_info and
vision_msgs, shared by the rosbag source and the MCAP / rosbag2 results sink.

`rosbags` (pure Python, PyPI) provides the message types and the CDR encoder; it is imported only
when a ROS file is read or written, so the runtime runs without it (`pip install 'edge-mm[ros]'`).
vision_msgs is not in rosbags' stores: its definitions (vision_msgs 4.x, as shipped with ROS 2
Humble and later) are registered from their .msg text below.
"""

from __future__ import annotations

import functools
import struct
from typing import Any, Dict, Optional, Tuple

import numpy as np

from edge_mm.errors import SourceError, UsageError

ROS_INSTALL_HINT = "pip install 'edge-mm[ros]' (or: pip install rosbags mcap)"

#: Colour encodings the source reads, and depth encodings with what one unit means.
COLOR_ENCODINGS = ("rgb8", "bgr8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")  # 16-bit: millimetres, 0 = no data; 32FC1: metres (REP 118)

#: vision_msgs 4.x definitions (ros-perception/vision_msgs, msg/*.msg), fields only.
VISION_MSGS: Dict[str, str] = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}


def import_rosbags() -> Any:
    """The rosbags package, or a one-line UsageError saying how to install it."""
    try:
        import rosbags.highlevel
        import rosbags.rosbag2
        import rosbags.typesys
    except ImportError as exc:
        raise UsageError(f"ROS bags need the `rosbags` package ({exc}); {ROS_INSTALL_HINT}") from None
    return rosbags


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """ROS 2 Humble's message types plus vision_msgs (one store for every writer and test)."""
    rosbags = import_rosbags()
    store = rosbags.typesys.get_typestore(rosbags.typesys.Stores.ROS2_HUMBLE)
    types: Dict[str, Any] = {}
    for name, text in VISION_MSGS.items():
        types.update(rosbags.typesys.get_types_from_msg(text, name))
    store.register(types)
    return store


# --- reading images ------------------------------------------------------------------------


def _pixels(msg: Any, dtype: np.dtype, channels: int, topic: str) -> np.ndarray:
    """(H, W[, C]) array of an Image message's data, honouring step and byte order; owned (a copy)."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * np.dtype(dtype).itemsize
    data = np.asarray(msg.data, dtype=np.uint8)
    if height <= 0 or width <= 0:
        raise SourceError(f"{topic}: an image of {width}x{height} pixels; the bag is corrupt")
    if step < row_bytes or data.size < step * height:
        raise SourceError(
            f"{topic}: image data is {data.size} bytes, {width}x{height} {msg.encoding} needs {row_bytes * height} "
            f"(step {step}); the message is truncated or corrupt"
        )
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    out = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<"))
    out = out.astype(np.dtype(dtype).newbyteorder("="), copy=True)
    return out.reshape((height, width, channels) if channels > 1 else (height, width))


def color_to_bgr(msg: Any, topic: str) -> np.ndarray:
    """A colour Image message as C-contiguous BGR uint8."""
    encoding = str(msg.encoding)
    if encoding == "bgr8":
        return _pixels(msg, np.uint8, 3, topic)
    if encoding == "rgb8":
        return np.ascontiguousarray(_pixels(msg, np.uint8, 3, topic)[:, :, ::-1])
    if encoding == "mono8":
        gray = _pixels(msg, np.uint8, 1, topic)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    raise SourceError(
        f"{topic}: colour encoding {encoding!r} is not supported; record {', '.join(COLOR_ENCODINGS)} "
        "(realsense-ros: rgb_camera.color_format)"
    )


def depth_to_metres(msg: Any, topic: str) -> np.ndarray:
    """A depth Image message as float32 metres; 0 where there is no depth (0 mm, NaN, inf, negative)."""
    encoding = str(msg.encoding)
    if encoding in ("16UC1", "mono16"):
        return _pixels(msg, np.uint16, 1, topic).astype(np.float32) * np.float32(0.001)
    if encoding == "32FC1":
        metres = _pixels(msg, np.float32, 1, topic)
        metres[~np.isfinite(metres) | (metres < 0)] = 0.0
        return metres
    raise SourceError(
        f"{topic}: depth encoding {encoding!r} is not supported; depth must be {', '.join(DEPTH_ENCODINGS)} "
        "(16UC1 in millimetres as realsense-ros writes it, 32FC1 in metres)"
    )


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def raw_header_stamp_ns(raw: bytes, ros2: bool) -> int:
    """The header stamp of a serialized message whose first field is std_msgs/Header, without decoding it.

    ROS 2 CDR: a 4-byte encapsulation (0x0000 big-endian, 0x0001 little-endian), then int32 sec,
    uint32 nanosec. ROS 1: uint32 seq, uint32 sec, uint32 nsec, little-endian.
    """
    view = memoryview(raw)
    if ros2:
        if len(view) < 12 or view[0] != 0 or view[1] not in (0, 1):
            raise ValueError(f"not a CDR message ({len(view)} bytes)")
        order = "<" if view[1] == 1 else ">"
        sec, nanosec = struct.unpack_from(f"{order}iI", view, 4)
    else:
        if len(view) < 12:
            raise ValueError(f"a message of {len(view)} bytes has no header")
        sec, nanosec = struct.unpack_from("<II", view, 4)
    return int(sec) * 1_000_000_000 + int(nanosec)


def intrinsics_of(info: Any) -> Dict[str, Any]:
    """camera_info -> the same keys the RealSense sources put in Frame.meta['intrinsics'].

    ROS 1 spells the matrices K and D, ROS 2 k and d.
    """
    k = np.asarray(getattr(info, "k", None) if hasattr(info, "k") else info.K, dtype=np.float64).reshape(-1)
    d = getattr(info, "d", None) if hasattr(info, "d") else info.D
    return {
        "width": int(info.width),
        "height": int(info.height),
        "fx": float(k[0]),
        "fy": float(k[4]),
        "ppx": float(k[2]),
        "ppy": float(k[5]),
        "model": str(info.distortion_model),
        "coeffs": [float(c) for c in np.asarray(d, dtype=np.float64).reshape(-1)],
    }


# --- writing messages ----------------------------------------------------------------------


def header(stamp: int, frame_id: str) -> Any:
    types = typestore().types
    sec, nanosec = divmod(int(stamp), 1_000_000_000)
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=str(frame_id)
    )


#: numpy layout -> (encoding, channels) for the images this project writes.
_ENCODING_OF = {("uint8", 3): "bgr8", ("uint8", 1): "mono8", ("uint16", 1): "16UC1", ("float32", 1): "32FC1"}


def image_msg(hdr: Any, array: np.ndarray, encoding: Optional[str] = None) -> Any:
    """sensor_msgs/Image of a (H, W) or (H, W, 3) array (little-endian); encoding from the dtype unless given."""
    array = np.ascontiguousarray(array)
    channels = 1 if array.ndim == 2 else array.shape[2]
    encoding = encoding or _ENCODING_OF[(array.dtype.name, channels)]
    data = array.astype(array.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(-1)
    return typestore().types["sensor_msgs/msg/Image"](
        header=hdr,
        height=array.shape[0],
        width=array.shape[1],
        encoding=encoding,
        is_bigendian=0,
        step=array.shape[1] * channels * array.dtype.itemsize,
        data=data,
    )


def compressed_image_msg(hdr: Any, jpeg: bytes) -> Any:
    return typestore().types["sensor_msgs/msg/CompressedImage"](
        header=hdr, format="jpeg", data=np.frombuffer(jpeg, dtype=np.uint8)
    )


def camera_info_msg(hdr: Any, intrinsics: Dict[str, Any]) -> Any:
    """sensor_msgs/CameraInfo from Frame.meta['intrinsics'] (pinhole; distortion as recorded)."""
    types = typestore().types
    fx, fy, cx, cy = (float(intrinsics[k]) for k in ("fx", "fy", "ppx", "ppy"))
    coeffs = np.asarray(intrinsics.get("coeffs") or [], dtype=np.float64)
    model = str(intrinsics.get("model") or "plumb_bob")
    if "brown" in model or model.startswith("distortion."):  # librealsense names -> ROS names
        model = "plumb_bob"
    return types["sensor_msgs/msg/CameraInfo"](
        header=hdr,
        height=int(intrinsics["height"]),
        width=int(intrinsics["width"]),
        distortion_model=model,
        d=coeffs,
        k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], dtype=np.float64),
        r=np.eye(3, dtype=np.float64).reshape(-1),
        p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], dtype=np.float64),
        binning_x=0,
        binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def detection(hdr: Any, box: Tuple[int, int, int, int], hypotheses: Tuple[Tuple[str, float], ...], ident: str) -> Any:
    """vision_msgs/Detection2D: a pixel box (x0, y0, x1, y1, exclusive end) and (class_id, score) pairs."""
    types = typestore().types
    x0, y0, x1, y1 = (float(v) for v in box)
    pose = types["geometry_msgs/msg/PoseWithCovariance"](
        pose=types["geometry_msgs/msg/Pose"](
            position=types["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
            orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
        covariance=np.zeros(36, dtype=np.float64),
    )
    results = [
        types["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=types["vision_msgs/msg/ObjectHypothesis"](class_id=str(name), score=float(score)), pose=pose
        )
        for name, score in hypotheses
    ]
    bbox = types["vision_msgs/msg/BoundingBox2D"](
        center=types["vision_msgs/msg/Pose2D"](
            position=types["vision_msgs/msg/Point2D"](x=(x0 + x1) / 2.0, y=(y0 + y1) / 2.0), theta=0.0
        ),
        size_x=x1 - x0,
        size_y=y1 - y0,
    )
    return types["vision_msgs/msg/Detection2D"](header=hdr, results=results, bbox=bbox, id=str(ident))


def detection_array(hdr: Any, detections: list) -> Any:
    return typestore().types["vision_msgs/msg/Detection2DArray"](header=hdr, detections=list(detections))


def box_of(det: Any) -> Tuple[int, int, int, int]:
    """The (x0, y0, x1, y1) pixel box back from a Detection2D (for readers and tests)."""
    cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
    hw, hh = det.bbox.size_x / 2.0, det.bbox.size_y / 2.0
    return (round(cx - hw), round(cy - hh), round(cx + hw), round(cy + hh))
