"""The training loop every edge-mm model shares; a model supplies a `Task` with only what differs.

The skeleton owns: the run folder (refuse to overwrite, --resume with the recorded recipe), seeding,
the epoch order and global batches, one process or several (edge_mm.train.distributed), progress
bars and log lines, the non-finite loss check, validation, best/last checkpoints and metrics.json.

A task owns: its config and data, its model and optimizers, how a batch becomes a loss, what
happens around an optimizer step, its validation metric and what it adds to the metadata.

Determinism: the epoch order is a function of (seed, epoch) only and every sample's randomness is
seeded by (seed, epoch, index), so a resumed run, and a run on another number of processes,
sees the same global batches as an uninterrupted one-process run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from edge_mm.checkpoint import (
    checkpoint_meta,
    is_training_checkpoint,
    make_checkpoint,
    read_checkpoint_file,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from edge_mm.errors import TrainingError, UsageError, WeightsError
from edge_mm.train.common import (
    BEST,
    LAST,
    METRICS,
    epoch_generator,
    seed_everything,
    set_threads,
    worker_init,
    write_json,
)
from edge_mm.train.distributed import Processes

Log = Callable[[str], None]


def print_flushed(message: str) -> None:
    print(message, flush=True)  # flushed: a nohup'd run's log shows each line as it happens


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _silent(_message: str) -> None:
    pass


class Task:
    """What one model's training adds to the skeleton. Subclasses set the class attributes and
    override the methods; `self.model` (the bare model, on `self.device`) is set by `build`."""

    kind: str = ""
    recipe_keys: Tuple[str, ...] = ()  # config fields a --resume must repeat
    resume_keys: Tuple[str, ...] = ("optimizer",)  # entries last.pth must have to be resumed
    drop_last: bool = False  # drop a last global batch smaller than the batch size
    workers: int = 0  # DataLoader worker processes
    model: nn.Module

    def __init__(self, config) -> None:
        self.config = config
        self.device = torch.device("cpu")
        self.batch_size = int(config.batch_size)

    # set-up ------------------------------------------------------------------
    def build(self, checkpoint: Optional[Dict[str, Any]], processes: Processes, progress: bool) -> None:
        """Data sources, model (on processes.device), optimizers; from `checkpoint` when resuming."""
        raise NotImplementedError

    def restore(self, checkpoint: Dict[str, Any]) -> None:
        """Optimizer (and scheduler) states of a resumed run."""
        raise NotImplementedError

    def training_module(self) -> nn.Module:
        """The module whose forward `loss` calls (DistributedDataParallel wraps it)."""
        return self.model

    def start_line(self, out: Path) -> str:
        raise NotImplementedError

    # one step ----------------------------------------------------------------
    def train_size(self) -> int:
        """How many training samples an epoch orders (every task keeps them in `train_source`)."""
        return len(self.train_source)

    def train_dataset(self, epoch: int) -> Dataset:
        """Epoch `epoch`'s training samples by index, each a tuple of tensors (DataLoader collates them)."""
        raise NotImplementedError

    def loss(
        self, net: nn.Module, batch: Sequence[torch.Tensor], global_count: int, processes: Processes
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(objective, share): gradients of the objectives summed over processes are the gradient of
        the global batch's loss; the shares summed over processes are that loss (for the log)."""
        raise NotImplementedError

    def before_step(self, step: int) -> None:
        pass

    def zero_grad(self) -> None:
        raise NotImplementedError

    def optimizer_step(self) -> None:
        """Gradient clamping or clipping, the optimizers' step, and what follows it."""
        raise NotImplementedError

    def end_epoch(self) -> None:
        pass

    def postfix(self) -> Dict[str, str]:
        return {}

    def epoch_fields(self) -> Dict[str, Any]:
        """Training numbers of the epoch for the history (lr, ...)."""
        return {}

    # validation and records -------------------------------------------------
    def validate(self, progress: bool) -> Dict[str, Any]:
        raise NotImplementedError

    def val_fields(self, val: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def score(self, val: Dict[str, Any]) -> float:
        """Higher is better; best.pth holds the epoch with the highest score."""
        raise NotImplementedError

    def best_fields(self, val: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    def meta(self) -> Dict[str, Any]:
        """What this model records beside the common metadata (preprocess, data, init, ...)."""
        raise NotImplementedError

    def optimizer_state(self) -> Dict[str, Any]:
        raise NotImplementedError

    def on_best(self, out: Path) -> None:
        pass

    def epoch_line(self, entry: Dict[str, Any], val: Dict[str, Any]) -> str:
        raise NotImplementedError


def _resume_state(out: Path, task: Task) -> Dict[str, Any]:
    path = out / LAST
    if not path.is_file():
        raise UsageError(f"--resume: {path} does not exist; start without --resume or pass the --out of an earlier run")
    data = read_checkpoint_file(path)
    if not is_training_checkpoint(data) or not all(k in data for k in (*task.resume_keys, "rng")):
        raise WeightsError(
            f"{path} is not an edge-mm-train {task.kind} last.pth with optimizer state; it cannot be resumed"
        )
    meta = checkpoint_meta(data, str(path))
    recorded = meta.get("config", {})
    config = task.config
    changed = [k for k in task.recipe_keys if k in recorded and _normal(recorded[k]) != _normal(getattr(config, k))]
    if meta.get("kind") != task.kind or changed:
        shown = ", ".join(f"{k}: {recorded.get(k)!r} -> {getattr(config, k)!r}" for k in changed[:4])
        raise UsageError(
            f"--resume: {path} was trained with other settings ({shown}); repeat the original options or use a new --out"
        )
    return {"checkpoint": data, "meta": meta}


def global_batches(task: Task, epoch: int, processes: Processes) -> List[List[int]]:
    """Epoch `epoch`'s global batches: a (seed, epoch) permutation cut into --batch-size pieces.

    With N processes a last batch of fewer than N samples is left out (a process would have none).
    """
    order = torch.randperm(task.train_size(), generator=epoch_generator(task.config.seed, epoch)).tolist()
    batches = [order[i : i + task.batch_size] for i in range(0, len(order), task.batch_size)]
    if batches and len(batches[-1]) < (task.batch_size if task.drop_last else processes.world):
        batches.pop()
    return batches


def train(
    task: Task, out: Path, resume: bool = False, progress: bool = True, log: Log = print_flushed
) -> Dict[str, Any]:
    """Run (or continue) a training run into `out`; returns the final metrics.json content.

    Under torchrun every process calls this; process 0 alone writes and logs.
    """
    task.config.check()
    set_threads(task.config.threads)
    processes = Processes.from_env()
    try:
        if processes.world > 1 and task.batch_size % processes.world:
            raise UsageError(
                f"--batch-size {task.batch_size} is the global batch and must be a multiple of the "
                f"{processes.world} processes; pass a multiple of {processes.world}"
            )
        if not processes.is_main:
            log, progress = _silent, False
        return _train(task, Path(out), resume, progress, log, processes)
    finally:
        processes.close()


def _train(task: Task, out: Path, resume: bool, progress: bool, log: Log, processes: Processes) -> Dict[str, Any]:
    config = task.config
    if not resume and (out / LAST).exists():
        raise UsageError(f"{out / LAST} exists; pass --resume to continue that run or choose another --out")
    state = _resume_state(out, task) if resume else None
    checkpoint = state["checkpoint"] if state else None

    seed_everything(config.seed)
    task.device = processes.device
    task.build(checkpoint, processes, progress)
    history: List[Dict[str, Any]] = []
    best: Dict[str, Any] = {}
    start_epoch, step, seconds = 0, 0, 0.0
    if checkpoint is not None:
        task.restore(checkpoint)
        restore_rng_state(checkpoint["rng"])
        history = list(state["meta"].get("history", []))
        best = json.loads(checkpoint.get("best_json", "{}"))
        start_epoch, step = int(checkpoint["epoch"]), int(checkpoint.get("step", 0))
        seconds = float(state["meta"].get("train_seconds", 0.0))
        log(f"resuming {out / LAST} after epoch {start_epoch} of {config.epochs}")
        if start_epoch >= config.epochs:
            log(f"nothing to do: the run already has {start_epoch} epochs (raise --epochs to train longer)")
    net = processes.wrap(task.training_module())
    log(task.start_line(out) + (f"; {processes.world} processes ({processes.backend})" if processes.world > 1 else ""))

    def meta() -> Dict[str, Any]:
        return {
            "kind": task.kind,
            "config": dataclasses.asdict(config),
            **task.meta(),
            "history": history,
            "train_seconds": round(seconds, 2),
            "torch": torch.__version__,
        }

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        task.model.train()
        batches = global_batches(task, epoch, processes)
        loader = DataLoader(  # the distributed sampler: this process's share of each global batch
            task.train_dataset(epoch),
            batch_sampler=[processes.share(b) for b in batches],
            num_workers=task.workers,
            worker_init_fn=worker_init if task.workers else None,
        )
        total, seen = 0.0, 0
        log_every = max(1, len(batches) // 10)
        bar = tqdm(
            zip(batches, loader),
            total=len(batches),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=None if progress else True,
            leave=False,
        )
        for number, (global_batch, batch) in enumerate(bar, start=1):
            task.before_step(step)
            batch = [t.to(processes.device) for t in batch]
            objective, share = task.loss(net, batch, len(global_batch), processes)
            value = float(processes.sum(share.detach()))  # the same number on every process
            if not torch.isfinite(torch.tensor(value)):
                raise TrainingError(
                    f"the loss became {value} in epoch {epoch + 1}; lower --lr or check the data for NaN/inf"
                )
            task.zero_grad()
            processes.scale(objective).backward()
            task.optimizer_step()
            step += 1
            total += value * len(global_batch)
            seen += len(global_batch)
            bar.set_postfix(loss=f"{total / seen:.4f}", **task.postfix())
            if progress and bar.disable and number % log_every == 0:  # no terminal (a log file): a line per 10%
                log(
                    f"  epoch {epoch + 1}: {number}/{len(batches)} batches, loss {total / seen:.4f}, {time.perf_counter() - started:.0f}s"
                )
        bar.close()
        task.end_epoch()
        train_seconds = time.perf_counter() - started

        if processes.is_main:
            val = task.validate(progress)
            seconds += time.perf_counter() - started
            entry = {
                "epoch": epoch + 1,
                "steps": step,
                **task.epoch_fields(),
                "train_loss": total / max(seen, 1),
                **task.val_fields(val),
                "processes": processes.world,
                "train_seconds": round(train_seconds, 2),
                "seconds": round(time.perf_counter() - started, 2),
            }
            history.append(entry)
            improved = not best or task.score(val) > best["score"]
            if improved:
                best = {"epoch": epoch + 1, "score": task.score(val), **task.best_fields(val)}
            if improved:
                save_checkpoint(out / BEST, make_checkpoint(task.model, epoch + 1, meta(), best=best))
                task.on_best(out)
            last = make_checkpoint(task.model, epoch + 1, meta(), best=best)
            last.update(task.optimizer_state(), step=step, rng=rng_state())
            save_checkpoint(out / LAST, last)
            write_json(out / METRICS, dict(meta(), best=best))
            log(task.epoch_line(entry, val) + ("  *best" if improved else ""))
        processes.barrier()

    summary = dict(meta(), best=best)
    if start_epoch < config.epochs and processes.is_main:
        write_json(out / METRICS, summary)
    return summary


def config_from_args(config_type: Any, args: Any, **differing: Any) -> Any:
    """A run's config (a dataclass) from its parsed flags: every field takes the flag of its own
    name; a model module passes only the fields whose flag is spelled differently."""
    values = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(config_type)
        if field.name not in differing and hasattr(args, field.name)
    }
    if "scene_size" in values:
        values["scene_size"] = [int(v) for v in values["scene_size"]]  # JSON-able in checkpoints
    return config_type(**values, **differing)
