"""Engine-build progress as tqdm bars: a trt.IProgressMonitor of whichever TensorRT module builds."""

from __future__ import annotations

import threading
from typing import Any, Dict


def make_progress_monitor(trt: Any, enabled: bool = True) -> Any:
    """A trt.IProgressMonitor drawing tqdm bars for the top two phase levels (deeper phases as text)."""
    from tqdm import tqdm

    class TqdmProgressMonitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()  # TensorRT may report from several threads
            self._bars: Dict[str, Any] = {}
            self._depth: Dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: Any, num_steps: int) -> None:
            with self._lock:
                depth = 0 if parent_phase is None else self._depth.get(parent_phase, 0) + 1
                self._depth[phase_name] = depth
                if depth <= 1:
                    self._bars[phase_name] = tqdm(
                        total=num_steps,
                        desc=phase_name,
                        position=depth,
                        leave=depth == 0,
                        disable=not enabled,
                        unit="step",
                    )
                elif parent_phase in self._bars:
                    self._bars[parent_phase].set_postfix_str(phase_name, refresh=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                self._depth.pop(phase_name, None)
                if bar is not None:
                    if bar.total:  # TensorRT does not always report the last step
                        bar.update(bar.total - bar.n)
                    bar.close()

    return TqdmProgressMonitor()
