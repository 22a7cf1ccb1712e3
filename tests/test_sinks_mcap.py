"""`--out run.mcap` / `--out run.rosbag2`: results as ROS 2 messages, read back with the `mcap` reader
(its own ROS 2 CDR decoder) and with `rosbags`. Every message decodes, stamps equal the source's,
each topic has one message per frame, and the masks, images and depth equal the runtime's own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_support import write_bag

from edge_mm.errors import UsageError
from runtime import rosmsg
from runtime.cli import main
from runtime.pipeline import Pipeline
from runtime.saliency import SaliencyModel, analyse_saliency
from runtime.sinks import check_out_path, open_out_sink
from runtime.sinks.mcap import JPEG_QUALITY, RosResultsSink
from runtime.sources import open_source
from runtime.stages.saliency import SaliencyStage
from runtime.stats import PipelineStats

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000_000_000
FRAME_TOPICS = ("image", "saliency/mask", "saliency/prob", "depth", "detections")


def read_mcap(path: Path):
    """{topic: [(log_time, decoded message)]} with the mcap package's own ROS 2 decoder; checks the profile."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = defaultdict(list)
    with open(path, "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            out[channel.topic].append((message.log_time, decoded))
    return out


def read_rosbags(path: Path):
    """The same with rosbags (an .mcap file or a rosbag2 folder), decoded with the bag's own definitions."""
    from rosbags.highlevel import AnyReader

    out = defaultdict(list)
    with AnyReader([Path(path)], default_typestore=rosmsg.typestore()) as reader:
        for connection, stamp, raw in reader.messages():
            out[connection.topic].append((stamp, reader.deserialize(raw, connection.msgtype)))
    return out


def pixels(msg) -> np.ndarray:
    """Image message -> array (either reader's message object)."""
    dtype = {"bgr8": np.uint8, "mono8": np.uint8, "32FC1": "<f4"}[msg.encoding]
    data = np.frombuffer(bytes(msg.data), dtype=dtype)
    shape = (msg.height, msg.width, 3) if msg.encoding == "bgr8" else (msg.height, msg.width)
    return data.reshape(shape)


def _bag(tmp_path: Path, count: int = 6, storage: str = "mcap", seed: int = 4):
    with open_source(f"synthetic:{seed}", size=(96, 128), count=count) as source:
        frames = list(source)
    stamps = [T0 + i * 33_333_333 for i in range(count)]
    intrinsics = {"width": 128, "height": 96, "fx": 100.0, "fy": 100.0, "ppx": 64.0, "ppy": 48.0, "coeffs": [0] * 5}
    bag = write_bag(
        tmp_path / ("in.bag" if storage == "ros1" else "in"),
        [(f.color, f.depth_m, s) for f, s in zip(frames, stamps)],
        storage,
        intrinsics=intrinsics,
    )
    return bag, frames, stamps


# --- edge-mm-run on a rosbag, results as MCAP ----------------------------------------------


@pytest.mark.parametrize("storage", ["sqlite3", "mcap", "ros1"])
def test_edge_mm_run_on_a_rosbag_writes_an_mcap_foxglove_can_read(tmp_path, oracle_artifact, capsys, storage):
    bag, frames, stamps = _bag(tmp_path, storage=storage)
    out, events = tmp_path / "run.mcap", tmp_path / "e.jsonl"
    argv = ["--model", str(oracle_artifact), "--camera", f"rosbag:{bag}", "--headless", "--threads", "1"]
    assert main(argv + ["--out", str(out), "--events", str(events)]) == 0
    said = capsys.readouterr().out
    assert "rosbag: 6 pairs of /camera/camera/color/image_raw + /camera/camera/aligned_depth_to_color" in said
    assert "(stamps within 20 ms, largest difference 0.0 ms)" in said
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["timestamp_ms"] for r in rows] == [round(s / 1e6, 3) for s in stamps]
    for messages in (read_mcap(out), read_rosbags(out)):
        for name in FRAME_TOPICS + ("camera_info",):
            topic = messages[f"/edge_mm/{name}"]
            assert [t for t, _ in topic] == stamps, name  # log time = the bag's header stamp, one per frame
            assert [rosmsg.stamp_ns(m.header) for _, m in topic] == stamps
            assert {m.header.frame_id for _, m in topic} == {"camera_color_optical_frame"}
        assert sum(len(v) for v in messages.values()) == 6 * 6
        # The runtime's results, recomputed from the model and the same frames: mask, box, score, depth.
        import onnxruntime as ort

        from edge_mm.rgbd import RgbdPreprocess, preprocess_rgbd

        session = ort.InferenceSession(str(oracle_artifact / "model.onnx"), providers=["CPUExecutionProvider"])
        for i, frame in enumerate(frames):
            rgb, depth = preprocess_rgbd(frame.color, frame.depth_m, RgbdPreprocess(size=(64, 64)))
            direct = analyse_saliency(session.run(None, {"rgb": rgb[None], "depth": depth[None]})[0], frame.size)
            mask = pixels(messages["/edge_mm/saliency/mask"][i][1])
            np.testing.assert_array_equal(mask, np.where(direct.mask, 255, 0))
            np.testing.assert_array_equal(pixels(messages["/edge_mm/depth"][i][1]), frame.depth_m)
            (det,) = messages["/edge_mm/detections"][i][1].detections
            assert rosmsg.box_of(det) == tuple(rows[i]["box"]) == direct.box
            assert det.results[0].hypothesis.class_id == "salient"
            assert det.results[0].hypothesis.score == pytest.approx(rows[i]["score"], abs=1e-4)
            info = messages["/edge_mm/camera_info"][i][1]
            assert list(info.k) == [100.0, 0, 64.0, 0, 100.0, 48.0, 0, 0, 1]


