"""Training on more than one process: `torchrun --nproc-per-node N -m edge_mm.train.cli MODEL ...`.

torchrun starts N copies of the command with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT set; `Processes.from_env()` reads them and joins the process group (gloo on the CPU,
nccl with one GPU per process). A plain `python -m edge_mm.train.cli` is one process of one.

How N processes reproduce one process on the same global batch:
- every process walks the same epoch order (a function of seed and epoch) in the same global
  batches (`--batch-size` is the global batch) and takes its own contiguous share of each one;
- DistributedDataParallel averages gradients over processes, so a loss term `x` whose gradients
  summed over processes make the global gradient is back-propagated as N * x (`Processes.scale`);
- a value every process computes from global data (CLIP's temperature on the gathered logits)
  gets its gradient counted once across processes (`Processes.counted_once`).
Only process 0 validates, writes checkpoints and logs; the others wait at a barrier.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import List, Sequence

import torch
import torch.distributed as dist
from torch import nn

from edge_mm.errors import UsageError


@dataclasses.dataclass
class Processes:
    """This process's place among the training processes, and the collective operations it needs."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.type == "cuda" else "gloo"

    @classmethod
    def from_env(cls) -> "Processes":
        """One process (no torchrun variables), or this process's rank in a torchrun group (joined here)."""
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise UsageError(
                "WORLD_SIZE, RANK and LOCAL_RANK must be integers; start several processes with torchrun"
            ) from None
        cuda = torch.cuda.is_available()
        if world <= 1:
            return cls(device=torch.device("cuda") if cuda else torch.device("cpu"))
        if cuda:
            if local_rank >= torch.cuda.device_count():
                raise UsageError(
                    f"process {rank} wants GPU {local_rank} but {torch.cuda.device_count()} are visible; "
                    "pass --nproc-per-node <= the number of GPUs"
                )
            torch.cuda.set_device(local_rank)
        processes = cls(rank, world, local_rank, torch.device("cuda", local_rank) if cuda else torch.device("cpu"))
        if not dist.is_initialized():
            # env:// reads MASTER_ADDR / MASTER_PORT; validation on process 0 may take a while
            dist.init_process_group(processes.backend, timeout=datetime.timedelta(hours=2))
            processes.owns_group = True
        return processes

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False

    # ----------------------------------------------------------------------- data

    def share(self, global_batch: Sequence[int]) -> List[int]:
        """This process's contiguous share of a global batch (sizes differ by at most one)."""
        n = len(global_batch)
        return list(global_batch[self.rank * n // self.world : (self.rank + 1) * n // self.world])

    # ----------------------------------------------------------------------- model and gradients

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel around `module` with more than one process; the module itself otherwise."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[self.local_rank] if self.device.type == "cuda" else None)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """What to back-propagate for a loss term whose gradients, summed over processes, are the
        global gradient: DDP averages over processes, so multiply by their number."""
        return loss if self.world == 1 else loss * self.world

    def counted_once(self, value: torch.Tensor) -> torch.Tensor:
        """`value` unchanged, with its gradient divided by the process count: for a value every process
        computes from the same global data, whose gradient would otherwise be counted N times."""
        if self.world == 1:
            return value
        return value.detach() + (value - value.detach()) / self.world

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Every process's `local` (equal shapes) concatenated in rank order; gradients flow into this
        process's own slice only (the other slices are copies)."""
        if self.world == 1:
            return local
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local.detach().contiguous())
        parts[self.rank] = local
        return torch.cat(parts)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of a (detached) tensor over processes."""
        if self.world == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()
