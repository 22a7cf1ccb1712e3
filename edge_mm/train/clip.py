"""Training CLIP: `edge-mm-train clip --data PAIRS.jsonl|synthetic[:SEED] ...`.

The objective is CLIP's (Radford et al. 2021, Fig. 3): L2-normalised image and text embeddings,
logits = exp(t) x cosine for every image-caption pair in the batch, and the mean of the
cross-entropies over rows (image -> text) and columns (text -> image). The temperature is learned:
`logit_scale` t starts at log(1 / 0.07) and is clamped to [0, log 100] after every step, so the
logits are never scaled by more than 100 (the paper's clip; open_clip clamps the same way).

Optimisation: AdamW (betas 0.9 / 0.98, eps 1e-6, as the paper) with decoupled weight decay on
matrices only (not on gains, biases, class/positional vectors of rank 1, or logit_scale); linear
warmup then cosine decay, per step; optional gradient-norm clipping. The 49,408-row token table is
the exception: captions use a few hundred of its rows, so it has sparse gradients and SparseAdam
(same lr schedule, no weight decay) updates only the rows a batch used. A dense AdamW step over
the whole table would cost more than the forward pass of a small model on a CPU.

Speed: a caption's embedding is read at its end token, and the text transformer is causal, so the
tokens after the longest caption's end token cannot change any embedding. Training runs the text
tower on the batch's used length only (`encode_text_trimmed`, equal to `model.encode_text`; a test
checks it); exported models always take the full 77 tokens.

Models: `--config tiny|small` from scratch (edge_mm.clip.model.SCRATCH_CONFIGS, OpenAI initialisation,
seeded) or `--init NAME|PATH` (published weights or a state-dict file, loaded strictly by
edge_mm.clip.load) to fine-tune; edge_mm.clip.weights.initial_model picks one.

The loop (resume, epochs, progress, validation, checkpoints, several processes) is edge_mm.train.loop;
this module keeps what is CLIP's: the loss over features gathered from every process (so the
negatives are global), the optimizers, the per-step schedule and the temperature clamp.
Images go through `ClipPreprocess.for_resolution(model.image_resolution)`, the runtime's own
preprocessing. Optional light augmentation: a random crop of 85-100 % of the side and brightness
and contrast within +-10 %; never a flip, since captions say left and right.

Output folder: last.pth (model, both optimizers, step, RNG, history), best.pth (model + metadata;
best mean recall on the held-out split), metrics.json, and clip.pt: the best weights as a plain
OpenAI-named state dict, which `edge_mm.clip.load` and `python -m export.build_engine --weights`
read. Every file is written atomically and loads with torch.load(weights_only=True).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from edge_mm.clip.model import CONTEXT_LENGTH, SCRATCH_CONFIGS
from edge_mm.clip.preprocess import ClipPreprocess, preprocess_batch
from edge_mm.clip.tokenizer import tokenize
from edge_mm.clip.weights import initial_model, save_plain_weights
from edge_mm.errors import DatasetError, UsageError, WeightsError
from edge_mm.train import loop
from edge_mm.train.clip_data import SYNTHETIC, CaptionedScenes, PairsFile, split_pairs
from edge_mm.train.clip_eval import evaluate_retrieval
from edge_mm.train.loop import Task, print_flushed
from edge_mm.train.loop import train as run_training

MODEL_KIND = "clip"
PLAIN_WEIGHTS = "clip.pt"
INIT_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0
DEFAULT_TRAIN_SEED, DEFAULT_VAL_SEED = 1, 2  # synthetic scene seeds: disjoint scene sets

# Settings that define a run: a resume must repeat them (epochs too: the cosine schedule spans them).
RECIPE_KEYS = (
    "config",
    "init",
    "data",
    "val_data",
    "val_fraction",
    "train_seed",
    "val_seed",
    "train_count",
    "val_count",
    "scene_size",
    "crop_fraction",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup_steps",
    "grad_clip",
    "seed",
    "augment",
)


@dataclasses.dataclass
class TrainConfig:
    """Defaults: phase 1 of the demo recipe (docs/clip_training.md)."""

    config: str = "small"
    init: Optional[str] = None
    data: str = SYNTHETIC
    val_data: Optional[str] = None
    val_fraction: float = 0.1
    train_seed: int = DEFAULT_TRAIN_SEED
    val_seed: int = DEFAULT_VAL_SEED
    train_count: int = 10000
    val_count: int = 250
    scene_size: List[int] = dataclasses.field(default_factory=lambda: [128, 128])
    crop_fraction: float = 0.2
    epochs: int = 8
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    augment: bool = False
    threads: Optional[int] = None

    def check(self) -> None:
        if self.init is None and self.config not in SCRATCH_CONFIGS:
            raise UsageError(
                f"unknown --config {self.config!r}; choose one of {', '.join(SCRATCH_CONFIGS)} or pass --init"
            )
        for name in ("epochs", "batch_size", "train_count", "val_count"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)} must be >= 1")
        if self.batch_size < 2:
            raise UsageError(
                "--batch-size must be >= 2: the contrastive loss needs other pairs in the batch as negatives"
            )
        if (
            not (self.lr > 0 and math.isfinite(self.lr))
            or self.weight_decay < 0
            or self.warmup_steps < 0
            or self.grad_clip < 0
        ):
            raise UsageError("--lr must be positive and --weight-decay, --warmup-steps, --grad-clip >= 0")
        if not 0.0 <= self.crop_fraction <= 1.0:
            raise UsageError(f"--crop-fraction {self.crop_fraction} must be in [0, 1]")
        if (
            _is_synthetic(self.data)
            and self.val_data is None
            and _synthetic_seed(self.data, self.train_seed) == self.val_seed
        ):
            raise UsageError(
                f"training and validation both use synthetic seed {self.val_seed}; pass a different --val-seed"
            )

    def recipe(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: data[k] for k in RECIPE_KEYS}


# --------------------------------------------------------------------------- model


def model_config(model) -> Dict[str, Any]:
    from edge_mm.clip.model import clip_config_from_state_dict

    return clip_config_from_state_dict(model.state_dict())


def contrastive_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss: pair i is the right answer for row i and for column i."""
    labels = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.t(), labels)) / 2


