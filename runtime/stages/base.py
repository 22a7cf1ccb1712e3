"""The interface every pipeline stage implements, and the per-frame result the stages fill in.

A stage is built from an artifact (or from nothing, for a measurement), declares which result keys
it reads and which it adds, and draws its own part of the overlay. The pipeline calls the hooks
below; a stage overrides only those it needs.

    hook              thread                                     order       what it is for
    prepare(frame)    preprocess workers (several)               any         model inputs from the frame
    infer(prepared)   the inference thread (one call at a time)  frame order the accelerator
    finish(r, out)    finish workers (several)                   any         result.values[key] = ...
    draw(image, r)    finish workers, after every finish()       any         its overlay part, in place
    text_lines(r)     finish workers                             any         lines for the shared text panel
    event_fields(r)   finish workers                             any         its part of the frame's event
    after_output(r)   the output thread                          frame order hand work to a slower thread
    drain_events()    the output thread                          -           asynchronous events (JSON-able)

`reads` may name `frame` (always there) or keys added by earlier stages; the pipeline checks this
when it is built, so a stage listed before the stage it needs is an error at assembly, not a
KeyError at frame 1. `finish` of the stages runs in list order on one frame, so a stage sees what
the stages before it added.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


@dataclasses.dataclass
class FrameResult:
    """One frame on its way through the pipeline, then as the sinks see it.

    values:   what the stages added, by key (e.g. "saliency", "clip"); also readable as attributes.
    fields:   the JSON-able part each stage contributes to the frame's event (events log, web UI).
    metrics:  per-frame numbers the run's statistics summarise (e.g. "iou_vs_ground_truth").
    image:    the annotated frame (BGR uint8), drawn by the stages.
    """

    frame: Any  # runtime.sources.Frame
    values: Dict[str, Any] = dataclasses.field(default_factory=dict)
    fields: Dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
    image: Optional[np.ndarray] = None
    done_time: float = 0.0  # perf_counter when the outputs were written
    wall_time: float = 0.0  # time.time() at the same moment

    def __getattr__(self, key: str) -> Any:
        # Only called for names that are not fields: result.saliency reads values["saliency"].
        values = self.__dict__.get("values")
        if values is not None and key in values:
            return values[key]
        raise AttributeError(f"this frame's result has no {key!r} (stages added {sorted(values or ())})")

    @property
    def latency_s(self) -> float:
        return max(0.0, self.done_time - self.frame.capture_time)


class Stage:
    """Base class: every hook does nothing, so a stage overrides only what it uses (see module docstring)."""

    name = "stage"
    reads: Tuple[str, ...] = ("frame",)
    adds: Tuple[str, ...] = ()

    def start(self) -> None:
        """Called once before the first frame (start threads here)."""

    def prepare(self, frame: Any) -> Any:
        return None

    def infer(self, prepared: Any) -> Any:
        return None

    def finish(self, result: FrameResult, inferred: Any) -> None:
        pass

    def draw(self, image: np.ndarray, result: FrameResult, overlay: bool) -> None:
        """Draw this stage's part on `image` in place; `overlay` False: the user turned the heavy part off (o)."""

    def text_lines(self, result: FrameResult) -> List[str]:
        return []

    def event_fields(self, result: FrameResult) -> Dict[str, Any]:
        """This stage's JSON-able part of the frame's event (merged in stage order)."""
        return {}

    def measure_alone(self) -> Optional[Dict[str, Any]]:
        """The stage's model timed on its own before the run ({"fps", "median_ms", "runs"}), or None."""
        return None

    def info(self) -> Dict[str, Any]:
        """What the stage runs (model, backend), for the run summary and the status page."""
        return {}

    def after_output(self, result: FrameResult) -> None:
        pass

    def drain_events(self) -> List[Dict[str, Any]]:
        return []

    def snapshot_images(self, result: FrameResult) -> Dict[str, np.ndarray]:
        """Extra images for a snapshot (s key), by kind: e.g. {"saliency": map}."""
        return {}

    def summary(self) -> Optional[Dict[str, Any]]:
        """This stage's figures for the run summary (under its name), or None."""
        return None

    def describe(self) -> str:
        return self.name

    def raise_if_failed(self) -> None:
        """Re-raise, on the caller's thread, an error that stopped a thread of this stage."""

    def close(self) -> None:
        """Stop threads and release what the stage opened (its backend); called once, also after errors."""


def check_order(stages: "list[Stage]") -> None:
    """Every key a stage reads is added by a stage before it (or is the frame)."""
    from edge_mm.errors import UsageError

    available = {"frame"}
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise UsageError(f"stages {names} repeat a name; each stage runs once")
    for stage in stages:
        missing = [key for key in stage.reads if key not in available]
        if missing:
            raise UsageError(
                f"stage {stage.name} reads {missing}, which no stage before it adds "
                f"(available: {sorted(available)}); put the stage that adds them first"
            )
        available.update(stage.adds)
