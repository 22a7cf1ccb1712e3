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
from last.pth at the next epoch with the recorded settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from edge_mm.errors import UsageError, WeightsError
from edge_mm.evaluate.cdinet import evaluate_model
from edge_mm.evaluate.metrics import QuickMetrics
from edge_mm.evaluate.sources import (
    SYNTHETIC,
    FolderSource,
    SyntheticSource,
    open_folder,
    parse_data_arg,
    split_indices,
)
from edge_mm.rgbd import RgbdPreprocess
from edge_mm.train.common import (
    BEST,
    LAST,
    METRICS,
    TrainingError,
    checkpoint_meta,
    clamp_gradients,
    epoch_generator,
    is_training_checkpoint,
    make_checkpoint,
    read_checkpoint_file,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
    set_threads,
    worker_init,
    write_json,
)
from edge_mm.train.data import RgbdTrainingSet

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


# --------------------------------------------------------------------------- model


def he_initialise(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan_out, ReLU) convolutions with zero biases, as torchvision initialises VGG."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def initial_model(variant: str, seed: int, vgg16: Optional[str] = None) -> nn.Module:
    """The model a run starts from: seeded He init, then ImageNet VGG16 streams if a file is given."""
    from edge_mm.cdinet.model import build
    from edge_mm.cdinet.weights import load_vgg16_imagenet

    seed_everything(seed)
    model = he_initialise(build(variant))
    if vgg16:
        load_vgg16_imagenet(model, vgg16)
    return model


