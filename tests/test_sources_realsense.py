"""realsense[:SERIAL]: what can be checked without a camera here, and the live checks with one."""

import numpy as np
import pytest
from support import pyrealsense2_or_skip

from edge_mm.errors import CameraError, UsageError
from runtime.sources import open_source
from runtime.sources.realsense import (
    NO_CAMERA,
    RealSenseSource,
    backoff_delays,
    check_record_path,
    visible_realsense_usb_devices,
)
from runtime.sources.rs_frames import build_filter_chain, camera_import_error, check_filter_names


def _connected_serials():
    rs = pyrealsense2_or_skip()
    return [d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices()]


@pytest.fixture(scope="module")
def camera_serial():
    serials = _connected_serials()
    if not serials:
        pytest.skip("no RealSense camera connected (rs.context().query_devices() is empty)")
    return serials[0]


# --- without a camera (real SDK calls, nothing faked) -----------------------------------------


def test_opening_realsense_without_a_camera_says_how_to_fix_it():
    if _connected_serials():
        pytest.skip("a RealSense camera is connected; this checks the no-camera message")
    if visible_realsense_usb_devices():
        pytest.skip("the kernel sees a RealSense device that librealsense cannot open (udev case)")
    with pytest.raises(CameraError) as info:
        open_source("realsense")
    assert str(info.value) == NO_CAMERA
    assert "--camera synthetic / recording:FILE" in str(info.value)
    with pytest.raises(CameraError):
        open_source("realsense:123456789012")


def test_record_path_must_be_db3_before_any_camera_is_touched(tmp_path):
    # UsageError even though no camera is attached: the check comes first.
    with pytest.raises(UsageError, match=r"\.db3 \(librealsense 2\.58\+\); name it run\.db3"):
        open_source("realsense", record=str(tmp_path / "run.bag"))
    folder = tmp_path / "dir.db3"
    folder.mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        check_record_path(str(folder))
    assert check_record_path(str(tmp_path / "ok.db3")) == tmp_path / "ok.db3"
    assert check_record_path(None) is None


def test_unknown_options_and_filters_are_usage_errors():
    with pytest.raises(UsageError, match="no option"):
        open_source("realsense", exposure=100)
    with pytest.raises(UsageError, match="unknown RealSense filter"):
        RealSenseSource(filters=["median"])
    with pytest.raises(UsageError, match="already given"):
        open_source("realsense:123", serial="456")


def test_filters_are_put_in_the_documented_order():
    assert check_filter_names(["hole_filling", "temporal", "decimation", "spatial"]) == (
        "decimation",
        "spatial",
        "temporal",
        "hole_filling",
    )


def test_filter_chain_wraps_spatial_and_temporal_in_disparity():
    rs = pyrealsense2_or_skip()
    chain = build_filter_chain(
        rs, ["hole_filling", "spatial", "temporal", "decimation"], {"spatial": {"filter_magnitude": 3}}
    )
    kinds = [type(block).__name__ for block in chain]
    assert kinds == [
        "decimation_filter",
        "disparity_transform",
        "spatial_filter",
        "temporal_filter",
        "disparity_transform",
        "hole_filling_filter",
    ]
    assert chain[2].get_option(rs.option.filter_magnitude) == 3
    with pytest.raises(UsageError, match="not enabled"):
        build_filter_chain(rs, ["spatial"], {"temporal": {"filter_smooth_alpha": 0.2}})
    with pytest.raises(UsageError, match="has no option"):
        build_filter_chain(rs, ["spatial"], {"spatial": {"no_such_option": 1}})


def test_reconnect_backoff_doubles_and_is_capped():
    assert list(backoff_delays(6, 0.5, 4.0)) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert list(backoff_delays(0, 0.5, 4.0)) == []


def test_import_errors_become_one_line_camera_errors():
    # The exact message pyrealsense2 raises when libusb is missing (research sheet, appendix).
    err = camera_import_error(ImportError("libusb-1.0.so.0: cannot open shared object file: No such file or directory"))
    assert isinstance(err, CameraError) and "pip install libusb-package" in str(err) and "\n" not in str(err)
    missing = camera_import_error(ModuleNotFoundError("No module named 'pyrealsense2'", name="pyrealsense2"))
    assert "pip install pyrealsense2" in str(missing)


def test_udev_case_is_detected_from_sysfs(tmp_path):
    """A RealSense the kernel lists but librealsense cannot open points at the udev rules."""
    dev = tmp_path / "2-1"
    dev.mkdir()
    (dev / "idVendor").write_text("8086\n")
    (dev / "product").write_text("Intel(R) RealSense(TM) Depth Camera 435\n")
    other = tmp_path / "1-1"
    other.mkdir()
    (other / "idVendor").write_text("046d\n")
    assert visible_realsense_usb_devices(str(tmp_path)) == ["Intel(R) RealSense(TM) Depth Camera 435"]
    assert visible_realsense_usb_devices(str(tmp_path / "absent")) == []


# --- with a camera ------------------------------------------------------------------------------


@pytest.mark.camera
def test_live_camera_frames(camera_serial):
    with open_source(f"realsense:{camera_serial}") as source:
        frames = [source.read() for _ in range(30)]  # ~1 s; auto-exposure settles meanwhile
    assert [f.index for f in frames] == list(range(30))
    last = frames[-1]
    assert last.color.shape == (480, 640, 3) and last.color.dtype == np.uint8
    assert last.depth_m.shape == (480, 640) and last.depth_m.dtype == np.float32
    assert 0 < last.meta["depth_scale"] < 0.01
    assert last.meta["serial"] == camera_serial
    assert (last.depth_m > 0).mean() > 0.3
    numbers = [f.meta["color_frame_number"] for f in frames]
    assert numbers == sorted(numbers) and len(set(numbers)) == 30


@pytest.mark.camera
def test_live_camera_records_a_db3_that_plays_back(camera_serial, tmp_path):
    target = tmp_path / "live.db3"
    with open_source(f"realsense:{camera_serial}", record=str(target), filters=()) as source:
        live = [source.read() for _ in range(30)]
    assert target.exists() and not list(tmp_path.glob(".*partial*"))
    with open_source(f"recording:{target}") as playback:
        played = list(playback)
    assert len(played) >= 25  # the recorder may miss the first frames while it attaches
    assert played[0].meta["depth_scale"] == pytest.approx(live[0].meta["depth_scale"])
