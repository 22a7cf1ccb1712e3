"""What the live camera and the recording player share: importing pyrealsense2 with useful errors,
the post-processing filter chain, and turning an SDK frameset into owned numpy arrays.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from edge_mm.errors import CameraError, SourceError, UsageError

_rs: Any = None


def import_pyrealsense2() -> Any:
    """Import pyrealsense2 once; turn the usual install problems into a one-line CameraError."""
    global _rs
    if _rs is None:
        try:
            _load_libusb()
            import pyrealsense2 as rs
        except (ImportError, OSError) as exc:
            raise camera_import_error(exc) from exc
        _rs = rs
    return _rs


def _load_libusb() -> None:
    """Make libusb-1.0 loadable for pyrealsense2 without a system package.

    pyrealsense2's library links against libusb-1.0.so.0 even for file playback. Where the system has
    none, the `libusb-package` wheel ships one; loading it RTLD_GLOBAL first lets the dynamic linker
    resolve pyrealsense2's dependency against it.
    """
    if ctypes.util.find_library("usb-1.0"):
        return
    try:
        import libusb_package
    except ImportError:
        return  # the import below fails with the libusb message and its fix
    path = libusb_package.get_library_path()
    if path is not None:
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def camera_import_error(exc: BaseException) -> CameraError:
    """The CameraError for a failed `import pyrealsense2` (separate so its wording is testable)."""
    text = str(exc)
    if "libusb" in text:
        return CameraError(
            f"pyrealsense2 cannot load libusb ({text}); install it with `pip install libusb-package` "
            "(or `sudo apt-get install libusb-1.0-0`)"
        )
    if isinstance(exc, ModuleNotFoundError) and getattr(exc, "name", None) in ("pyrealsense2", None):
        return CameraError(
            "pyrealsense2 is not installed; `pip install pyrealsense2` (x86_64, or aarch64 wheels for Jetson) "
            "or build librealsense with -DBUILD_PYTHON_BINDINGS=ON"
        )
    return CameraError(f"pyrealsense2 failed to import ({type(exc).__name__}: {text}); reinstall pyrealsense2")


# --- post-processing ------------------------------------------------------------------------

#: The order doc/post-processing-filters.md recommends; the user picks which, never the order.
#: "disparity" is not a user choice: spatial/temporal run in the disparity domain (D4xx stereo).
FILTER_ORDER: Tuple[str, ...] = ("decimation", "threshold", "spatial", "temporal", "hole_filling")
LIVE_DEFAULT_FILTERS: Tuple[str, ...] = ("spatial", "temporal", "hole_filling")


def check_filter_names(names: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    """Validate filter names (raises UsageError) and return them in the documented order.

    Accepts a sequence of names or one comma-separated string ("spatial,temporal"); "" or () = none.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = tuple(names)
    unknown = [n for n in names if n not in FILTER_ORDER]
    if unknown:
        raise UsageError(f"unknown RealSense filter(s) {unknown}; choose from {list(FILTER_ORDER)}")
    return tuple(n for n in FILTER_ORDER if n in names)


def build_filter_chain(
    rs: Any, names: Sequence[str], options: Optional[Mapping[str, Mapping[str, float]]] = None
) -> List[Any]:
    """Fresh processing blocks (the temporal filter keeps history: one chain per stream, rebuilt on restart).

    options: {"spatial": {"filter_smooth_alpha": 0.5}, "threshold": {"max_distance": 3.0}, ...},
    keys are rs.option names.
    """
    names = check_filter_names(names)
    options = dict(options or {})
    stray = [k for k in options if k not in names]
    if stray:
        raise UsageError(f"options given for filter(s) {stray} that are not enabled; enabled: {list(names)}")
    makers = {
        "decimation": rs.decimation_filter,
        "threshold": rs.threshold_filter,
        "spatial": rs.spatial_filter,
        "temporal": rs.temporal_filter,
        "hole_filling": rs.hole_filling_filter,
    }
    chain: List[Any] = []
    in_disparity = False
    for name in names:
        wants_disparity = name in ("spatial", "temporal")
        if wants_disparity and not in_disparity:
            chain.append(rs.disparity_transform(True))
            in_disparity = True
        if not wants_disparity and in_disparity:
            chain.append(rs.disparity_transform(False))
            in_disparity = False
        block = makers[name]()
        for key, value in dict(options.get(name, {})).items():
            option = getattr(rs.option, key, None)
            if option is None or option not in block.get_supported_options():
                raise UsageError(f"the {name} filter has no option {key!r}; see rs.option for names")
            block.set_option(option, float(value))
        chain.append(block)
    if in_disparity:
        chain.append(rs.disparity_transform(False))
    return chain


# --- frameset -> numpy ------------------------------------------------------------------------


