"""The interface every sink implements.

    write(result)       one frame's result (runtime.stages.base.FrameResult: .frame, .image the
                        annotated frame, .values by stage, .fields the frame's event), in frame order
    write_event(event)  optional: a stage's asynchronous event (a JSON-able dict, e.g. CLIP's
                        `clip_query`); sinks without it do not receive events
    close()             must leave a complete, valid output
    records_latency     True: written after the other sinks, once the frame's latency is known

The pipeline writes to every sink from one thread (its output thread). Sinks can be added and
removed while it runs through `Pipeline.add_sink` / `remove_sink` (applied between frames).
"""

from __future__ import annotations

from typing import Any


class Sink:
    """Consumes annotated results in frame order; `close()` must leave a complete, valid output."""

    name = "sink"
    records_latency = False

    def write(self, result: Any) -> None:  # result: runtime.stages.base.FrameResult
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        """Where the output goes, for the start and end messages."""
        return self.name

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