@torch.no_grad()
def clamp_logit_scale(model, max_scale: float = MAX_LOGIT_SCALE) -> None:
    """Keep exp(logit_scale) in [1, max_scale] (the paper clips the scale at 100)."""
    model.logit_scale.clamp_(0.0, math.log(max_scale))


def encode_text_trimmed(model, text: torch.Tensor) -> torch.Tensor:
    """`model.encode_text` computed on the first L tokens only, L = the batch's last end token + 1.

    The causal mask keeps every position from seeing later ones, and the embedding is read at the
    end token, so dropping the padding after it changes nothing but the cost.
    """
    used = int(model.eot_positions(text).max()) + 1
    ids = text[:, :used]
    x = model.token_embedding(ids).to(model.dtype) + model.positional_embedding[:used].to(model.dtype)
    mask = torch.full((used, used), float("-inf"), dtype=x.dtype, device=x.device).triu_(1)
    x = model.transformer(x.permute(1, 0, 2), mask).permute(1, 0, 2)
    x = model.ln_final(x).to(model.dtype)
    index = model.eot_positions(ids).to(torch.int64)[:, None, None].expand(-1, 1, x.shape[-1])
    return x.gather(1, index).squeeze(1) @ model.text_projection


class ClipFeatures(nn.Module):
    """The training forward: unit image and text features (text on the trimmed tower) and exp(t).

    One module, so that DistributedDataParallel sees every parameter used in its forward.
    """

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, text: torch.Tensor):
        image_features = F.normalize(self.model.encode_image(images), dim=-1)
        text_features = F.normalize(encode_text_trimmed(self.model, text), dim=-1)
        return image_features, text_features, self.model.logit_scale.exp()


