"""Small helpers every edge-mm training run shares: the run folder's file names, seeding, gradient
clamping, threads. The loop itself is edge_mm.train.loop; the checkpoint format is edge_mm.checkpoint.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch
from torch import nn

from edge_mm.atomic import write_json as atomic_write_json

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


def write_json(path: Union[str, Path], data: Any) -> Path:
    return atomic_write_json(path, data, indent=2, sort_keys=True)


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
