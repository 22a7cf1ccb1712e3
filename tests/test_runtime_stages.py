"""The pipeline is generic: stages are added by registering them, and it is driven through its interface.

- A third stage, defined here (depth statistics: the median depth of each frame, in the events and
  drawn on the frame), joins edge-mm-run by one `register(...)` line and runs through its assembly.
- A stage that reads what no earlier stage adds is refused when the pipeline is built.
- Snapshots and recordings are requested through the pipeline's interface, from a subscriber.
- The CLIP stage's counters stay exact when submit() is called from several threads at once.
"""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
from runtime_support import count_video_frames, read_events

from edge_mm.errors import UsageError
from runtime import stages
from runtime.cli import main
from runtime.sources import open_source
from runtime.stages.base import Stage

MARK_COLOUR = (255, 0, 255)  # BGR magenta: a block the depth-statistics stage draws in the corner
MARK = 32  # pixels


class DepthStatsStage(Stage):
    """Adds the frame's median valid depth (metres) to each result, and draws it."""

    name = "depth_stats"
    reads = ("frame",)
    adds = ("depth_median_m",)

    def __init__(self) -> None:
        self.frames = 0

    def finish(self, result, inferred) -> None:
        depth = result.frame.depth_m
        valid = depth[depth > 0]
        result.values["depth_median_m"] = float(np.median(valid)) if valid.size else None
        self.frames += 1

    def draw(self, image, result, overlay) -> None:
        image[-MARK:, -MARK:] = MARK_COLOUR

    def text_lines(self, result):
        value = result.values["depth_median_m"]
        return [f"median depth {value:.2f} m" if value is not None else "median depth -"]

    def event_fields(self, result):
        value = result.values["depth_median_m"]
        return {"depth_median_m": None if value is None else round(value, 4)}

    def summary(self):
        return {"frames": self.frames}


class DepthStatsFactory:
    NAME = "depth_stats"

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument("--depth-stats", action="store_true", help="median depth of each frame")

    @staticmethod
    def from_args(args, ctx):
        return DepthStatsStage() if args.depth_stats else None


@pytest.fixture
def depth_stats_registered():
    stages.register(DepthStatsFactory)  # the one registration line
    try:
        yield
    finally:
        stages.unregister(DepthStatsFactory.NAME)


