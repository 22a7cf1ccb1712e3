"""Training on more than one process: torchrun with 2 CPU processes (gloo) against one process.

On the same global batches, two processes must give the weights one process gives (up to float
summation order): CDINet through DDP's averaged gradients with each process's loss weighted by its
share of the batch, CLIP through features gathered across processes, so every image still meets
every caption of the global batch as a negative. CDINet has no BatchNorm, so nothing depends on
the per-process batch. Checkpoints resume across process counts, and only process 0 writes.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from support import ROOT

from edge_mm.checkpoint import read_checkpoint_file
from edge_mm.errors import UsageError
from edge_mm.train import cdinet, clip
from edge_mm.train.common import BEST, LAST, METRICS
from edge_mm.train.distributed import Processes
from edge_mm.train.loop import global_batches

CDINET = dict(
    variant="cdinet-s",
    data="synthetic",
    size=64,
    scene_size=[64, 64],
    train_count=8,
    val_count=4,
    batch_size=4,
    threads=1,
)
CLIP = dict(
    config="tiny",
    data="synthetic",
    train_count=24,
    val_count=12,
    scene_size=[64, 64],
    batch_size=8,
    warmup_steps=2,
    threads=1,
)
WEIGHT_ATOL = 1e-4  # float sums in another order, carried through a few Adam steps


def _cli_args(options: dict) -> list:
    args = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        args += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return args


def _torchrun(model: str, out, options: dict, *extra: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU (gloo) path: two processes on one GPU would need two GPUs
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "edge_mm.train.cli", model, "--out", str(out), "--quiet", *_cli_args(options), *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _quiet(*_args) -> None:
    pass


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=WEIGHT_ATOL, rtol=0, msg=key)


def test_global_batches_are_shared_contiguously_and_a_too_small_last_batch_is_left_out():
    task = cdinet.CdinetTask(cdinet.TrainConfig(**dict(CDINET, train_count=9)))
    task.train_source = range(9)
    task.train_size = lambda: 9
    one, two = Processes(), Processes(rank=1, world=2)
    assert [len(b) for b in global_batches(task, 0, one)] == [4, 4, 1]
    batches = global_batches(task, 0, two)  # the same order; the last batch of 1 cannot feed 2 processes
    assert batches == global_batches(task, 0, one)[:2]
    assert Processes(rank=0, world=2).share(batches[0]) + two.share(batches[0]) == batches[0]
    assert Processes(rank=0, world=2).share([7, 8, 9]) == [7] and two.share([7, 8, 9]) == [8, 9]


def test_cdinet_on_two_processes_resumes_across_process_counts_and_matches_one_process(tmp_path):
    straight, mixed = tmp_path / "one", tmp_path / "mixed"
    cdinet.train(cdinet.TrainConfig(**CDINET, epochs=3), straight, progress=False, log=_quiet)

    cdinet.train(cdinet.TrainConfig(**CDINET, epochs=1), mixed, progress=False, log=_quiet)  # 1 process
    result = _torchrun("cdinet", mixed, dict(CDINET, epochs=2), "--resume")  # epoch 2 on 2 processes
    # process 0 alone logs: each line once
    assert result.stdout.count("epoch 2/2") == 1 and "2 processes (gloo)" in result.stdout
    assert sorted(p.name for p in mixed.iterdir()) == sorted([BEST, LAST, METRICS])
    metrics = json.loads((mixed / METRICS).read_text())
    assert [e["processes"] for e in metrics["history"]] == [1, 2]
    cdinet.train(cdinet.TrainConfig(**CDINET, epochs=3), mixed, resume=True, progress=False, log=_quiet)  # back to 1

    one, mixed_run = (json.loads((d / METRICS).read_text())["history"] for d in (straight, mixed))
    losses = [e["train_loss"] for e in mixed_run]
    assert losses[1] < losses[0] and losses[2] < losses[0]  # the loss decreases, on 2 processes too
    for a, b in zip(one, mixed_run):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_mae"] == pytest.approx(a["val_mae"], abs=1e-4)
    _assert_same_weights(read_checkpoint_file(straight / LAST)["model"], read_checkpoint_file(mixed / LAST)["model"])


def test_clip_on_two_processes_uses_global_negatives_and_matches_one_process(tmp_path):
    clip.train(clip.TrainConfig(**CLIP, epochs=2), tmp_path / "one", progress=False, log=_quiet)
    _torchrun("clip", tmp_path / "two", dict(CLIP, epochs=2))

    one, two = (json.loads((tmp_path / d / METRICS).read_text())["history"] for d in ("one", "two"))
    assert [e["processes"] for e in two] == [2, 2] and two[1]["train_loss"] < two[0]["train_loss"]
    for a, b in zip(one, two):
        # each process holds 4 of the 8 pairs: scored against its own 4 captions only, the loss would differ
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["logit_scale"] == pytest.approx(a["logit_scale"], abs=1e-3)
    _assert_same_weights(
        read_checkpoint_file(tmp_path / "one" / LAST)["model"], read_checkpoint_file(tmp_path / "two" / LAST)["model"]
    )
    assert (tmp_path / "two" / clip.PLAIN_WEIGHTS).is_file()


def test_a_global_batch_that_does_not_split_over_the_processes_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Processes, "from_env", classmethod(lambda cls: cls(rank=0, world=3)))
    with pytest.raises(UsageError, match="multiple of 3"):
        cdinet.train(cdinet.TrainConfig(**CDINET, epochs=1), tmp_path, progress=False, log=_quiet)
