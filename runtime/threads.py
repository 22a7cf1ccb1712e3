"""Thread scheduling for the pipeline: the model's threads first, the helpers in the gaps.

On a CPU backend the model's own threads use most of the cores, and the pipeline's helpers
(preprocessing, drawing, video encoding) need what is left. At equal priority the kernel shares the
cores evenly, so a helper that takes a core in the middle of one of the model's parallel sections
stalls the whole section: the model runs slower than alone. At the lowest normal priority (nice 19)
the helpers still get every cycle the model leaves idle (between its operators, while it waits for
its next input) but give way when the model's threads want the core back. It stays
self-regulating: while the model waits for a helper's output its cores are idle, and the helper runs.

Cores are split too: the inference thread is kept on one core and the helpers on the others. On
two cores that leaves the model's calling thread (busy for the whole of every inference) a core of
its own with its caches warm, and the helpers share the other core with the backend's worker
thread, which they give way to. Measured on 2 cores (cdinet-s int8, mp4 on, two runs of 10-12
alternating rounds, pipeline / model alone, medians): 0.925 and 0.947 unpinned, 0.960 and 0.978
pinned. The backend's own threads are not pinned.

Linux sets the nice value and the cores per thread (os.setpriority, os.sched_setaffinity on the
thread's id). Elsewhere both are left as they are: the pipeline works the same, only without this
preference. Raising the nice value needs no privilege; it cannot be lowered again, so only threads
the pipeline owns are lowered. `set_thread_tuning(False)` (edge-mm-run --even-threads) turns all of
it off, for a machine whose cores are shared with other busy work.

OpenCV's own thread pool is the other competitor: its worker threads run at the priority of the
thread that first used them and split even small operations across every core. The pipeline has
its own parallelism (one thread per step, `workers` per step), so during a run OpenCV runs each call
on the calling thread (`opencv_threads(1)`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Iterator, Optional, Set, Tuple

import cv2

log = logging.getLogger("edge_mm.runtime.threads")

# The lowest normal priority. Measured on 2 cores (cdinet-s int8 on ONNX Runtime, mp4 on, 12 rounds,
# pipeline / model alone, medians): nice 5 0.92, nice 10 0.98, nice 19 0.99, SCHED_IDLE 0.96; at nice
# 19 the camera-like 30 FPS p95 latency stayed under one frame period.
HELPER_NICE = 19


_tuning = True


def set_thread_tuning(enabled: bool) -> None:
    """Process-wide: True (default) lowers and separates the helpers; False leaves every thread as it is."""
    global _tuning
    _tuning = bool(enabled)


def thread_tuning() -> bool:
    return _tuning


def lower_thread_priority(nice: int = HELPER_NICE) -> bool:
    """Raise the calling thread's nice value to `nice` (if higher); True if the thread now runs at it."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        return True
    except OSError as exc:  # a sandbox without setpriority: the run goes on at normal priority
        log.debug("could not lower the priority of %s: %s", threading.current_thread().name, exc)
        return False


def core_split() -> Optional[Tuple[Set[int], Set[int]]]:
    """(the inference thread's core, the helpers' cores) from the cores this process may use, or None."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    return {allowed[0]}, set(allowed[1:])


def _keep_on(cpus: Set[int]) -> bool:
    try:
        os.sched_setaffinity(threading.get_native_id(), cpus)
        return True
    except OSError as exc:
        log.debug("could not set the cores of %s: %s", threading.current_thread().name, exc)
        return False


def become_inference_thread() -> None:
    """Called first in the thread that runs the model: keep it on its own core."""
    split = core_split() if _tuning else None
    if split is not None:
        _keep_on(split[0])


def become_helper_thread() -> None:
    """Called first in a helper thread (preprocess, finish, video encoder): lowest priority, other cores."""
    if not _tuning:
        return
    lower_thread_priority()
    split = core_split()
    if split is not None:
        _keep_on(split[1])


@contextlib.contextmanager
def opencv_threads(count: int) -> Iterator[None]:
    """OpenCV's thread count inside the block, the previous one after it (process-wide setting)."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)
