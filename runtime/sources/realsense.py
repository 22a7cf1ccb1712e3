"""`realsense[:SERIAL]`: a live RealSense D4xx camera, colour + depth aligned to colour.

The depth scale is read from the device's depth sensor (it varies by model and setting), the
post-processing filters run in the documented order, frames are copied out of the SDK before they
leave this module, and an unplugged camera is reopened with exponential backoff.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional, Sequence

from edge_mm.errors import CameraError, UsageError

from .base import Frame, Source
from .rs_frames import LIVE_DEFAULT_FILTERS, FramesetConverter, check_filter_names, import_pyrealsense2

log = logging.getLogger(__name__)

NO_CAMERA = "no RealSense camera found; plug one in (USB 3) or use --camera synthetic / recording:FILE"
UDEV_HINT = (
    "install the RealSense udev rules (sudo cp 99-realsense-libusb.rules /etc/udev/rules.d/ && "
    "sudo udevadm control --reload-rules && sudo udevadm trigger, from librealsense's config/) and replug; "
    "in Docker pass --device/--privileged with the rules on the host"
)


def check_record_path(record: Optional[str]) -> Optional[Path]:
    """librealsense 2.58+ records ROS2 .db3 only, and says so only after the camera is open: check first."""
    if record is None:
        return None
    path = Path(record)
    if path.suffix.lower() != ".db3":
        raise UsageError(
            f"--record {record}: RealSense recordings are written as .db3 (librealsense 2.58+); name it {path.with_suffix('.db3').name}"
        )
    if path.is_dir():
        raise UsageError(f"--record {record} is a folder; give a file name ending in .db3")
    return path


def backoff_delays(attempts: int, first_s: float, cap_s: float) -> Iterator[float]:
    """first_s, 2*first_s, 4*first_s, ... capped at cap_s; `attempts` values."""
    for attempt in range(attempts):
        yield min(first_s * (2**attempt), cap_s)


def visible_realsense_usb_devices(sysfs: str = "/sys/bus/usb/devices") -> List[str]:
    """Product names of RealSense devices the kernel sees on USB (even when librealsense cannot open them)."""
    found = []
    root = Path(sysfs)
    if not root.is_dir():
        return found
    for dev in root.iterdir():
        try:
            if (dev / "idVendor").read_text().strip().lower() != "8086":
                continue
            product = (dev / "product").read_text().strip() if (dev / "product").exists() else ""
        except OSError:
            continue
        if "realsense" in product.lower():
            found.append(product)
    return found


def _is_permission_problem(text: str) -> bool:
    text = text.lower()
    return any(
        k in text for k in ("permission denied", "errno 13", "udev", "access denied", "insufficient permissions")
    )


class RealSenseSource(Source):
    """Live colour + depth from a RealSense D4xx camera.

    serial:         pick one camera by serial number (default: the first one found).
    width/height/fps: the mode for both streams (default 640x480@30; 848x480 suits D435/D455 depth best).
    filters:        post-processing filters by name (applied in the documented order, spatial and
                    temporal in the disparity domain); () turns them off. "decimation" changes the size.
    record:         also write the raw streams to this .db3 file (the SDK's recorder).
    reconnect_attempts / reconnect_delay_s / reconnect_max_delay_s: exponential backoff when the camera
                    stops delivering (unplugged); the frame index continues after a reconnect.
    frame_timeout_ms: how long to wait for a frameset before treating the camera as lost.
    """

    live = True

    def __init__(
        self,
        serial: Optional[str] = None,
        *,
        width: int = 640,
        height: int = 480,
        fps: int = 30,
        filters: Sequence[str] = LIVE_DEFAULT_FILTERS,
        filter_options: Optional[Mapping[str, Mapping[str, float]]] = None,
        record: Optional[str] = None,
        reconnect_attempts: int = 5,
        reconnect_delay_s: float = 0.5,
        reconnect_max_delay_s: float = 8.0,
        frame_timeout_ms: int = 5000,
    ) -> None:
        super().__init__()
        self.requested_serial = serial or None
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self._filters = check_filter_names(filters)
        self._filter_options = filter_options
        self.record_path = check_record_path(record)
        if reconnect_attempts < 0 or reconnect_delay_s < 0:
            raise UsageError("reconnect_attempts and reconnect_delay_s must not be negative")
        self.reconnect_attempts = int(reconnect_attempts)
        self.reconnect_delay_s = float(reconnect_delay_s)
        self.reconnect_max_delay_s = float(reconnect_max_delay_s)
        self.frame_timeout_ms = int(frame_timeout_ms)
        self.serial = ""
        self.depth_scale = 0.0
        self.reconnects = 0
        self.frame_number_gaps = 0  # colour frames the camera or SDK skipped (not our dropping)
        self.recorded_files: List[Path] = []
        self._pipe: Any = None
        self._converter: Optional[FramesetConverter] = None
        self._recording_part: Optional[Path] = None
        self._recording_final: Optional[Path] = None
        self._last_number: Optional[int] = None

    @property
    def name(self) -> str:
        return f"realsense:{self.serial or self.requested_serial or 'first'}"

    # --- open / close -------------------------------------------------------------------------

    def _open(self) -> None:
        rs = import_pyrealsense2()
        self._interrupted.clear()
        self.serial = self._find_serial(rs)
        self._converter = FramesetConverter(rs, self._filters, self._filter_options)
        self._start(rs)

    def _find_serial(self, rs: Any) -> str:
        try:
            devices = list(rs.context().query_devices())
        except RuntimeError as exc:
            if _is_permission_problem(str(exc)):
                raise CameraError(f"cannot access the RealSense camera ({exc}); {UDEV_HINT}") from exc
            raise CameraError(f"cannot list RealSense cameras ({exc}); replug the camera") from exc
        serials = [
            d.get_info(rs.camera_info.serial_number) for d in devices if d.supports(rs.camera_info.serial_number)
        ]
        if not serials:
            seen = visible_realsense_usb_devices()
            if seen:
                raise CameraError(f"the kernel sees {seen[0]!r} but librealsense cannot open it; {UDEV_HINT}")
            raise CameraError(NO_CAMERA)
        if self.requested_serial is None:
            return serials[0]
        if self.requested_serial not in serials:
            raise CameraError(
                f"no RealSense camera with serial {self.requested_serial}; connected: {', '.join(serials)}"
            )
        return self.requested_serial

    def _start(self, rs: Any) -> None:
        config = rs.config()
        config.enable_device(self.serial)
        config.enable_stream(rs.stream.depth, self.width, self.height, rs.format.z16, self.fps)
        config.enable_stream(rs.stream.color, self.width, self.height, rs.format.bgr8, self.fps)
        if self.record_path is not None:
            self._begin_recording_part(config)
        pipe = rs.pipeline()
        try:
            profile = pipe.start(config)
        except RuntimeError as exc:
            self._discard_recording_part()
            text = str(exc)
            if _is_permission_problem(text):
                raise CameraError(f"cannot open RealSense {self.serial} ({text}); {UDEV_HINT}") from exc
            if "resolve" in text.lower():
                raise CameraError(
                    f"RealSense {self.serial} cannot stream colour + depth at {self.width}x{self.height}@{self.fps} "
                    f"({text}); try 640x480@30 or 848x480@30, and a USB 3 port"
                ) from exc
            raise CameraError(f"cannot start RealSense {self.serial} ({text}); replug it (USB 3)") from exc
        self._pipe = pipe
        device = profile.get_device()
        self.depth_scale = float(device.first_depth_sensor().get_depth_scale())
        if device.supports(rs.camera_info.usb_type_descriptor):
            usb = device.get_info(rs.camera_info.usb_type_descriptor)
            if usb.startswith("2"):
                log.warning(
                    "RealSense %s is on USB %s; use a USB 3 port and cable for full frame rates", self.serial, usb
                )
        del profile, device  # the recorder (if any) is finalised only when every device reference is gone
        self._last_number = None

    def _stop(self) -> None:
        if self._pipe is not None:
            try:
                self._pipe.stop()
            except RuntimeError:
                pass  # already stopped, or the camera is gone
            self._pipe = None
        self._finish_recording_part()

    def _close(self) -> None:
        self._stop()

    # --- recording (.db3 parts written beside the target, renamed when complete) ------------

    def _begin_recording_part(self, config: Any) -> None:
        final = self.record_path
        if self.recorded_files:
            # After a reconnect the pipeline starts a new file: FILE-2.db3, FILE-3.db3, ...
            final = final.with_name(f"{final.stem}-{len(self.recorded_files) + 1}{final.suffix}")
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(f".{final.stem}.partial.db3")
        if part.exists():
            part.unlink()
        config.enable_record_to_file(str(part))
        self._recording_part, self._recording_final = part, final

    def _finish_recording_part(self) -> None:
        part, final = self._recording_part, self._recording_final
        self._recording_part = None
        if part is None:
            return
        gc.collect()  # drop the recorder device so it flushes and closes the file
        if part.exists():
            os.replace(part, final)
            self.recorded_files.append(final)
            log.info("RealSense recording written to %s", final)
        else:
            log.warning("RealSense recording %s was not written", final)

    def _discard_recording_part(self) -> None:
        if self._recording_part is not None and self._recording_part.exists():
            self._recording_part.unlink()
        self._recording_part = None

    # --- reading ------------------------------------------------------------------------------

    def _read(self) -> Optional[Frame]:
        rs = import_pyrealsense2()
        while not self._interrupted.is_set():
            try:
                frameset = self._pipe.wait_for_frames(self.frame_timeout_ms)
            except RuntimeError as exc:  # "Frame didn't arrive within ..." when unplugged
                if not self._reconnect(rs, exc):
                    return None
                continue
            capture_time = time.perf_counter()
            converted = self._converter.convert(frameset, self.depth_scale, capture_time)
            del frameset
            if converted is None:
                continue
            bgr, depth_m, timestamp_ms, meta = converted
            number = meta["color_frame_number"]
            if self._last_number is not None and number > self._last_number + 1:
                self.frame_number_gaps += number - self._last_number - 1
            self._last_number = number
            meta.update(
                source="realsense",
                serial=self.serial,
                reconnects=self.reconnects,
                frame_number_gaps=self.frame_number_gaps,
            )
            return Frame(bgr, depth_m, timestamp_ms, capture_time, meta=meta)
        return None

    def _reconnect(self, rs: Any, error: Exception) -> bool:
        """Reopen the camera with exponential backoff; False if interrupted, CameraError if it never returns."""
        self._stop()
        last: Exception = error
        for attempt, delay in enumerate(
            backoff_delays(self.reconnect_attempts, self.reconnect_delay_s, self.reconnect_max_delay_s), start=1
        ):
            log.warning(
                "RealSense %s stopped delivering frames (%s); reconnect attempt %d/%d in %.1f s",
                self.serial,
                last,
                attempt,
                self.reconnect_attempts,
                delay,
            )
            if self._interrupted.wait(delay):
                return False
            try:
                self.requested_serial = self.serial
                self._find_serial(rs)
                self._start(rs)
            except CameraError as exc:
                last = exc
                continue
            self._converter.reset()  # temporal filter history belongs to the old stream
            self.reconnects += 1
            log.warning("RealSense %s reconnected after %d attempt(s)", self.serial, attempt)
            return True
        raise CameraError(
            f"RealSense {self.serial} was lost ({error}) and {self.reconnect_attempts} reconnect attempts failed; "
            "check the USB 3 cable and port, then restart"
        )