def test_a_third_stage_is_one_module_and_one_registration_line(
    depth_stats_registered, oracle_artifact, tmp_path, capsys
):
    n = 6
    video, events, stats = tmp_path / "o.avi", tmp_path / "e.jsonl", tmp_path / "s.json"
    rc = main(
        [
            "--model",
            str(oracle_artifact),
            "--camera",
            "synthetic:2",
            "--frames",
            str(n),
            "--size",
            "160x120",
            "--headless",
            "--threads",
            "1",
            "--stats-interval",
            "0",
            "--depth-stats",
            "--out",
            str(video),
            "--events",
            str(events),
            "--stats",
            str(stats),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    with open_source("synthetic:2", size=(120, 160), count=n) as source:
        frames = list(source)
    rows = read_events(events)
    assert [r["index"] for r in rows] == list(range(n))
    for frame, row in zip(frames, rows):
        expected = float(np.median(frame.depth_m[frame.depth_m > 0]))
        assert row["depth_median_m"] == pytest.approx(expected, abs=1e-4)
        assert "score" in row  # the saliency stage's fields are still there
    summary = json.loads(stats.read_text())
    assert summary["stages"] == ["saliency", "depth_stats"]
    assert summary["depth_stats"] == {"frames": n}
    # The stage's drawing is in every written frame (MJPG is lossy: compare the block's mean colour).
    cap = cv2.VideoCapture(str(video))
    seen = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        block = image[-MARK + 4 : -4, -MARK + 4 : -4].reshape(-1, 3).mean(axis=0)
        assert np.abs(block - MARK_COLOUR).max() < 30, block
        seen += 1
    cap.release()
    assert seen == n


def test_without_its_flag_the_registered_stage_is_not_built(depth_stats_registered, oracle_artifact, tmp_path, capsys):
    events = tmp_path / "e.jsonl"
    argv = ["--model", str(oracle_artifact), "--camera", "synthetic:2", "--frames", "2", "--size", "160x120"]
    rc = main(argv + ["--headless", "--threads", "1", "--events", str(events), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert all("depth_median_m" not in row for row in read_events(events))


class _NeedsSaliency(Stage):
    name = "needs_saliency"
    reads = ("saliency",)


def test_a_stage_before_the_one_it_reads_is_refused_at_assembly(oracle_artifact):
    from runtime.backends.onnxrt import OnnxRuntimeBackend
    from runtime.pipeline import Pipeline
    from runtime.saliency import SaliencyModel
    from runtime.stages.saliency import SaliencyStage

    with OnnxRuntimeBackend(oracle_artifact / "model.onnx", providers="cpu", threads=1) as backend:
        saliency = SaliencyStage(SaliencyModel(backend))
        source = open_source("synthetic:1", size=(48, 64), count=1)
        with pytest.raises(UsageError, match=r"needs_saliency reads \['saliency'\]"):
            Pipeline(source, [_NeedsSaliency(), saliency])
        Pipeline(source, [saliency, _NeedsSaliency()])  # the right order is accepted
        source.close()


def test_snapshots_and_recording_go_through_the_pipeline_interface(oracle_artifact, tmp_path):
    from runtime.backends.onnxrt import OnnxRuntimeBackend
    from runtime.pipeline import Pipeline
    from runtime.saliency import SaliencyModel
    from runtime.sinks.video import VideoSink
    from runtime.stages.saliency import SaliencyStage

    announced, recordings, seen = [], [], []

    def make_recording():
        recordings.append(VideoSink(tmp_path / f"rec{len(recordings)}.avi", fps=10))
        return recordings[-1]

    with OnnxRuntimeBackend(oracle_artifact / "model.onnx", providers="cpu", threads=1) as backend:
        source = open_source("synthetic:1", size=(48, 64), count=8)
        pipeline = Pipeline(
            source,
            [SaliencyStage(SaliencyModel(backend)), DepthStatsStage()],
            [],
            snapshot_dir=tmp_path / "snaps",
            make_recording=make_recording,
            announce=announced.append,
        )

        def on_result(result):  # e.g. a web page's buttons, from another thread, between frames
            seen.append(result.frame.index)
            if result.frame.index == 1:
                pipeline.request_snapshot()
            if result.frame.index in (2, 5):
                pipeline.toggle_recording()

        pipeline.subscribe(on_result=on_result)
        outcome = pipeline.run()
        source.close()
    assert outcome.reason == "end of stream" and seen == list(range(8))
    snaps = sorted(p.name.rsplit("-", 1)[1] for p in (tmp_path / "snaps").iterdir())
    assert snaps == ["color.png", "depth.png", "overlay.png", "saliency.png"]  # the saliency stage's map too
    assert len(recordings) == 1 and count_video_frames(tmp_path / "rec0.avi") == 3  # frames 3, 4, 5
    assert pipeline.sinks == []  # the recording left the sinks when it stopped
    assert any(a.startswith("snapshot: ") for a in announced) and any("recording stopped" in a for a in announced)


def test_clip_stage_counters_are_exact_under_concurrent_submits():
    """submit() may be called from several threads; no count may be lost (a frame without an object
    is counted and never reaches the embedder, so none is needed here)."""
    from runtime.clip_stage import ClipStage
    from runtime.sources import Frame

    class LabelsOnlyEmbedder:
        def classifier(self, labels, templates):
            return object()  # never used: no crop is embedded in this test

    stage = ClipStage(LabelsOnlyEmbedder(), labels=["mug"])
    frame = Frame(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.float32), 0.0, 0.0)

    def submit_many():
        for _ in range(2000):
            assert not stage.submit(frame, None)

    threads = [threading.Thread(target=submit_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = stage.stats()
    assert counts["submitted"] == counts["no_object"] == 8000