def intrinsics_dict(profile: Any) -> Dict[str, Any]:
    intr = profile.as_video_stream_profile().get_intrinsics()
    return {
        "width": intr.width,
        "height": intr.height,
        "fx": intr.fx,
        "fy": intr.fy,
        "ppx": intr.ppx,
        "ppy": intr.ppy,
        "model": str(intr.model),
        "coeffs": list(intr.coeffs),
    }


def color_to_bgr(rs: Any, frame: Any) -> np.ndarray:
    """Copy a colour frame out of the SDK as C-contiguous BGR uint8, whatever format it was recorded in."""
    fmt = frame.get_profile().format()
    data = np.asanyarray(frame.get_data())
    if fmt == rs.format.bgr8:
        return np.array(data, dtype=np.uint8, copy=True, order="C")
    if fmt == rs.format.rgb8:
        return np.ascontiguousarray(data[..., ::-1])
    if fmt == rs.format.bgra8:
        return np.ascontiguousarray(data[..., :3])
    if fmt == rs.format.rgba8:
        return np.ascontiguousarray(data[..., 2::-1])
    if fmt == rs.format.yuyv:
        h, w = frame.get_height(), frame.get_width()
        return cv2.cvtColor(np.asarray(data, dtype=np.uint8).reshape(h, w, 2), cv2.COLOR_YUV2BGR_YUYV)
    if fmt == rs.format.uyvy:
        h, w = frame.get_height(), frame.get_width()
        return cv2.cvtColor(np.asarray(data, dtype=np.uint8).reshape(h, w, 2), cv2.COLOR_YUV2BGR_UYVY)
    raise SourceError(f"colour stream format {fmt} is not supported; record colour as bgr8, rgb8, yuyv or uyvy")


class FramesetConverter:
    """Filters, aligns depth to colour and copies one frameset out of the SDK.

    The pipeline repeats a frame when only the other stream moved on, so a frameset is turned into
    a Frame only when its colour frame is new: every colour frame once, paired with the newest depth.
    """

    def __init__(self, rs: Any, filters: Sequence[str] = (), filter_options=None) -> None:
        self._rs = rs
        self._filter_names = check_filter_names(filters)
        self._filter_options = filter_options
        self.reset()

    def reset(self) -> None:
        """Forget history: new filter instances (temporal), new align, no last frame number."""
        rs = self._rs
        self._chain = build_filter_chain(rs, self._filter_names, self._filter_options)
        self._align = rs.align(rs.stream.color)
        self._last_color_number: Optional[int] = None

    def convert(
        self, frameset: Any, depth_scale: float, capture_time: Optional[float] = None
    ) -> Optional[Tuple[np.ndarray, np.ndarray, float, Dict[str, Any]]]:
        """(bgr, depth_m, timestamp_ms, meta) for a frameset with a new colour frame, else None."""
        rs = self._rs
        color = frameset.get_color_frame()
        depth = frameset.get_depth_frame()
        if not color or not depth:
            return None
        number = color.get_frame_number()
        if number == self._last_color_number:
            return None
        self._last_color_number = number
        capture_time = time.perf_counter() if capture_time is None else capture_time

        processed = frameset
        for block in self._chain:
            processed = block.process(processed)
        aligned = self._align.process(processed.as_frameset())
        depth_aligned = aligned.get_depth_frame()
        color_aligned = aligned.get_color_frame()
        if not depth_aligned or not color_aligned:
            raise SourceError("aligning depth to colour produced an empty frame; the recording's streams are corrupt")

        bgr = color_to_bgr(rs, color_aligned)
        z16 = np.asanyarray(depth_aligned.get_data())
        depth_m = z16.astype(np.float32) * np.float32(depth_scale)  # astype copies: nothing stays in the SDK
        if depth_m.shape != bgr.shape[:2]:
            raise SourceError(f"aligned depth {depth_m.shape} does not match colour {bgr.shape[:2]}")
        meta = {
            "depth_scale": float(depth_scale),
            "color_frame_number": int(number),
            "depth_frame_number": int(depth.get_frame_number()),
            "depth_timestamp_ms": float(depth.get_timestamp()),
            "timestamp_domain": str(color.get_frame_timestamp_domain()).split(".")[-1],
            "color_format": str(color.get_profile().format()).split(".")[-1],
            "intrinsics": intrinsics_dict(color_aligned.get_profile()),
        }
        return bgr, depth_m, float(color.get_timestamp()), meta


def describe_streams(profiles: Iterable[Any]) -> str:
    """'depth 640x480 z16 @6, color 640x480 rgb8 @6' for error messages."""
    parts = []
    for p in profiles:
        kind = str(p.stream_type()).split(".")[-1]
        fmt = str(p.format()).split(".")[-1]
        if p.is_video_stream_profile():
            v = p.as_video_stream_profile()
            parts.append(f"{kind} {v.width()}x{v.height()} {fmt} @{p.fps()}")
        else:
            parts.append(f"{kind} {fmt} @{p.fps()}")
    return ", ".join(parts) or "no streams"