def official_lr_factor(step: int, gamma: float):
    """lr multiplier of 0-based epoch e: gamma ** ((e + 1) // step), the authors' adjust_lr(epoch=e+1)."""
    return lambda epoch: gamma ** ((epoch + 1) // step)


# --------------------------------------------------------------------------- data


def build_sources(config: TrainConfig, spec: RgbdPreprocess):
    """(train source, validation source, description) for the config's --data / --val-data."""
    data = parse_data_arg(config.data)
    if data.kind == SYNTHETIC:
        seed = config.train_seed if data.seed is None else data.seed
        train = SyntheticSource(seed, config.train_count, spec, scene_size=tuple(config.scene_size))
        if config.val_data is None:
            val = SyntheticSource(config.val_seed, config.val_count, spec, scene_size=tuple(config.scene_size))
            if val.seed == train.seed:
                raise UsageError(f"training and validation both use synthetic seed {seed}; choose another --val-seed")
            return train, val
    else:
        dataset = open_folder(data.path, spec, config.depth_near_is_bright)
        if config.val_data is None:
            train_idx, val_idx = split_indices(len(dataset), config.val_fraction, config.seed)
            return FolderSource(dataset, train_idx), FolderSource(dataset, val_idx)
        train = FolderSource(dataset)
    val_arg = parse_data_arg(config.val_data)
    if val_arg.kind == SYNTHETIC:
        val = SyntheticSource(
            config.val_seed if val_arg.seed is None else val_arg.seed, config.val_count, spec, tuple(config.scene_size)
        )
    else:
        val = FolderSource(open_folder(val_arg.path, spec, config.depth_near_is_bright))
    return train, val


# --------------------------------------------------------------------------- the loop


def _progress(enabled: bool) -> Optional[bool]:
    return None if enabled else True  # tqdm: None = show on a terminal only


def _meta(config: TrainConfig, spec: RgbdPreprocess, train, val, history: List[Dict[str, Any]]) -> Dict[str, Any]:
    from edge_mm.cdinet.model import VARIANTS

    return {
        "kind": MODEL_KIND,
        "variant": config.variant,
        "width": VARIANTS[config.variant],
        "config": dataclasses.asdict(config),
        "preprocess": spec.to_dict(),
        "train_data": train.describe(),
        "val_data": val.describe(),
        "init": "imagenet-vgg16" if config.vgg16 else "scratch (He normal, seed %d)" % config.seed,
        "history": history,
        "torch": torch.__version__,
    }


def _resume_state(out: Path, config: TrainConfig) -> Dict[str, Any]:
    path = out / LAST
    if not path.is_file():
        raise UsageError(f"--resume: {path} does not exist; start without --resume or pass the --out of an earlier run")
    data = read_checkpoint_file(path)
    if not is_training_checkpoint(data) or not all(k in data for k in ("optimizer", "scheduler", "rng")):
        raise WeightsError(f"{path} is not an edge-mm-train last.pth with optimizer state; it cannot be resumed")
    meta = checkpoint_meta(data, str(path))
    recorded = meta.get("config", {})
    changed = [k for k in RECIPE_KEYS if k in recorded and _normal(recorded[k]) != _normal(getattr(config, k))]
    if meta.get("kind") != MODEL_KIND or changed:
        shown = ", ".join(f"{k}: {recorded.get(k)!r} -> {getattr(config, k)!r}" for k in changed[:4])
        raise UsageError(
            f"--resume: {path} was trained with other settings ({shown}); repeat the original options or use a new --out"
        )
    return {"checkpoint": data, "meta": meta}


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _print(message: str) -> None:
    print(message, flush=True)  # flushed: a nohup'd run's log shows each line as it happens


def train(config: TrainConfig, out: Path, resume: bool = False, progress: bool = True, log=_print) -> Dict[str, Any]:
    """Run (or continue) a training run into `out`; returns the final metrics.json content."""
    config.check()
    set_threads(config.threads)
    out = Path(out)
    spec = RgbdPreprocess(size=(config.size, config.size))
    train_source, val_source = build_sources(config, spec)
    if not resume and (out / LAST).exists():
        raise UsageError(f"{out / LAST} exists; pass --resume to continue that run or choose another --out")

    # a resumed run overwrites the weights anyway, so it needs no VGG16 file
    model = initial_model(config.variant, config.seed, None if resume else config.vgg16)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, official_lr_factor(config.lr_step, config.lr_gamma))
    history: List[Dict[str, Any]] = []
    best: Dict[str, Any] = {}
    start_epoch = 0
    if resume:
        state = _resume_state(out, config)
        checkpoint = state["checkpoint"]
        from edge_mm.cdinet.weights import load_strict

        load_strict(model, checkpoint["model"], str(out / LAST), f"CDINet {config.variant}")
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        restore_rng_state(checkpoint["rng"])
        history = list(state["meta"].get("history", []))
        best = json.loads(checkpoint.get("best_json", "{}"))
        start_epoch = int(checkpoint["epoch"])
        log(f"resuming {out / LAST} after epoch {start_epoch} of {config.epochs}")
        if start_epoch >= config.epochs:
            log(f"nothing to do: the run already has {start_epoch} epochs (raise --epochs to train longer)")

    dataset = RgbdTrainingSet(train_source, spec, seed=config.seed, augment=config.augment)
    criterion = nn.BCEWithLogitsLoss()
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"training {config.variant} ({n_params:,} parameters) at {config.size}x{config.size} on "
        f"{len(train_source)} samples ({train_source.describe()['kind']}), validating on {len(val_source)}; out: {out}"
    )

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        dataset.set_epoch(epoch)
        order = torch.randperm(len(dataset), generator=epoch_generator(config.seed, epoch)).tolist()
        loader = DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=order,
            num_workers=config.workers,
            worker_init_fn=worker_init if config.workers else None,
            drop_last=False,
        )
        lr = optimizer.param_groups[0]["lr"]
        total, seen = 0.0, 0
        log_every = max(1, len(loader) // 10)
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=_progress(progress), leave=False
        )
        for batch, (rgb, depth, gt) in enumerate(bar, start=1):
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(rgb, depth), gt)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"the loss became {loss.item()} in epoch {epoch + 1}; lower --lr or check the data for NaN/inf"
                )
            loss.backward()
            clamp_gradients(model.parameters(), config.grad_clamp)
            optimizer.step()
            total += loss.item() * rgb.shape[0]
            seen += rgb.shape[0]
            bar.set_postfix(loss=f"{total / seen:.4f}", lr=f"{lr:.1e}")
            if progress and bar.disable and batch % log_every == 0:  # no terminal (a log file): a line per 10%
                log(
                    f"  epoch {epoch + 1}: {batch}/{len(loader)} batches, loss {total / seen:.4f}, {time.perf_counter() - started:.0f}s"
                )
        bar.close()
        scheduler.step()
        train_seconds = time.perf_counter() - started

        val = evaluate_model(
            model, val_source, spec, QuickMetrics(), config.batch_size, progress=progress, desc="validate"
        )
        entry = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": total / max(seen, 1),
            "val_mae": val["mae"],
            "val_s_measure": val["s_measure"],
            "train_seconds": round(train_seconds, 2),
            "seconds": round(time.perf_counter() - started, 2),
        }
        history.append(entry)
        improved = not best or val["mae"] < best["val_mae"]
        if improved:
            best = {"epoch": epoch + 1, "val_mae": val["mae"], "val_s_measure": val["s_measure"]}
        meta = _meta(config, spec, train_source, val_source, history)
        if improved:
            save_checkpoint(out / BEST, make_checkpoint(model, epoch + 1, meta, best=best))
        save_checkpoint(out / LAST, make_checkpoint(model, epoch + 1, meta, optimizer, scheduler, best))
        write_json(out / METRICS, dict(meta, best=best))
        log(
            f"epoch {epoch + 1}/{config.epochs}  lr {lr:.2e}  loss {entry['train_loss']:.4f}  "
            f"val MAE {val['mae']:.4f}  S {val['s_measure']:.4f}  {entry['seconds']:.0f}s"
            + ("  *best" if improved else "")
        )

    summary = dict(_meta(config, spec, train_source, val_source, history), best=best)
    if start_epoch < config.epochs:
        write_json(out / METRICS, summary)
    return summary


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
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
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
    return TrainConfig(
        variant=args.variant,
        data=args.data,
        val_data=args.val_data,
        val_fraction=args.val_fraction,
        train_seed=args.train_seed,
        val_seed=args.val_seed,
        train_count=args.train_count,
        val_count=args.val_count,
        scene_size=[int(v) for v in args.scene_size],
        size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_step=args.lr_step,
        lr_gamma=args.lr_gamma,
        grad_clamp=args.grad_clamp,
        seed=args.seed,
        vgg16=args.vgg16,
        depth_near_is_bright=not args.depth_far_is_bright,
        augment=not args.no_augment,
        workers=args.workers,
        threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    summary = train(config_from_args(args), args.out, resume=args.resume, progress=not args.quiet)
    best = summary.get("best") or {}
    if best:
        print(
            f"best epoch {best['epoch']}: val MAE {best['val_mae']:.4f}, S {best['val_s_measure']:.4f}; weights in {args.out / BEST}"
        )
    return 0