def test_rosbag2_output_folder_for_ros2_bag_play(tmp_path, oracle_artifact):
    bag, frames, stamps = _bag(tmp_path, count=4, storage="sqlite3")
    out = tmp_path / "results.rosbag2"
    argv = ["--model", str(oracle_artifact), "--camera", f"rosbag:{bag}", "--headless", "--quiet", "--threads", "1"]
    assert main(argv + ["--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metadata.yaml", "results.rosbag2.mcap"]
    meta = (out / "metadata.yaml").read_text()
    assert "storage_identifier: mcap" in meta and "vision_msgs/msg/Detection2DArray" in meta
    messages = read_rosbags(out)
    for name in FRAME_TOPICS + ("camera_info",):
        assert [t for t, _ in messages[f"/edge_mm/{name}"]] == stamps
    assert [t for t, _ in read_mcap(out / "results.rosbag2.mcap")["/edge_mm/image"]] == stamps
    # A second run replaces the folder whole; nothing hidden is left beside it.
    assert main(argv + ["--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_the_d435_recording_to_mcap_keeps_its_timestamps(tmp_path, oracle_artifact, d435_bag):
    out = tmp_path / "d435.mcap"
    argv = ["--model", str(oracle_artifact), "--camera", f"recording:{d435_bag}", "--headless", "--quiet"]
    assert main(argv + ["--out", str(out), "--events", str(tmp_path / "e.jsonl")]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    messages = read_mcap(out)
    (image_time, image), (_, info) = messages["/edge_mm/image"][0], messages["/edge_mm/camera_info"][0]
    assert image_time == round(row["timestamp_ms"] * 1e6) and (image.width, image.height) == (640, 480)
    assert info.k[0] == pytest.approx(613.2036743164062) and info.distortion_model == "plumb_bob"


# --- the sink on its own: images, JPEG, CLIP events, atomic writes --------------------------


def _pipeline_run(oracle_artifact, sinks, count=5):
    from runtime.backends.onnxrt import OnnxRuntimeBackend

    results = []
    with OnnxRuntimeBackend(oracle_artifact / "model.onnx", providers="cpu", threads=1) as backend:
        source = open_source("synthetic:2", size=(72, 96), count=count)
        stages = [SaliencyStage(SaliencyModel(backend))]
        Pipeline(source, stages, sinks, PipelineStats(), workers=2, on_result=results.append).run()
    return results


def test_messages_equal_the_runtime_results_and_jpeg_variant(tmp_path, oracle_artifact):
    raw, jpeg = RosResultsSink(tmp_path / "raw.mcap"), RosResultsSink(tmp_path / "jpeg.mcap", jpeg=True)
    results = _pipeline_run(oracle_artifact, [raw, jpeg])
    raw.close()
    jpeg.close()
    assert raw.frames_written == jpeg.frames_written == len(results) == 5
    messages = read_mcap(tmp_path / "raw.mcap")
    compressed = read_rosbags(tmp_path / "jpeg.mcap")["/edge_mm/image/compressed"]
    for i, result in enumerate(results):
        stamp = round(result.frame.timestamp_ms * 1e6)
        assert messages["/edge_mm/image"][i][0] == stamp
        np.testing.assert_array_equal(pixels(messages["/edge_mm/image"][i][1]), result.image)
        np.testing.assert_array_equal(pixels(messages["/edge_mm/saliency/mask"][i][1]) > 0, result.saliency.mask)
        prob = pixels(messages["/edge_mm/saliency/prob"][i][1]).astype(np.float32) / 255.0
        np.testing.assert_allclose(prob, result.saliency.prob, atol=0.5 / 255 + 1e-6)
        msg = compressed[i][1]
        assert msg.format == "jpeg" and compressed[i][0] == stamp
        # The JPEG is the annotated frame itself: the same bytes as encoding it here at the sink's quality.
        ok, expected = cv2.imencode(".jpg", result.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok and bytes(msg.data) == expected.tobytes()
        decoded = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == result.image.shape
    assert "/edge_mm/camera_info" not in messages  # synthetic scenes have no intrinsics


def test_clip_events_become_detections_with_label_and_query_hits(tmp_path, oracle_artifact):
    from runtime.clip_stage import ClipResult

    sink = RosResultsSink(tmp_path / "clip.mcap")
    results = _pipeline_run(oracle_artifact, [sink], count=3)
    frame = results[1].frame
    labelled = ClipResult(1, frame.timestamp_ms, (3, 4, 30, 40), label="mug", prob=0.8, query_score=0.31)
    sink.write_event(labelled.to_event())
    sink.write_event(
        {"type": "clip_query", "query": "a red mug", "score": 0.31, "index": 1, "timestamp_ms": frame.timestamp_ms}
        | {"box": [3, 4, 30, 40], "label": "mug", "threshold": 0.3, "time": 0.0}
    )
    sink.close()
    clip = read_mcap(tmp_path / "clip.mcap")["/edge_mm/clip"]
    assert [t for t, _ in clip] == [round(frame.timestamp_ms * 1e6)] * 2
    first, second = (m.detections[0] for _, m in clip)
    assert rosmsg.box_of(first) == rosmsg.box_of(second) == (3, 4, 30, 40)
    assert [(h.hypothesis.class_id, round(h.hypothesis.score, 2)) for h in first.results] == [
        ("mug", 0.8),
        ("query", 0.31),
    ]
    assert second.results[0].hypothesis.class_id == "query: a red mug"


def test_two_writers_of_one_path_and_a_run_without_frames(tmp_path, oracle_artifact):
    target = tmp_path / "same.mcap"
    a, b = RosResultsSink(target), RosResultsSink(target)
    _pipeline_run(oracle_artifact, [a, b], count=2)
    temps = [p.name for p in tmp_path.iterdir() if p.name.startswith(".same.mcap.")]
    assert len(temps) == 2 and temps[0] != temps[1]  # each writer its own hidden file
    a.close()
    b.close()
    assert [p.name for p in tmp_path.iterdir()] == ["same.mcap"]
    assert len(read_mcap(target)["/edge_mm/image"]) == 2
    empty = RosResultsSink(tmp_path / "empty.mcap")
    empty.close()
    assert not (tmp_path / "empty.mcap").exists()


def test_out_paths(tmp_path):
    (tmp_path / "d.mcap").mkdir()
    (tmp_path / "f.rosbag2").write_text("x")
    with pytest.raises(UsageError, match="is a folder; give a file name"):
        check_out_path(tmp_path / "d.mcap")
    with pytest.raises(UsageError, match="is a file; a .rosbag2 output is a folder"):
        check_out_path(tmp_path / "f.rosbag2")
    with pytest.raises(UsageError, match=r"\.mp4 \(mp4v\) or \.avi"):
        check_out_path(tmp_path / "x.webm")
    assert type(open_out_sink(tmp_path / "o.mcap")).__name__ == "RosResultsSink"
    assert type(open_out_sink(tmp_path / "o.avi")).__name__ == "VideoSink"


def test_ctrl_c_leaves_a_complete_mcap_up_to_the_last_frame(tmp_path, oracle_artifact):
    out, events = tmp_path / "live.mcap", tmp_path / "e.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DISPLAY", None)
    cmd = [sys.executable, "-m", "runtime.cli", "--model", str(oracle_artifact), "--camera", "synthetic"]
    cmd += ["--frames", "100000", "--size", "96x72", "--threads", "1", "--headless"]
    cmd += ["--out", str(out), "--events", str(events)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not events.exists() or len(events.read_text().splitlines()) < 5):
            time.sleep(0.1)
        assert events.exists(), "the run never produced a frame"
        assert not out.exists()  # still being written under a hidden name
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    messages = read_mcap(out)
    for name in FRAME_TOPICS:  # every frame the events log has, complete; events round to the microsecond
        times = [t for t, _ in messages[f"/edge_mm/{name}"]]
        np.testing.assert_allclose(times, [r["timestamp_ms"] * 1e6 for r in rows], rtol=0, atol=1000)
    assert len(rows) >= 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_edge_mm_run_with_clip_writes_its_labels_and_query_hits(tmp_path, oracle_artifact, capsys):
    """The CLIP events the --events log gets are the /edge_mm/clip messages of the MCAP, one for one."""
    from retrieval_support import tiny_clip_artifact

    clip = tiny_clip_artifact(tmp_path)
    bag, _, stamps = _bag(tmp_path, count=8)
    out, events = tmp_path / "clip.mcap", tmp_path / "e.jsonl"
    argv = ["--model", str(oracle_artifact), "--camera", f"rosbag:{bag}", "--headless", "--quiet"]
    argv += ["--out", str(out), "--events", str(events), "--clip", str(clip), "--labels", "red,green,blue"]
    argv += ["--query", "a red object", "--query-threshold", "-1", "--clip-rate", "1000"]
    assert main(argv) == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    clip_events = [e for e in lines if e.get("type") in ("clip", "clip_query")]
    assert any(e["type"] == "clip_query" for e in clip_events), "the query never fired"
    messages = read_mcap(out)["/edge_mm/clip"]
    assert len(messages) == len(clip_events) > 0
    for event, (stamp, msg) in zip(clip_events, messages):
        assert stamp == stamps[event["index"]]  # the stamp of the frame CLIP looked at
        (det,) = msg.detections
        assert rosmsg.box_of(det) == tuple(event["box"])
        names = [h.hypothesis.class_id for h in det.results]
        if event["type"] == "clip":
            assert names[0] == event["label"] in ("red", "green", "blue")
        else:
            assert names[0] == "query: a red object"
