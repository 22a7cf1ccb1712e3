#!/usr/bin/env python3
"""Regenerate docs/overlay.png: one annotated frame of the demo artifact on a synthetic scene.

    python -m export.build_engine --model cdinet-s --out artifacts/cdinet-s
    python docs/make_overlay.py [--model artifacts/cdinet-s] [--seed 3] [--frame 40]

Runs the real pipeline (ONNX Runtime CPU, the backend edge-mm-run picks here) for `--frame` + 1
frames, so the FPS, latency and stage times drawn on the frame are the run's own.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_mm.artifact import Artifact  # noqa: E402
from runtime.backends.select import select_backend  # noqa: E402
from runtime.pipeline import Pipeline, save_snapshot  # noqa: E402
from runtime.saliency import SaliencyModel  # noqa: E402
from runtime.sources import open_source  # noqa: E402
from runtime.stages.saliency import SaliencyStage  # noqa: E402
from runtime.stats import PipelineStats  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(ROOT / "artifacts" / "cdinet-s"))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--frame", type=int, default=40)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "overlay.png")
    args = parser.parse_args()

    selection = select_backend(Artifact(args.model), "auto", "auto")
    with selection.backend:
        model = SaliencyModel(selection.backend)
        model.warm_up()
        stats = PipelineStats()
        label = f"{selection.label} | {model.spec.name} demo weights"
        picked = []
        source = open_source(f"synthetic:{args.seed}", count=args.frame + 1)
        stage = SaliencyStage(model, label=label)
        pipeline = Pipeline(
            source,
            [stage],
            [],
            stats,
            max_frames=args.frame + 1,
            render_lines=lambda: stats.overlay_lines()[:2],
            on_result=lambda r: picked.append(r) if r.frame.index == args.frame else None,
        )
        pipeline.run()
        source.close()
    with tempfile.TemporaryDirectory() as tmp:
        overlay = next(
            p for p in save_snapshot(picked[0], Path(tmp), "frame", stages=[stage]) if p.name.endswith("-overlay.png")
        )
        shutil.copyfile(overlay, args.out)
    print(
        f"wrote {args.out} (frame {args.frame} of synthetic:{args.seed}, IoU {picked[0].metrics['iou_vs_ground_truth']:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
