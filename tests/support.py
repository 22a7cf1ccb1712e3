"""Helpers the tests import (conftest.py holds only fixtures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
#: One frameset from a RealSense D435, 640x480 colour and depth (librealsense's unit-test recording,
#: Apache-2.0; credit in the README).
D435_BAG = DATA / "realsense_d435_single_frame_640x480.bag"


def run_fresh_python(code: str) -> str:
    """Run `code` in a fresh interpreter (for import-isolation tests); return its stdout."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout


def pyrealsense2_or_skip() -> Any:
    """pyrealsense2 through the runtime's importer (which loads libusb-package's libusb), else skip."""
    from edge_mm.errors import CameraError
    from runtime.sources.rs_frames import import_pyrealsense2

    try:
        return import_pyrealsense2()
    except CameraError as exc:
        pytest.skip(f"pyrealsense2 does not import here: {exc}")
