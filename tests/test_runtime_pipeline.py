"""edge-mm-run end to end on ONNX Runtime CPU: synthetic scenes, the real D435 recording, generated
.db3 recordings. Every frame of a file is processed exactly once and in order; the video, events
and stats files are valid; results match the model run directly on the same frame."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from runtime_support import (
    DEMO_WEIGHTS,
    build_artifact,
    count_video_frames,
    oracle_saliency,
    read_events,
)
from support import pyrealsense2_or_skip

from edge_mm.errors import CameraError
from runtime.cli import main
from runtime.pipeline import Pipeline, save_snapshot
from runtime.saliency import SaliencyModel, analyse_saliency, mask_iou
from runtime.sinks.events import EventsSink
from runtime.sinks.video import VideoSink
from runtime.sources import Frame, Source, open_source
from runtime.stages.saliency import SaliencyStage
from runtime.stats import PipelineStats

EVENT_FIELDS = {"index", "time", "timestamp_ms", "latency_ms", "box", "score", "depth_m", "area_frac"}


def _run(args, capsys):
    rc = main([str(a) for a in args] + ["--threads", "1", "--stats-interval", "0"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _check_outputs(tmp_path, n, capsys_out=""):
    video, events, stats = tmp_path / "o.mp4", tmp_path / "e.jsonl", tmp_path / "s.json"
    assert count_video_frames(video) == n
    rows = read_events(events)
    assert [r["index"] for r in rows] == list(range(n))  # every frame once, in order
    for row in rows:
        assert EVENT_FIELDS <= set(row)
        assert row["latency_ms"] >= 0
    summary = json.loads(stats.read_text())
    assert summary["frames"] == n and summary["complete"] is True
    for key in ("fps", "model_alone_fps", "pipeline_vs_model", "latency_ms", "stages_ms", "backend", "model", "source"):
        assert key in summary
    assert {"capture", "preprocess", "infer", "postprocess", "render", "output"} <= set(summary["stages_ms"])
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"] <= summary["latency_ms"]["max"]
    assert not list(tmp_path.glob(".*partial*"))  # the video was renamed into place
    return rows, summary


def _outputs(tmp_path):
    return ["--out", tmp_path / "o.mp4", "--events", tmp_path / "e.jsonl", "--stats", tmp_path / "s.json"]


def test_synthetic_scenes_with_a_cdinet_artifact(cdinet_artifact, tmp_path, capsys):
    rc, out, _ = _run(
        [
            "--model",
            cdinet_artifact,
            "--camera",
            "synthetic:3",
            "--frames",
            6,
            "--size",
            "160x120",
            "--headless",
            *_outputs(tmp_path),
        ],
        capsys,
    )
    assert rc == 0
    assert "backend: ort-cpu fp32" in out and "stopped (frame limit)" in out
    rows, summary = _check_outputs(tmp_path, 6)
    assert summary["backend"] == "ort-cpu fp32" and summary["model"] == "cdinet-s"
    # Synthetic frames carry ground truth, so every frame has an IoU; random weights: machinery only.
    assert all(0.0 <= r["iou"] <= 1.0 for r in rows)
    assert summary["iou_vs_ground_truth"]["count"] == 6
    print("random-weights cdinet-s mean IoU:", summary["iou_vs_ground_truth"]["mean"])


def test_each_result_matches_the_model_run_directly_on_its_own_frame(oracle_artifact, tmp_path, capsys):
    """Pipeline results, frame by frame, equal the same graph run outside the pipeline: nothing is
    flipped, shifted, mixed up between frames or reordered (3 workers per stage)."""
    n = 8
    rc, _, _ = _run(
        [
            "--model",
            oracle_artifact,
            "--camera",
            "synthetic:5",
            "--frames",
            n,
            "--size",
            "160x120",
            "--headless",
            "--workers",
            3,
            *_outputs(tmp_path),
        ],
        capsys,
    )
    assert rc == 0
    rows, summary = _check_outputs(tmp_path, n)
    with open_source("synthetic:5", size=(120, 160), count=n) as source:
        frames = list(source)
    import onnxruntime as ort

    from edge_mm.rgbd import RgbdPreprocess, preprocess_rgbd

    session = ort.InferenceSession(str(oracle_artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    expected_ious = []
    for frame, row in zip(frames, rows):
        rgb, depth = preprocess_rgbd(frame.color, frame.depth_m, RgbdPreprocess(size=(64, 64)))
        pred = session.run(None, {"rgb": rgb[None], "depth": depth[None]})[0]
        np.testing.assert_allclose(
            pred, oracle_saliency(frame.color, frame.depth_m), atol=1e-4
        )  # the graph is the oracle
        direct = analyse_saliency(pred, frame.size, frame.depth_m)
        expected_iou = mask_iou(direct.mask, frame.meta["mask"])
        expected_ious.append(expected_iou)
        assert row["iou"] == pytest.approx(expected_iou, abs=1e-4)
        assert row["box"] == (list(direct.box) if direct.box else None)
        if direct.depth_m is not None:
            assert row["depth_m"] == pytest.approx(direct.depth_m, abs=1e-3)
    assert len(set(round(v, 3) for v in expected_ious)) > n // 2  # the frames really differ
    assert summary["iou_vs_ground_truth"]["mean"] == pytest.approx(np.mean(expected_ious), abs=2e-3)


def test_the_real_d435_recording(cdinet_artifact, d435_bag, tmp_path, capsys):
    rc, out, _ = _run(
        ["--model", cdinet_artifact, "--camera", f"recording:{d435_bag}", "--headless", *_outputs(tmp_path)], capsys
    )
    assert rc == 0, out
    rows, summary = _check_outputs(tmp_path, 1)  # the file holds one colour frame
    assert summary["source"].startswith("recording:") and summary["live"] is False
    if rows[0]["depth_m"] is not None:  # metric depth under the box, from the D435's 1 mm units
        assert 0.2 < rows[0]["depth_m"] < 10.0


@pytest.fixture(scope="module")
def db3_recording(tmp_path_factory):
    pyrealsense2_or_skip()
    from data_gen import write_rs_recording

    path = tmp_path_factory.mktemp("db3") / "planes.db3"
    written = write_rs_recording(path, frames=10, size=(48, 64))
    return path, written


def test_a_generated_db3_recording_every_frame_once_with_its_depth(oracle_artifact, db3_recording, tmp_path, capsys):
    path, written = db3_recording
    rc, _, _ = _run(
        ["--model", oracle_artifact, "--camera", f"recording:{path}", "--headless", *_outputs(tmp_path)], capsys
    )
    assert rc == 0
    rows, _ = _check_outputs(tmp_path, len(written))
    assert [r["timestamp_ms"] for r in rows] == pytest.approx([w.timestamp_ms for w in written], abs=1e-3)
    # Each frame is a flat plane: the depth under any box is that frame's plane, to the millimetre.
    for row, w in zip(rows, written):
        if row["box"] is not None:
            assert row["depth_m"] == pytest.approx(w.depth_units[0, 0] * 0.001, abs=1e-4)


def test_loop_replays_a_recording_up_to_the_frame_count(oracle_artifact, db3_recording, tmp_path, capsys):
    path, written = db3_recording
    n = len(written) * 2 + 3
    rc, _, _ = _run(
        [
            "--model",
            oracle_artifact,
            "--camera",
            f"recording:{path}",
            "--loop",
            "--frames",
            n,
            "--headless",
            *_outputs(tmp_path),
        ],
        capsys,
    )
    assert rc == 0
    rows, summary = _check_outputs(tmp_path, n)
    period = [w.timestamp_ms for w in written]
    assert [r["timestamp_ms"] for r in rows] == pytest.approx((period * 3)[:n], abs=1e-3)


@pytest.mark.parametrize("workers", [1, 3])
def test_live_source_keeps_order_counts_drops_and_stops_at_the_frame_count(oracle_artifact, tmp_path, capsys, workers):
    n = 12
    rc, out, _ = _run(
        [
            "--model",
            oracle_artifact,
            "--camera",
            "synthetic",
            "--fps",
            60,
            "--frames",
            n,
            "--workers",
            workers,
            "--size",
            "160x120",
            "--headless",
            "--events",
            tmp_path / "e.jsonl",
            "--stats",
            tmp_path / "s.json",
        ],
        capsys,
    )
    assert rc == 0, out
    rows = read_events(tmp_path / "e.jsonl")
    indices = [r["index"] for r in rows]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert len(indices) == n and indices == sorted(set(indices)), (indices, summary)  # in order, none twice
    assert summary["live"] is True and summary["frames"] == n, summary
    # Frames the camera delivered before the last processed one and nobody took were dropped (and
    # counted); the capture may drop more after it, before it stops.
    assert summary.get("dropped", 0) >= indices[-1] + 1 - n, (indices, summary)


class _UnpluggedCamera(Source):
    """A camera-like source that delivers `good` frames, then fails as a lost camera does."""

    live = False  # deterministic: every good frame must reach the outputs

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good

    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def _read(self):
        if self._next_index >= self.good:
            raise CameraError(
                "RealSense 123 was lost (Frame didn't arrive within 5000) and 5 reconnect attempts failed; "
                "check the USB 3 cable and port, then restart"
            )
        color = np.full((48, 64, 3), 40 * self._next_index % 255, np.uint8)
        return Frame(
            color, np.full((48, 64), 1.5, np.float32), 33.3 * self._next_index, __import__("time").perf_counter()
        )


def test_a_camera_lost_for_good_leaves_valid_outputs_and_a_one_line_error(
    oracle_artifact, tmp_path, capsys, monkeypatch
):
    import runtime.sources as sources

    monkeypatch.setattr(sources, "open_source", lambda uri, **options: _UnpluggedCamera(good=5).open())
    rc, out, err = _run(
        ["--model", oracle_artifact, "--camera", "synthetic", "--frames", 50, "--headless", *_outputs(tmp_path)], capsys
    )
    assert rc == 2
    assert err.strip().count("\n") == 0 and "reconnect attempts failed" in err
    rows, summary = _check_outputs(tmp_path, 5)
    assert summary["stop_reason"] == "error" and "reconnect attempts failed" in summary["error"]


def test_pipeline_api_with_several_workers_and_a_snapshot(oracle_artifact, tmp_path):
    from runtime.backends.onnxrt import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(oracle_artifact / "model.onnx", providers="cpu", threads=1)
    with backend:
        model = SaliencyModel(backend)
        results = []
        with VideoSink(tmp_path / "v.avi", fps=10) as video, EventsSink(tmp_path / "e.jsonl") as events:
            source = open_source("synthetic:1", size=(96, 128), count=9)
            stats = PipelineStats()
            stage = SaliencyStage(model)
            outcome = Pipeline(source, [stage], [video, events], stats, workers=4, on_result=results.append).run()
        assert outcome.reason == "end of stream" and outcome.frames == 9
        assert [r.frame.index for r in results] == list(range(9))
        assert count_video_frames(tmp_path / "v.avi") == 9
        paths = save_snapshot(results[4], tmp_path / "snaps", stages=[stage])
        assert sorted(p.name.rsplit("-", 1)[1] for p in paths) == [
            "color.png",
            "depth.png",
            "overlay.png",
            "saliency.png",
        ]
        overlay = cv2.imread(str(paths[0]))
        assert overlay.shape == (96, 128, 3)


@pytest.mark.skipif(not DEMO_WEIGHTS.is_file(), reason=f"demo weights {DEMO_WEIGHTS} are not in the repository yet")
def test_demo_weights_find_the_synthetic_objects(tmp_path_factory, tmp_path, capsys):
    """With the trained demo weights, the salient mask overlaps the ground truth.

    Seed 777 was never used in training (seeds 1-3). Measured with the demo weights of 2026-11-26 on
    640x480 frames: mean IoU 0.850 (seed 777) and 0.865 (seed 4242) over 60 frames each; random
    weights give about 0.04. The bar of 0.7 leaves room for a retrained demo model and still fails
    for a pipeline that flips, shifts or mismatches frames and results.
    """
    artifact = build_artifact(tmp_path_factory.getbasetemp() / "cdinet-s-demo", weights="", size=0)
    rc, out, _ = _run(
        ["--model", artifact, "--camera", "synthetic:777", "--frames", 24, "--headless", *_outputs(tmp_path)], capsys
    )
    assert rc == 0
    _, summary = _check_outputs(tmp_path, 24)
    iou = summary["iou_vs_ground_truth"]["mean"]
    print(f"demo cdinet-s mean IoU on 24 synthetic frames (seed 777): {iou:.3f}")
    assert iou > 0.7
