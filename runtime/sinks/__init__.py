"""Where annotated frames go: an OpenCV window, a video file, an MJPEG stream over HTTP, a JSON-lines log.

Every sink has `write(result)` (a pipeline.FrameResult with the annotated image) and `close()`,
and is written to from one thread, in frame order.
"""

from .base import Sink

__all__ = ["Sink"]
