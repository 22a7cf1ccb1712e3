"""Write real RealSense recordings (.db3) with known content, through the SDK's own recorder.

`rs.software_device` is librealsense's virtual device: we push frames into its sensors and
`rs.recorder` writes them exactly as it would for a camera. Playback then goes through the same
SDK code a real recording does, so the tests exercise real file reading, not a stand-in.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Tuple

import numpy as np

# Identity extrinsics must be explicit: the default rs.extrinsics() is all zeros and makes
# rs.align produce all-zero depth.
_IDENTITY_ROTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


@dataclasses.dataclass
class RecordedFrame:
    """What was pushed into the recorder for one frame."""

    bgr: np.ndarray  # (H, W, 3) uint8, BGR order whatever format the file stores
    depth_units: np.ndarray  # (H, W) uint16 z16 values
    depth_m: float  # the plane's distance before quantisation
    timestamp_ms: float
    frame_number: int


def expected_bgr(k: int, size: Tuple[int, int]) -> np.ndarray:
    """A pattern whose three channels differ (so a channel swap shows) and that changes per frame."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    bgr = np.empty((h, w, 3), np.uint8)
    bgr[..., 0] = (10 * k + 7) % 256  # blue: the frame number
    bgr[..., 1] = (xx * 255 // max(w - 1, 1)).astype(np.uint8)  # green: left-right ramp
    bgr[..., 2] = 200  # red: constant
    bgr[: h // 4, : w // 4, 2] = 30  # a dark-red corner marks the top-left
    return bgr


def plane_depth_m(k: int) -> float:
    """A fronto-parallel plane that recedes 5 cm per frame from 0.8 m (odd values test rounding)."""
    return 0.8 + 0.05 * k + 0.00037


def write_rs_recording(
    path: Path,
    frames: int = 10,
    size: Tuple[int, int] = (48, 64),
    fps: int = 30,
    depth_units: float = 0.001,
    color_format: str = "bgr8",
    with_depth: bool = True,
    with_color: bool = True,
) -> List[RecordedFrame]:
    """Record `frames` frames of a depth plane + colour pattern to `path` (.db3); return what was written.

    color_format: "bgr8" or "rgb8" (the pixels stored are the same scene in that channel order).
    """
    from runtime.sources.rs_frames import import_pyrealsense2

    rs = import_pyrealsense2()

    path = Path(path)
    h, w = size
    device = rs.software_device()
    device.register_info(rs.camera_info.serial_number, "000000000042")
    device.register_info(rs.camera_info.name, "edge-mm software D4xx")

    def intrinsics() -> "rs.intrinsics":
        intr = rs.intrinsics()
        intr.width, intr.height = w, h
        intr.ppx, intr.ppy = w / 2, h / 2
        intr.fx = intr.fy = float(w)
        intr.model = rs.distortion.brown_conrady
        intr.coeffs = [0.0] * 5
        return intr

    def video_stream(kind, uid: int, fmt, bpp: int) -> "rs.video_stream":
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = kind, 0, uid
        stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = w, h, fps, bpp, fmt
        stream.intrinsics = intrinsics()
        return stream

    sensors = []  # (sensor, profile, bytes per pixel, kind)
    if with_depth:
        depth_sensor = device.add_sensor("Stereo Module")
        depth_sensor.add_read_only_option(rs.option.depth_units, depth_units)
        depth_profile = depth_sensor.add_video_stream(video_stream(rs.stream.depth, 0, rs.format.z16, 2))
        sensors.append((depth_sensor, depth_profile, 2, "depth"))
    if with_color:
        fmt = {"bgr8": rs.format.bgr8, "rgb8": rs.format.rgb8}[color_format]
        color_sensor = device.add_sensor("RGB Camera")
        color_profile = color_sensor.add_video_stream(video_stream(rs.stream.color, 1, fmt, 3))
        sensors.append((color_sensor, color_profile, 3, "color"))
    if with_depth and with_color:
        extrinsics = rs.extrinsics()
        extrinsics.rotation, extrinsics.translation = _IDENTITY_ROTATION, [0.0, 0.0, 0.0]
        depth_profile.register_extrinsics_to(color_profile, extrinsics)

    recorder = rs.recorder(str(path), device)
    syncer = rs.syncer()
    for sensor, profile, _, _ in sensors:
        sensor.open(profile)
        sensor.start(syncer)

    written: List[RecordedFrame] = []
    period_ms = 1000.0 / fps
    for k in range(frames):
        bgr = expected_bgr(k, size)
        depth_m = plane_depth_m(k)
        z16 = np.full((h, w), round(depth_m / depth_units), np.uint16)
        timestamp = 5000.0 + k * period_ms
        for sensor, profile, bpp, kind in sensors:
            pixels = z16 if kind == "depth" else (bgr if color_format == "bgr8" else bgr[..., ::-1])
            frame = rs.software_video_frame()
            frame.pixels = np.ascontiguousarray(pixels)
            frame.bpp, frame.stride = bpp, w * bpp
            frame.timestamp, frame.domain = timestamp, rs.timestamp_domain.hardware_clock
            frame.frame_number = k
            frame.profile = profile.as_video_stream_profile()
            sensor.on_video_frame(frame)
        written.append(RecordedFrame(bgr, z16, depth_m, timestamp, k))

    for sensor, _, _, _ in sensors:
        sensor.stop()
        sensor.close()
    recorder.pause()  # flushes; the file is complete once the recorder is released
    del recorder
    return written
