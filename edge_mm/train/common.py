"""What every edge-mm training loop shares: seeding, checkpoints, gradient clamping, epoch logs.

Checkpoints hold only tensors, numbers, strings, lists and dicts, so they load with
torch.load(weights_only=True): random-number states are stored as tensors and the run's
metadata (config, preprocessing spec, history) as one JSON string. Every file is written to a
temporary name and renamed, so an interrupted run never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

import numpy as np
import torch
from torch import nn

from edge_mm.atomic import atomic_path
from edge_mm.atomic import write_json as atomic_write_json
from edge_mm.errors import TrainingError, WeightsError  # noqa: F401 (TrainingError: the trainers import it from here)

CHECKPOINT_FORMAT = "edge-mm-train-checkpoint"
CHECKPOINT_VERSION = 1
LAST, BEST, METRICS = "last.pth", "best.pth", "metrics.json"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global RNG and torch, so model initialisation is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The RNG that shuffles epoch `epoch`: a function of (seed, epoch) only, so a resumed run
    sees the same order as an uninterrupted one without replaying earlier epochs."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


def clamp_gradients(parameters: Iterable[nn.Parameter], value: float) -> None:
    """Clamp every gradient element to [-value, value] (value clipping, not norm clipping),
    as the CDINet authors' `clip_gradient` does."""
    torch.nn.utils.clip_grad_value_(parameters, value)


# --------------------------------------------------------------------------- checkpoints


def rng_state() -> Dict[str, torch.Tensor]:
    return {"torch": torch.get_rng_state()}


def restore_rng_state(state: Mapping) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])


def save_checkpoint(path: Union[str, Path], checkpoint: Dict[str, Any]) -> Path:
    """torch.save to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def read_checkpoint_file(path: Union[str, Path]) -> Any:
    """torch.load(weights_only=True) with one-line WeightsErrors for missing or unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist; pass the path of a .pth file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, pickled objects refused by weights_only
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot read checkpoint {path} ({reason[:160]}); pass an intact .pth file") from None


def is_training_checkpoint(data: Any) -> bool:
    return isinstance(data, Mapping) and data.get("format") == CHECKPOINT_FORMAT


def checkpoint_meta(data: Mapping, label: str) -> Dict[str, Any]:
    """The metadata dict of a training checkpoint (its JSON string decoded)."""
    if not isinstance(data.get("model"), Mapping) or not isinstance(data.get("meta_json"), str):
        raise WeightsError(
            f"{label} is an edge-mm training checkpoint without 'model' or 'meta_json'; it is damaged, use another one"
        )
    try:
        meta = json.loads(data["meta_json"])
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{label} has unreadable metadata ({exc.msg}); use another checkpoint") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{label} metadata is not a JSON object; use another checkpoint")
    return meta


def make_checkpoint(
    model: nn.Module,
    epoch: int,
    meta: Dict[str, Any],
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    best: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """A weights_only-loadable checkpoint: model (+ optimizer, scheduler, RNG for resuming)."""
    checkpoint: Dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "epoch": int(epoch),
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "meta_json": json.dumps(meta, sort_keys=True),
        "best_json": json.dumps(best or {}, sort_keys=True),
    }
    if optimizer is not None:
        checkpoint["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        checkpoint["scheduler"] = scheduler.state_dict()
    if optimizer is not None or scheduler is not None:
        checkpoint["rng"] = rng_state()
    return checkpoint


def write_json(path: Union[str, Path], data: Any) -> Path:
    return atomic_write_json(path, data, indent=2, sort_keys=True)


def file_sha256(path: Union[str, Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def set_threads(threads: Optional[int]) -> None:
    """Pin torch's intra-op threads (a busy shared CPU runs faster with fewer spinning threads)."""
    if threads:
        torch.set_num_threads(int(threads))
        os.environ.setdefault("OMP_NUM_THREADS", str(int(threads)))


def worker_init(_worker_id: int) -> None:
    """DataLoader workers: one thread each, so workers and the training step do not oversubscribe."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
