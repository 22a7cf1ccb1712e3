"""The interface every sink implements."""

from __future__ import annotations

from typing import Any


class Sink:
    """Consumes annotated results in frame order; `close()` must leave a complete, valid output."""

    name = "sink"

    def write(self, result: Any) -> None:  # result: runtime.pipeline.FrameResult
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
