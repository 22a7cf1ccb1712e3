"""Training CDINet: `edge-mm-train cdinet --data DIR|synthetic ...`.

Defaults are the authors' recipe (research: cdinet.md 2.1-2.2): 256x256 input, Adam lr 1e-4
without weight decay, lr x0.2 every 40 epochs (at epochs 40, 80, 120 counted from 1, as their
`adjust_lr`), 120 epochs, batch 4, every gradient element clamped to [-0.5, 0.5],
BCE-with-logits against soft (bilinearly resized) GT, random flip + 20% small rotations.

Differences that are choices, not accidents:
- validation each epoch on a held-out set (MAE, S-measure), and best.pth by validation MAE; the
  authors saved fixed epochs and had no validation;
- without --vgg16 (ImageNet weights) the model starts from scratch with He (Kaiming) normal
  initialisation of every convolution (torchvision's VGG init): PyTorch's default init shrinks the
  signal through the 13-conv VGG streams that have no normalisation layers.

Output folder: last.pth (model, optimizer, scheduler, epoch, RNG state, best so far), best.pth
(model + metadata), metrics.json (config, spec, per-epoch history). `--resume` continues
from last.pth at the next epoch with the recorded settings, on any number of processes.

The loop is edge_mm.train.loop (shared with CLIP); CdinetTask below keeps what is CDINet's. The
initial model is edge_mm.cdinet.checkpoint.initial_model, the checkpoint format edge_mm.checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from edge_mm.cdinet.checkpoint import initial_model
from edge_mm.errors import UsageError
from edge_mm.evaluate.cdinet import evaluate_model
from edge_mm.evaluate.metrics import QuickMetrics
from edge_mm.evaluate.samples import (
    SYNTHETIC,
    FolderSamples,
    SyntheticSamples,
    open_folder,
    parse_data_arg,
    split_indices,
)
from edge_mm.rgbd import RgbdPreprocess
from edge_mm.train import loop
from edge_mm.train.common import BEST, clamp_gradients
from edge_mm.train.data import RgbdTrainingSet
from edge_mm.train.loop import Task, print_flushed
from edge_mm.train.loop import train as run_training

MODEL_KIND = "cdinet"
DEFAULT_TRAIN_SEED, DEFAULT_VAL_SEED = 1, 2  # synthetic scene seeds: disjoint scene sets
# Settings that define a run: a resume must not change them (epochs and workers may change).
RECIPE_KEYS = (
    "variant",
    "data",
    "val_data",
    "val_fraction",
    "train_seed",
    "val_seed",
    "train_count",
    "val_count",
    "scene_size",
    "size",
    "batch_size",
    "lr",
    "lr_step",
    "lr_gamma",
    "grad_clamp",
    "seed",
    "vgg16",
    "depth_near_is_bright",
    "augment",
)


@dataclasses.dataclass
class TrainConfig:
    variant: str = "cdinet"
    data: str = SYNTHETIC
    val_data: Optional[str] = None
    val_fraction: float = 0.1
    train_seed: int = DEFAULT_TRAIN_SEED
    val_seed: int = DEFAULT_VAL_SEED
    train_count: int = 2000
    val_count: int = 100
    scene_size: List[int] = dataclasses.field(default_factory=lambda: [256, 256])
    size: int = 256
    epochs: int = 120
    batch_size: int = 4
    lr: float = 1e-4
    lr_step: int = 40
    lr_gamma: float = 0.2
    grad_clamp: float = 0.5
    seed: int = 42
    vgg16: Optional[str] = None
    depth_near_is_bright: bool = True
    augment: bool = True
    workers: int = 0
    threads: Optional[int] = None

    def check(self) -> None:
        from edge_mm.cdinet.model import SIZE_MULTIPLE, VARIANTS

        if self.variant not in VARIANTS:
            raise UsageError(f"unknown --variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.size < SIZE_MULTIPLE or self.size % SIZE_MULTIPLE:
            raise UsageError(f"--size {self.size} must be a positive multiple of {SIZE_MULTIPLE} (e.g. 256, 192, 128)")
        for name in ("epochs", "batch_size", "train_count", "val_count", "lr_step"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)} must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not 0 < self.lr_gamma <= 1 or not self.grad_clamp > 0:
            raise UsageError("--lr and --grad-clamp must be positive and --lr-gamma in (0, 1]")
        if self.workers < 0:
            raise UsageError(f"--workers {self.workers} must be >= 0")
        if parse_data_arg(self.data).kind == SYNTHETIC and self.val_data is None and self.train_seed == self.val_seed:
            raise UsageError(
                f"--train-seed and --val-seed are both {self.train_seed}; use different seeds so validation scenes are unseen"
            )

    def recipe(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: data[k] for k in RECIPE_KEYS}


# --------------------------------------------------------------------------- recipe


def official_lr_factor(step: int, gamma: float):
    """lr multiplier of 0-based epoch e: gamma ** ((e + 1) // step), the authors' adjust_lr(epoch=e+1)."""
    return lambda epoch: gamma ** ((epoch + 1) // step)


# --------------------------------------------------------------------------- data


def build_sources(config: TrainConfig, spec: RgbdPreprocess):
    """(train samples, validation samples) for the config's --data / --val-data."""
    data = parse_data_arg(config.data)
    if data.kind == SYNTHETIC:
        seed = config.train_seed if data.seed is None else data.seed
        train = SyntheticSamples(seed, config.train_count, spec, scene_size=tuple(config.scene_size))
        if config.val_data is None:
            val = SyntheticSamples(config.val_seed, config.val_count, spec, scene_size=tuple(config.scene_size))
            if val.seed == train.seed:
                raise UsageError(f"training and validation both use synthetic seed {seed}; choose another --val-seed")
            return train, val
    else:
        dataset = open_folder(data.path, spec, config.depth_near_is_bright)
        if config.val_data is None:
            train_idx, val_idx = split_indices(len(dataset), config.val_fraction, config.seed)
            return FolderSamples(dataset, train_idx), FolderSamples(dataset, val_idx)
        train = FolderSamples(dataset)
    val_arg = parse_data_arg(config.val_data)
    if val_arg.kind == SYNTHETIC:
        val = SyntheticSamples(
            config.val_seed if val_arg.seed is None else val_arg.seed, config.val_count, spec, tuple(config.scene_size)
        )
    else:
        val = FolderSamples(open_folder(val_arg.path, spec, config.depth_near_is_bright))
    return train, val


# --------------------------------------------------------------------------- what CDINet adds to the loop


class CdinetTask(Task):
    """The authors' recipe: Adam, step lr per epoch, element-wise gradient clamp, BCE on soft GT."""

    kind = MODEL_KIND
    recipe_keys = RECIPE_KEYS
    resume_keys = ("optimizer", "scheduler")

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.workers = config.workers
        self.spec = RgbdPreprocess(size=(config.size, config.size))
        self.criterion = nn.BCEWithLogitsLoss()

    def build(self, checkpoint, processes, progress) -> None:
        config = self.config
        self.train_source, self.val_source = build_sources(config, self.spec)
        # a resumed run overwrites the weights anyway, so it needs no VGG16 file
        model = initial_model(config.variant, config.seed, None if checkpoint else config.vgg16)
        if checkpoint is not None:
            from edge_mm.cdinet.weights import load_strict

            load_strict(model, checkpoint["model"], "last.pth", f"CDINet {config.variant}")
        self.model = model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, official_lr_factor(config.lr_step, config.lr_gamma)
        )
        self.dataset = RgbdTrainingSet(self.train_source, self.spec, seed=config.seed, augment=config.augment)

    def restore(self, checkpoint) -> None:
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])

    def start_line(self, out: Path) -> str:
        n_params = sum(p.numel() for p in self.model.parameters())
        return (
            f"training {self.config.variant} ({n_params:,} parameters) at {self.config.size}x{self.config.size} on "
            f"{len(self.train_source)} samples ({self.train_source.describe()['kind']}), "
            f"validating on {len(self.val_source)}; out: {out}"
        )

    def train_dataset(self, epoch: int) -> RgbdTrainingSet:
        self.lr = self.optimizer.param_groups[0]["lr"]  # the epoch's lr: the schedule steps per epoch
        self.dataset.set_epoch(epoch)
        return self.dataset

    def loss(self, net, batch, global_count, processes):
        rgb, depth, gt = batch
        # the batch mean, weighted by this process's share of the global batch
        share = self.criterion(net(rgb, depth), gt) * (rgb.shape[0] / global_count)
        return share, share

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def optimizer_step(self) -> None:
        clamp_gradients(self.model.parameters(), self.config.grad_clamp)
        self.optimizer.step()

    def end_epoch(self) -> None:
        self.scheduler.step()

    def postfix(self) -> Dict[str, str]:
        return {"lr": f"{self.lr:.1e}"}

    def epoch_fields(self) -> Dict[str, Any]:
        return {"lr": self.lr}

    def validate(self, progress: bool) -> Dict[str, Any]:
        return evaluate_model(
            self.model,
            self.val_source,
            self.spec,
            QuickMetrics(),
            self.config.batch_size,
            progress=progress,
            desc="validate",
        )

    def val_fields(self, val):
        return {"val_mae": val["mae"], "val_s_measure": val["s_measure"]}

    def score(self, val) -> float:
        return -val["mae"]  # best.pth: the lowest validation MAE

    def best_fields(self, val):
        return self.val_fields(val)

    def meta(self) -> Dict[str, Any]:
        from edge_mm.cdinet.model import VARIANTS

        config = self.config
        return {
            "variant": config.variant,
            "width": VARIANTS[config.variant],
            "preprocess": self.spec.to_dict(),
            "train_data": self.train_source.describe(),
            "val_data": self.val_source.describe(),
            "init": "imagenet-vgg16" if config.vgg16 else "scratch (He normal, seed %d)" % config.seed,
        }

    def optimizer_state(self) -> Dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def epoch_line(self, entry, val) -> str:
        return (
            f"epoch {entry['epoch']}/{self.config.epochs}  lr {entry['lr']:.2e}  loss {entry['train_loss']:.4f}  "
            f"val MAE {val['mae']:.4f}  S {val['s_measure']:.4f}  {entry['seconds']:.0f}s"
        )


