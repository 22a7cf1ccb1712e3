#!/usr/bin/env python3
"""Regenerate docs/ros_frame.png: one frame read back from the MCAP that `edge-mm-run --out run.mcap`
wrote for a ROS 2 bag, drawn the way Foxglove's image panels show its topics.

    python -m export.build_engine --model cdinet-s --out artifacts/cdinet-s
    python docs/make_ros_frame.py [--model artifacts/cdinet-s]

The repository's D435 recording (tests/data) is read with the librealsense source and written as a
robot would record it with realsense-ros (rosbag2, MCAP storage: rgb8 colour, 16UC1 aligned depth,
camera_info). edge-mm-run plays that bag (`--camera rosbag:...`) and writes its results as MCAP;
this script decodes the MCAP with the `mcap` reader's own ROS 2 decoder and tiles the annotated
frame, the saliency mask and the depth, each captioned with its topic, type and stamp.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

D435_BAG = ROOT / "tests" / "data" / "realsense_d435_single_frame_640x480.bag"


def write_robot_bag(folder: Path) -> Path:
    """The D435 frame under realsense-ros topics and encodings (depth stamped with the colour frame's time)."""
    from ros_support import write_bag

    from runtime.sources import open_source

    with open_source(f"recording:{D435_BAG}") as source:
        (frame,) = list(source)
    stamp = int(round(frame.timestamp_ms * 1e6))
    return write_bag(
        folder / "d435", [(frame.color, frame.depth_m, stamp)], "mcap", intrinsics=frame.meta["intrinsics"]
    )


def read_topics(mcap_path: Path) -> dict:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = {}
    with open(mcap_path, "rb") as fh:
        for schema, channel, message, msg in make_reader(
            fh, decoder_factories=[DecoderFactory()]
        ).iter_decoded_messages():
            out.setdefault(channel.topic, (schema.name, message.log_time, msg))
    return out


def image_of(msg) -> np.ndarray:
    dtype = {"bgr8": np.uint8, "mono8": np.uint8, "32FC1": "<f4"}[msg.encoding]
    data = np.frombuffer(bytes(msg.data), dtype=dtype)
    if msg.encoding == "bgr8":
        return data.reshape(msg.height, msg.width, 3)
    plane = data.reshape(msg.height, msg.width)
    if msg.encoding == "mono8":
        return cv2.cvtColor(plane, cv2.COLOR_GRAY2BGR)
    valid = plane > 0  # depth: turbo colour map over the valid range, black where there is none
    lo, hi = (float(plane[valid].min()), float(plane[valid].max())) if valid.any() else (0.0, 1.0)
    scaled = np.clip((plane - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    coloured = cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)
    coloured[~valid] = 0
    return coloured


def panel(image: np.ndarray, title: str, subtitle: str) -> np.ndarray:
    bar = np.full((44, image.shape[1], 3), 32, np.uint8)
    cv2.putText(bar, title, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(bar, subtitle, (8, 37), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (180, 180, 180), 1, cv2.LINE_AA)
    return np.vstack([bar, image])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "cdinet-s"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ros_frame.png")
    args = parser.parse_args()

    from runtime.cli import main as run

    with tempfile.TemporaryDirectory() as tmp:
        bag = write_robot_bag(Path(tmp))
        mcap_path = Path(tmp) / "run.mcap"
        code = run(
            ["--model", args.model, "--camera", f"rosbag:{bag}", "--headless", "--quiet", "--out", str(mcap_path)]
        )
        if code != 0:
            return code
        topics = read_topics(mcap_path)
    tiles = []
    for topic in ("/edge_mm/image", "/edge_mm/saliency/mask", "/edge_mm/depth"):
        type_name, stamp, msg = topics[topic]
        image = cv2.resize(image_of(msg), (424, 318), interpolation=cv2.INTER_AREA)
        tiles.append(panel(image, topic, f"{type_name} {msg.encoding}  stamp {stamp / 1e9:.6f} s"))
    _, _, detections = topics["/edge_mm/detections"]
    hypothesis = detections.detections[0].results[0].hypothesis if detections.detections else None
    caption = np.full((30, sum(t.shape[1] for t in tiles), 3), 24, np.uint8)
    text = "/edge_mm/detections vision_msgs/msg/Detection2DArray: " + (
        f"{hypothesis.class_id} {hypothesis.score:.2f}" if hypothesis else "no salient object"
    )
    cv2.putText(caption, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.imwrite(str(args.out), np.vstack([np.hstack(tiles), caption]))
    print(f"wrote {args.out} ({', '.join(sorted(topics))} read back from the MCAP)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
