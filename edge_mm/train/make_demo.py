"""Package a CDINet training run as shipped demo weights: <name>.pth (plain fp32 state dict) + <name>.json.

    python -m edge_mm.train.make_demo --run RUN_DIR --name cdinet-s [--test-seed 3 --test-count 200]

The JSON holds what a user of the weights needs: the variant, the preprocessing spec (the
runtime and export read it), the recipe and its deviations from the authors', the training data,
and metrics measured here with edge-mm-eval on held-out synthetic scenes, for the trained and
for the untrained (same-seed initial) model, plus a small regression check the tests re-run.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from edge_mm.checkpoint import checkpoint_meta, read_checkpoint_file
from edge_mm.cli_support import CliParser, run_cli
from edge_mm.errors import UsageError
from edge_mm.hashing import sha256_file
from edge_mm.registry import WEIGHTS_DIR
from edge_mm.train.common import BEST, METRICS, write_json

OFFICIAL_RECIPE = {
    "input": "256x256",
    "optimizer": "Adam lr 1e-4, no weight decay",
    "schedule": "x0.2 at epochs 40, 80, 120",
    "epochs": 120,
    "batch_size": 4,
    "grad_clamp": "element-wise 0.5",
    "loss": "BCE with logits, soft GT",
    "augmentation": "flip none/LR/TB 1/3 each, rotation p=0.2 in [-15, 14] deg bicubic",
    "init": "ImageNet VGG16 in both streams",
    "data": "NJU2K + NLPR (+ DUT) train, 2185-2985 pairs",
}


def _evaluate(argv: List[str]) -> Dict[str, Any]:
    from edge_mm.evaluate.cli import main as eval_main

    with tempfile.TemporaryDirectory() as tmp:
        code = eval_main(["cdinet", *argv, "--out", tmp, "--quiet"])
        if code != 0:
            raise UsageError(f"edge-mm-eval {' '.join(argv)} failed with exit code {code}")
        return json.loads((Path(tmp) / "metrics.json").read_text())["metrics"]


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = CliParser(prog="python -m edge_mm.train.make_demo", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="edge-mm-train output folder (best.pth, metrics.json)")
    parser.add_argument("--name", default="cdinet-s")
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--test-seed", type=int, default=3)
    parser.add_argument("--test-count", type=int, default=200)
    parser.add_argument("--check-count", type=int, default=16, help="scenes of the regression check the tests re-run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-minutes", type=float, default=None, help="wall-clock training time to record")
    parser.add_argument("--notes", default="", help="free text recorded in the JSON (e.g. recipe deviations)")
    args = parser.parse_args(argv)

    best = read_checkpoint_file(args.run / BEST)
    meta = checkpoint_meta(best, str(args.run / BEST))
    run_metrics = json.loads((args.run / METRICS).read_text())
    config = meta["config"]
    train_seed, val_seed = meta["train_data"].get("seed"), meta["val_data"].get("seed")
    if args.test_seed in (train_seed, val_seed):
        raise UsageError(f"--test-seed {args.test_seed} was used for training or validation; pick an unseen seed")

    weights = args.out_dir / f"{args.name}.pth"
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in best["model"].items()}
    from edge_mm.atomic import atomic_path

    with atomic_path(weights) as tmp:
        torch.save(state, tmp)

    scene = [str(v) for v in config["scene_size"]]
    common = ["--scene-size", *scene, "--threads", str(args.threads), "--batch-size", "8"]
    test = ["--data", f"synthetic:{args.test_seed}", "--count", str(args.test_count), *common]
    check = ["--data", f"synthetic:{args.test_seed}", "--count", str(args.check_count), *common]
    # the sidecar JSON must exist for the demo path to pick up the spec; write a first version
    record: Dict[str, Any] = {"variant": meta["variant"], "width": meta["width"], "preprocess": meta["preprocess"]}
    write_json(weights.with_suffix(".json"), record)
    trained = _evaluate(["--weights", str(weights), "--variant", meta["variant"], *test])
    untrained = _evaluate(
        [
            "--weights",
            "random",
            "--variant",
            meta["variant"],
            "--seed",
            str(config["seed"]),
            "--size",
            str(config["size"]),
            *test,
        ]
    )
    regression = _evaluate(["--weights", str(weights), "--variant", meta["variant"], *check])

    record.update(
        {
            "format": "plain fp32 state dict of CDINet (edge_mm.cdinet.from_official(path, width))",
            "sha256": sha256_file(weights),
            "bytes": weights.stat().st_size,
            "parameters": int(sum(v.numel() for v in state.values())),
            "recipe": {
                k: config[k]
                for k in ("size", "epochs", "batch_size", "lr", "lr_step", "lr_gamma", "grad_clamp", "seed", "augment")
            },
            "init": meta["init"],
            "official_recipe": OFFICIAL_RECIPE,
            "notes": args.notes,
            "training": {
                "train_data": meta["train_data"],
                "val_data": meta["val_data"],
                "best": run_metrics.get("best"),
                "history": run_metrics.get("history"),
                "minutes": args.train_minutes,
                "torch": meta.get("torch"),
                "threads": config.get("threads"),
            },
            "test_data": {
                "kind": "synthetic",
                "seed": args.test_seed,
                "count": args.test_count,
                "scene_size": config["scene_size"],
            },
            "metrics": {"trained": trained, "untrained": untrained},
            "regression_check": {
                "seed": args.test_seed,
                "count": args.check_count,
                "scene_size": config["scene_size"],
                "mae": regression["mae"],
                "s_measure": regression["s_measure"],
            },
        }
    )
    write_json(weights.with_suffix(".json"), record)
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB) and {weights.with_suffix('.json').name}")
    for name in ("s_measure", "max_f", "mean_f", "max_e", "mean_e", "mae"):
        print(f"  {name:10s} trained {trained[name]:.4f}   untrained {untrained[name]:.4f}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