def train(
    config: TrainConfig, out: Path, resume: bool = False, progress: bool = True, log=print_flushed
) -> Dict[str, Any]:
    """Run (or continue) a training run into `out`; returns the final metrics.json content."""
    return run_training(CdinetTask(config), out, resume=resume, progress=progress, log=log)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--data", required=True, help="dataset folder (RGB/ depth/ GT/) or synthetic[:SEED]")
    parser.add_argument("--out", type=Path, required=True, help="folder for last.pth, best.pth and metrics.json")
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.pth at its next epoch")
    parser.add_argument(
        "--variant", default=d.variant, help="cdinet (published size) or a small variant: cdinet-s, ..."
    )
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (all processes together)")
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument(
        "--lr-step", type=int, default=d.lr_step, help="multiply the lr by --lr-gamma every this many epochs"
    )
    parser.add_argument("--lr-gamma", type=float, default=d.lr_gamma)
    parser.add_argument("--grad-clamp", type=float, default=d.grad_clamp, help="clamp each gradient element to [-v, v]")
    parser.add_argument("--size", type=int, default=d.size, help="input side in pixels, a multiple of 16")
    parser.add_argument(
        "--vgg16",
        default=None,
        metavar="PATH",
        help="torchvision ImageNet VGG16 state dict for both streams (full-width cdinet only)",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="initialisation, shuffling and augmentation seed")
    parser.add_argument("--workers", type=int, default=d.workers, help="DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--val-data", default=None, help="validation folder or synthetic[:SEED] (default: held-out part of --data)"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=d.val_fraction, help="share of a --data folder held out for validation"
    )
    parser.add_argument("--train-seed", type=int, default=d.train_seed, help="synthetic training scene seed")
    parser.add_argument(
        "--val-seed", type=int, default=d.val_seed, help="synthetic validation scene seed (must differ)"
    )
    parser.add_argument("--train-count", type=int, default=d.train_count, help="synthetic training scenes")
    parser.add_argument("--val-count", type=int, default=d.val_count, help="synthetic validation scenes")
    parser.add_argument(
        "--scene-size", type=int, nargs=2, default=d.scene_size, metavar=("H", "W"), help="synthetic scene size"
    )
    parser.add_argument(
        "--depth-far-is-bright", action="store_true", help="the folder's 8-bit depth images are bright far away"
    )
    parser.add_argument("--no-augment", action="store_true", help="switch off the random flips and rotations")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return loop.config_from_args(
        TrainConfig, args, depth_near_is_bright=not args.depth_far_is_bright, augment=not args.no_augment
    )


def run(args: argparse.Namespace) -> int:
    summary = train(config_from_args(args), args.out, resume=args.resume, progress=not args.quiet)
    best = summary.get("best") or {}
    if best:
        print(
            f"best epoch {best['epoch']}: val MAE {best['val_mae']:.4f}, S {best['val_s_measure']:.4f}; weights in {args.out / BEST}"
        )
    return 0