def make_optimizers(model, config: TrainConfig) -> Tuple[torch.optim.AdamW, torch.optim.SparseAdam]:
    """AdamW (decay on matrices, none on rank<2 parameters) and SparseAdam for the token table."""
    model.token_embedding.sparse = True  # training-time only; not part of the state dict
    table = model.token_embedding.weight
    decay, no_decay = [], []
    for _name, param in model.named_parameters():
        if param is table:
            continue
        (decay if param.ndim >= 2 else no_decay).append(param)
    adamw = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    sparse = torch.optim.SparseAdam([table], lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    return adamw, sparse


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 0 at `total` (step counts from 0)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


# --------------------------------------------------------------------------- data


def _is_synthetic(text: str) -> bool:
    return text == SYNTHETIC or text.startswith(SYNTHETIC + ":")


def _synthetic_seed(text: str, default: int) -> int:
    if text == SYNTHETIC:
        return default
    try:
        seed = int(text[len(SYNTHETIC) + 1 :])
    except ValueError:
        raise UsageError(f"--data {text!r}: the seed after 'synthetic:' must be an integer, e.g. synthetic:3") from None
    if seed < 0:
        raise UsageError(f"--data {text!r}: the seed must be >= 0")
    return seed


def build_sources(config: TrainConfig, progress: bool = False):
    """(train source, validation source) for --data / --val-data."""
    size = (int(config.scene_size[0]), int(config.scene_size[1]))
    if _is_synthetic(config.data):
        train = CaptionedScenes(
            _synthetic_seed(config.data, config.train_seed),
            config.train_count,
            size,
            config.crop_fraction,
            progress=progress,
        )
    else:
        pairs = PairsFile(config.data)
        if config.val_data is None:
            train, val = split_pairs(pairs, config.val_fraction, config.seed)
            return train, val
        train = pairs
    if config.val_data is None:
        return train, CaptionedScenes(config.val_seed, config.val_count, size, progress=progress)
    if _is_synthetic(config.val_data):
        return train, CaptionedScenes(
            _synthetic_seed(config.val_data, config.val_seed), config.val_count, size, progress=progress
        )
    return train, PairsFile(config.val_data)


def augment(bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop of 85-100 % of each side and brightness/contrast within +-10 %; no flips."""
    height, width = bgr.shape[:2]
    scale = rng.uniform(0.85, 1.0)
    h, w = max(1, int(round(height * scale))), max(1, int(round(width * scale)))
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    crop = bgr[top : top + h, left : left + w].astype(np.float32)
    contrast, brightness = rng.uniform(0.9, 1.1), rng.uniform(-0.1, 0.1) * 255
    mean = crop.mean()
    return np.clip((crop - mean) * contrast + mean + brightness, 0, 255).astype(np.uint8)


class PairSamples(Dataset):
    """(pixels, token ids) of a source's pairs: captions and crops drawn per (seed, epoch, index).

    Call set_epoch(e) before each epoch's DataLoader is built.
    """

    def __init__(self, source, spec: ClipPreprocess, seed: int, augment: bool, context_length: int = CONTEXT_LENGTH):
        self.source, self.spec, self.seed, self.augment = source, spec, int(seed), augment
        self.context_length = context_length
        self.epoch = 0
        self._whole: Dict[int, np.ndarray] = {}  # preprocessed whole scenes, reused across epochs

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def _draw(self, index: int, rng: np.random.Generator) -> Tuple[np.ndarray, str]:
        if self.augment:
            image, caption = self.source.read(index, rng)
            return preprocess_batch([augment(image, rng)], self.spec)[0], caption
        if isinstance(self.source, CaptionedScenes):
            image, caption, whole = self.source.draw(index, rng)
            if whole:  # the same pixels every epoch: preprocess once
                if index not in self._whole:
                    self._whole[index] = preprocess_batch([image], self.spec)[0]
                return self._whole[index], caption
        else:
            image, caption = self.source.read(index, rng)
        return preprocess_batch([image], self.spec)[0], caption

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image, caption = self._draw(index, np.random.default_rng([self.seed, self.epoch, index]))
        ids = tokenize([caption], context_length=self.context_length, truncate=True)[0]
        return torch.from_numpy(image), torch.from_numpy(ids)


# --------------------------------------------------------------------------- what CLIP adds to the loop


def _model_from_checkpoint(state: Dict[str, torch.Tensor], label: str):
    """The CLIP whose weights a training checkpoint holds, loaded strictly."""
    from edge_mm.clip.model import build_model

    try:
        return build_model(state)
    except WeightsError as exc:
        raise WeightsError(f"{label}: {exc}") from None


def _score(val: Dict[str, float]) -> float:
    """Model selection: mean of R@1 and R@5 in both directions."""
    return (val["t2i_r1"] + val["t2i_r5"] + val["i2t_r1"] + val["i2t_r5"]) / 4


RECALLS = ("t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5")


class ClipTask(Task):
    """CLIP's symmetric loss over the global batch, AdamW + SparseAdam, warmup-cosine lr per step,
    the temperature clamped after every step, best.pth by mean recall, clip.pt beside it."""

    kind = MODEL_KIND
    recipe_keys = RECIPE_KEYS
    resume_keys = ("optimizer", "sparse_optimizer", "step")
    drop_last = True  # every step sees a full batch of negatives

    def build(self, checkpoint, processes, progress) -> None:
        config = self.config
        # a resumed run takes its architecture and weights from last.pth (no --init download again)
        if checkpoint is not None:
            model = _model_from_checkpoint(checkpoint["model"], "last.pth")
        else:
            model = initial_model(config.config, config.init, config.seed)
        self.spec = ClipPreprocess.for_resolution(model.image_resolution)
        self.train_source, self.val_source = build_sources(config, progress)
        if len(self.train_source) < 2:
            raise DatasetError(
                f"the training set has {len(self.train_source)} pair; the contrastive loss needs at least 2"
            )
        self.batch_size = min(config.batch_size, len(self.train_source))
        if self.batch_size % processes.world:
            raise UsageError(
                f"the global batch of {self.batch_size} pairs cannot be split over {processes.world} processes; "
                "pass a --batch-size that is a multiple of the process count"
            )
        self.steps_per_epoch = len(self.train_source) // self.batch_size  # the last partial batch is dropped
        self.total_steps = self.steps_per_epoch * config.epochs
        self.warmup = min(config.warmup_steps, self.total_steps // 2)
        self.model = model.to(self.device)
        self.adamw, self.sparse = make_optimizers(self.model, config)
        self.table = self.model.token_embedding.weight
        if processes.world > 1:
            # DDP all-reduces dense gradients (NCCL has no sparse all-reduce); the table's averaged
            # gradient is made row-sparse again before SparseAdam's step (optimizer_step)
            self.model.token_embedding.sparse = False
        self.dense_params = [p for p in self.model.parameters() if p is not self.table]
        self.samples = PairSamples(self.train_source, self.spec, config.seed, config.augment, self.model.context_length)
        self.lr = config.lr * lr_factor(0, self.warmup, self.total_steps)

    def restore(self, checkpoint) -> None:
        self.adamw.load_state_dict(checkpoint["optimizer"])
        self.sparse.load_state_dict(checkpoint["sparse_optimizer"])

    def training_module(self) -> nn.Module:
        return ClipFeatures(self.model)

    def start_line(self, out: Path) -> str:
        return (
            f"training CLIP ({sum(p.numel() for p in self.model.parameters()):,} parameters, {self.spec.image_size} px) on "
            f"{len(self.train_source)} pairs ({self.train_source.describe()['kind']}), {self.steps_per_epoch} steps of "
            f"{self.batch_size} per epoch, validating on {len(self.val_source)}; out: {out}"
        )

    def train_dataset(self, epoch: int) -> PairSamples:
        self.samples.set_epoch(epoch)
        return self.samples

    def before_step(self, step: int) -> None:
        self.lr = self.config.lr * lr_factor(step, self.warmup, self.total_steps)
        for group in self.adamw.param_groups + self.sparse.param_groups:
            group["lr"] = self.lr

    def loss(self, net, batch, global_count, processes):
        images, text = batch
        image_features, text_features, scale = net(images, text)
        # negatives are global: every process scores all images against all captions of the global
        # batch; its own rows carry gradients, and the temperature's gradient is counted once
        image_all, text_all = processes.gather(image_features), processes.gather(text_features)
        loss = contrastive_loss(processes.counted_once(scale) * image_all @ text_all.t())
        return loss, loss.detach() / processes.world

    def zero_grad(self) -> None:
        self.adamw.zero_grad(set_to_none=True)
        self.sparse.zero_grad(set_to_none=True)

    def optimizer_step(self) -> None:
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.dense_params, self.config.grad_clip)
        if self.table.grad is not None and not self.table.grad.is_sparse:
            self.table.grad = self.table.grad.to_sparse(1)  # the rows the global batch used
        self.adamw.step()
        self.sparse.step()
        clamp_logit_scale(self.model)

    def postfix(self) -> Dict[str, str]:
        return {"scale": f"{self.model.logit_scale.exp().item():.1f}", "lr": f"{self.lr:.1e}"}

    def epoch_fields(self) -> Dict[str, Any]:
        return {"lr": self.lr, "logit_scale": round(float(self.model.logit_scale.detach().exp()), 3)}

    def validate(self, progress: bool) -> Dict[str, Any]:
        return evaluate_retrieval(self.model, self.val_source, self.spec)

    def val_fields(self, val):
        return {k: val[k] for k in RECALLS}

    def score(self, val) -> float:
        return _score(val)

    def best_fields(self, val):
        return self.val_fields(val)

    def meta(self) -> Dict[str, Any]:
        return {
            "model": model_config(self.model),
            "parameters": int(sum(p.numel() for p in self.model.parameters())),
            "preprocess": self.spec.to_dict(),
            "train_data": self.train_source.describe(),
            "val_data": self.val_source.describe(),
            "init": self.config.init or f"scratch ({self.config.config}, OpenAI init, seed {self.config.seed})",
        }

    def optimizer_state(self) -> Dict[str, Any]:
        return {"optimizer": self.adamw.state_dict(), "sparse_optimizer": self.sparse.state_dict()}

    def on_best(self, out: Path) -> None:
        save_plain_weights(self.model, out / PLAIN_WEIGHTS)

    def epoch_line(self, entry, val) -> str:
        return (
            f"epoch {entry['epoch']}/{self.config.epochs}  loss {entry['train_loss']:.4f}  scale {entry['logit_scale']:.1f}  "
            f"val t2i R@1 {val['t2i_r1']:.3f} R@5 {val['t2i_r5']:.3f}  i2t R@1 {val['i2t_r1']:.3f} R@5 {val['i2t_r5']:.3f}  "
            f"{entry['seconds']:.0f}s"
        )


def train(
    config: TrainConfig, out: Path, resume: bool = False, progress: bool = True, log=print_flushed
) -> Dict[str, Any]:
    """Run (or continue) a training run into `out`; returns the final metrics.json content."""
    return run_training(ClipTask(config), out, resume=resume, progress=progress, log=log)


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument(
        "--data", required=True, help='PAIRS.jsonl ({"image": PATH, "caption": TEXT} per line) or synthetic[:SEED]'
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for last.pth, best.pth, clip.pt and metrics.json"
    )
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.pth at its next epoch")
    parser.add_argument("--config", default=d.config, help=f"from-scratch model shape: {' | '.join(SCRATCH_CONFIGS)}")
    parser.add_argument(
        "--init",
        default=None,
        metavar="NAME_OR_PATH",
        help="fine-tune published weights (e.g. ViT-B/32) or a state-dict file instead",
    )
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (all processes together)")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (after warmup; cosine decay to 0)")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW decay on weight matrices")
    parser.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    parser.add_argument("--grad-clip", type=float, default=d.grad_clip, help="clip the gradient norm to this (0: off)")
    parser.add_argument("--seed", type=int, default=d.seed, help="initialisation, shuffling, caption and crop seed")
    parser.add_argument(
        "--augment", action="store_true", help="random 85-100%% crops and +-10%% brightness/contrast (never flips)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--val-data", default=None, help="validation PAIRS.jsonl or synthetic[:SEED] (default: held out from --data)"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=d.val_fraction, help="share of a PAIRS.jsonl held out for validation"
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
        "--crop-fraction",
        type=float,
        default=d.crop_fraction,
        help="share of synthetic samples that are one object's crop with its own caption",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return loop.config_from_args(TrainConfig, args)


def run(args: argparse.Namespace) -> int:
    summary = train(config_from_args(args), args.out, resume=args.resume, progress=not args.quiet)
    best = summary.get("best") or {}
    if best:
        print(
            f"best epoch {best['epoch']}: t2i R@1 {best['t2i_r1']:.3f} R@5 {best['t2i_r5']:.3f}, "
            f"i2t R@1 {best['i2t_r1']:.3f} R@5 {best['i2t_r5']:.3f}; weights in {args.out / PLAIN_WEIGHTS}"
        )
    return 0
