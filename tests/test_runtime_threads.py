"""The pipeline's helper threads yield to the model's and keep off its core; OpenCV's pool is off during a run.

Per-thread nice values and cores are read back from the kernel (os.getpriority and
os.sched_getaffinity on the thread's id), so these tests check the scheduling the pipeline really
asked for, not a flag it set.
"""

from __future__ import annotations

import collections
import os
import sys
import threading

import cv2
import pytest

from runtime import stages
from runtime.cli import main
from runtime.pipeline import Pipeline
from runtime.sources import open_source
from runtime.stages.base import Stage
from runtime.threads import (
    HELPER_NICE,
    core_split,
    lower_thread_priority,
    opencv_threads,
    set_thread_tuning,
    thread_tuning,
)

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="nice values per thread are a Linux feature; elsewhere none is set"
)


def thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def thread_cores() -> frozenset:
    return frozenset(os.sched_getaffinity(0))  # 0: the calling thread


class PriorityProbe(Stage):
    """Records, per hook, the nice value of the thread that ran it and OpenCV's thread count."""

    name = "probe"

    def __init__(self) -> None:
        self.nice = collections.defaultdict(set)
        self.cores = collections.defaultdict(set)
        self.opencv_threads = set()

    def _seen(self, hook: str) -> None:
        self.nice[hook].add(thread_nice())
        self.cores[hook].add(thread_cores())

    def prepare(self, frame):
        self._seen("prepare")
        self.opencv_threads.add(cv2.getNumThreads())

    def infer(self, prepared):
        self._seen("infer")

    def finish(self, result, inferred):
        self._seen("finish")


def run_probe(tuning: bool = True) -> PriorityProbe:
    probe = PriorityProbe()
    source = open_source("synthetic:0", size=(48, 64), count=4)
    set_thread_tuning(tuning)
    try:
        outcome = Pipeline(source, [probe], max_frames=4).run()
    finally:
        set_thread_tuning(True)
    assert outcome.error is None and outcome.frames == 4
    return probe


@linux_only
def test_lowering_one_thread_leaves_the_others_as_they_were():
    base = thread_nice()
    seen = {}

    def helper():
        seen["applied"] = lower_thread_priority()
        seen["nice"] = thread_nice()
        seen["not_again"] = lower_thread_priority(1)  # never raised back towards the model's priority
        seen["still"] = thread_nice()

    thread = threading.Thread(target=helper)
    thread.start()
    thread.join()
    lowered = max(base, HELPER_NICE)
    assert seen == {"applied": True, "nice": lowered, "not_again": True, "still": lowered}
    assert thread_nice() == base  # the calling thread is untouched
    assert lower_thread_priority(0) is False and thread_nice() == base  # 0: leave the thread alone


@linux_only
def test_prepare_and_finish_run_below_the_inference_thread_and_off_its_core():
    base, everywhere = thread_nice(), thread_cores()
    probe = run_probe()
    assert probe.nice["infer"] == {base}  # the model's thread keeps the process's priority
    assert probe.nice["prepare"] == probe.nice["finish"] == {max(base, HELPER_NICE)}
    split = core_split()
    if split is None:  # one core: nothing to split
        assert probe.cores["infer"] == probe.cores["prepare"] == {everywhere}
    else:
        assert probe.cores["infer"] == {frozenset(split[0])} and len(split[0]) == 1
        assert probe.cores["prepare"] == probe.cores["finish"] == {frozenset(split[1])}
        assert split[0] | split[1] == everywhere and not split[0] & split[1]
    assert thread_cores() == everywhere and thread_nice() == base  # the caller's thread is untouched
    same = run_probe(tuning=False)  # edge-mm-run --even-threads: every step as the process is
    assert same.nice == {"prepare": {base}, "infer": {base}, "finish": {base}}
    assert same.cores == {"prepare": {everywhere}, "infer": {everywhere}, "finish": {everywhere}}


def test_opencv_runs_on_the_calling_thread_during_a_run_and_is_restored_after():
    before = cv2.getNumThreads()
    probe = run_probe()
    assert probe.opencv_threads == {1}
    assert cv2.getNumThreads() == before
    with opencv_threads(1):
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == before


class ProbeFactory:
    """Registers the probe as an edge-mm-run stage (--probe), to see the CLI's scheduling."""

    NAME = "probe"
    made: list = []

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument("--probe", action="store_true")

    @staticmethod
    def from_args(args, ctx):
        probe = PriorityProbe()
        ProbeFactory.made.append(probe)
        return probe


@linux_only
@pytest.mark.parametrize("even", [False, True])
def test_edge_mm_run_tunes_the_threads_unless_told_to_keep_them_even(oracle_artifact, capsys, even):
    base = thread_nice()
    stages.register(ProbeFactory)
    ProbeFactory.made.clear()
    try:
        argv = ["--model", str(oracle_artifact), "--camera", "synthetic:1", "--frames", "3", "--size", "80x60"]
        rc = main(
            argv
            + ["--headless", "--threads", "1", "--stats-interval", "0", "--probe"]
            + (["--even-threads"] if even else [])
        )
    finally:
        stages.unregister(ProbeFactory.NAME)
    assert rc == 0, capsys.readouterr().err
    (probe,) = ProbeFactory.made
    helper = base if even else max(base, HELPER_NICE)
    assert probe.nice == {"prepare": {helper}, "infer": {base}, "finish": {helper}}
    assert thread_tuning()  # the process-wide setting is back as it was
