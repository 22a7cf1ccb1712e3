"""Where annotated frames go: an OpenCV window, a video file, ROS 2 messages (MCAP / rosbag2), a
JSON-lines log (the web page is runtime.web.live).

Every sink has `write(result)` (a runtime.stages.base.FrameResult with the annotated image),
optionally `write_event(event)`, and `close()`, and is written to from one thread, in frame order
(see base.py). `--out` picks its sink by the path's suffix here, in one place: `check_out_path`
before anything opens, `open_out_sink` to open it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from .base import Sink

__all__ = ["Sink", "check_out_path", "open_out_sink"]


def check_out_path(path: Union[str, Path]) -> Path:
    """UsageError unless `path` is an output --out can write (.mp4/.avi video, .mcap, .rosbag2)."""
    from .mcap import check_ros_output, is_ros_output
    from .video import check_video_path

    return check_ros_output(path) if is_ros_output(path) else check_video_path(path)


def open_out_sink(path: Union[str, Path], fps: float = 30.0) -> Sink:
    """The --out sink for `path`: RosResultsSink for .mcap / .rosbag2, else VideoSink."""
    from .mcap import RosResultsSink, is_ros_output
    from .video import VideoSink

    return RosResultsSink(path) if is_ros_output(path) else VideoSink(path, fps=fps)
