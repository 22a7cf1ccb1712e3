"""The OpenCV window and its keys, and the test for whether a window can exist at all.

Keys: q / Esc quit, space pause, s snapshot, o overlay on/off, r start/stop recording.

A window needs an OpenCV build with a GUI backend (the pip `opencv-python-headless` wheel has none:
its imshow raises "The function is not implemented") and, on Linux, a display (X11 or Wayland).
`gui_support()` checks both without touching the GUI, so headless machines never try.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Any, Optional, Tuple

import cv2

from .base import Sink

WINDOW_TITLE = "edge-mm-run (q quit, space pause, s snapshot, o overlay, r record)"


def opencv_gui_backend(build_information: Optional[str] = None) -> str:
    """The GUI backend named in cv2.getBuildInformation() ('GTK3', 'QT5', 'WIN32UI', 'COCOA', ...) or 'NONE'."""
    info = cv2.getBuildInformation() if build_information is None else build_information
    match = re.search(r"^\s*GUI:[ \t]*(\S*)", info, re.MULTILINE)
    if match is None:
        return "UNKNOWN"
    if match.group(1):
        return match.group(1).upper()
    # Older builds list the backends on the following lines ("GTK+ 3.x: YES").
    tail = info[match.end() :].splitlines()[1:6]
    yes = [line.split(":")[0].strip() for line in tail if "YES" in line.upper()]
    return yes[0].upper() if yes else "NONE"


def gui_support(
    environ: Optional[dict] = None, build_information: Optional[str] = None, platform: Optional[str] = None
) -> Tuple[bool, str]:
    """(True, '') if a window can be opened here, else (False, why)."""
    env = os.environ if environ is None else environ
    backend = opencv_gui_backend(build_information)
    if backend == "NONE":
        return False, "this OpenCV build has no GUI (opencv-python-headless); install opencv-python for a window"
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return False, "there is no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    return True, ""


@dataclasses.dataclass
class Controls:
    """What the keys change; read by the pipeline. Pure state, testable without a GUI."""

    quit: bool = False
    paused: bool = False
    show_heatmap: bool = True
    snapshot_requested: bool = False
    record_toggle_requested: bool = False

    def handle_key(self, key: int) -> Optional[str]:
        """Apply one key code from cv2.waitKey (-1 = none); returns the action's name or None."""
        if key is None or key < 0:
            return None
        char = key & 0xFF
        if char in (ord("q"), ord("Q"), 27):  # 27 = Esc
            self.quit = True
            return "quit"
        if char == ord(" "):
            self.paused = not self.paused
            return "pause" if self.paused else "resume"
        if char in (ord("s"), ord("S")):
            self.snapshot_requested = True
            return "snapshot"
        if char in (ord("o"), ord("O")):
            self.show_heatmap = not self.show_heatmap
            return "overlay on" if self.show_heatmap else "overlay off"
        if char in (ord("r"), ord("R")):
            self.record_toggle_requested = True
            return "record"
        return None


class WindowSink(Sink):
    """Shows each annotated frame and feeds the keys to `controls`."""

    name = "window"

    def __init__(self, controls: Controls, title: str = WINDOW_TITLE) -> None:
        self.controls = controls
        self.title = title
        self._open = False
        self._last_image: Any = None

    def open(self) -> None:
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)  # raises cv2.error where there is no GUI after all
        self._open = True

    def write(self, result: Any) -> None:
        self.show(result.image)

    def show(self, image: Any) -> None:
        if not self._open:
            self.open()
        self._last_image = image
        cv2.imshow(self.title, image)
        self.poll(1)

    def poll(self, wait_ms: int = 30) -> Optional[str]:
        """Process window events for wait_ms and apply a key, if any; also notices a closed window."""
        if not self._open:
            return None
        action = self.controls.handle_key(cv2.waitKey(wait_ms))
        try:
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:  # closed with the mouse
                self.controls.quit = True
                return "quit"
        except cv2.error:
            pass
        return action

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass

    def describe(self) -> str:
        return "window"
