"""The edge-mm training checkpoint: one file format for every model (torch; workstation side).

A checkpoint holds only tensors, numbers, strings, lists and dicts, so it loads with
torch.load(weights_only=True): random-number states are stored as tensors and the run's metadata
(config, preprocessing spec, history) as one JSON string. Every file is written to a temporary
name and renamed, so an interrupted run never leaves half a checkpoint.

It lives beside the models, below training and evaluation: training writes it, evaluation and the
model packages read it, and neither of those has to import the other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from edge_mm.atomic import atomic_path
from edge_mm.checkpoint_file import check_checkpoint_path, unreadable_checkpoint
from edge_mm.errors import WeightsError

CHECKPOINT_FORMAT = "edge-mm-train-checkpoint"
CHECKPOINT_VERSION = 1


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
    """torch.load(weights_only=True) with one-line WeightsErrors, in our words, for missing or unreadable files."""
    path = check_checkpoint_path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, pickled objects refused by weights_only
        raise unreadable_checkpoint(path, exc) from None


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
        "model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
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
