"""Data-parallel training with real gloo ranks (spawned processes, and torchrun) on CPU: the
same weights as one process averaging the same batches' gradients, a bit-for-bit restart,
and a dying rank failing the run with a message instead of a hang."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.batching import BatchSampler
from model.checkpoint import read_checkpoint
from model.config import load_input
from model.distributed import DistributedError
from model.launch import train_data_parallel
from model.setup import build_model, load_training_data, resolve_model_config, resolve_sel
from model.train import EnvCache, TrainProgress, _loss, exp_lr, train
from tests.model.test_train import tiny_input

STEPS = 4


def one_process_two_batches(raw: dict[str, Any], steps: int) -> dict[str, torch.Tensor]:
    """The reference: per step, the gradients of rank 0's and rank 1's batches averaged in
    one process (the same learning-rate schedule and Adam)."""
    cfg, base = load_input(raw)
    mc = resolve_model_config(cfg, base)
    data = load_training_data(cfg, mc, base)
    model = build_model(resolve_sel(mc, data.train), data).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate.start_lr, fused=True)
    lr_at = exp_lr(cfg.learning_rate, steps, cfg.training.warmup_steps)
    tr = cfg.training
    sampler = BatchSampler(data.train, data.train_batch, seed=tr.seed or 0, auto_prob=tr.training_data.auto_prob,
                           sys_probs=tr.training_data.sys_probs, dtype=model.dtype)
    cache = EnvCache()
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(step - 1)
        opt.zero_grad(set_to_none=True)
        for rank in (0, 1):
            _loss(model, sampler.batch_at(step, rank), cfg, cache, "train").loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                p.grad /= 2
        opt.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


def test_ranks_draw_their_own_batches_and_rank_0_draws_the_single_process_batches() -> None:
    cfg, base = load_input(tiny_input())
    data = load_training_data(cfg, resolve_model_config(cfg, base), base)
    sampler = BatchSampler(data.train, data.train_batch, seed=7)
    draws = {(rank, step): (sampler.batch_at(step, rank).system, sampler.batch_at(step, rank).frames)
             for rank in range(3) for step in range(1, 40)}
    rng = np.random.default_rng([7, 5])  # the documented single-process draw for step 5
    k = int(rng.choice(len(data.train), p=sampler.probs))
    assert draws[0, 5][0] == k
    for rank in (1, 2):
        assert [draws[rank, s] for s in range(1, 40)] != [draws[0, s] for s in range(1, 40)]
        assert draws[rank, 9] == (sampler.batch_at(9, rank).system, sampler.batch_at(9, rank).frames)


def test_two_gloo_ranks_equal_one_process_averaging_both_batches_and_restart_bit_for_bit(tmp_path: Path) -> None:
    raw = tiny_input(steps=STEPS, max_ckpt_keep=5)
    raw["training"].update(disp_freq=2, save_freq=2)
    del raw["training"]["validation_data"]  # rank 0's validation is not what is compared here; it costs time
    result = train_data_parallel(raw, tmp_path / "run", nproc=2, device="cpu")
    assert result.steps_done == STEPS and result.model_path.is_file()
    weights = read_checkpoint(result.model_path)["state_dict"]

    reference = one_process_two_batches(raw, STEPS)
    assert weights.keys() == reference.keys()
    for key, ref in reference.items():
        assert ref.dtype == torch.float64
        torch.testing.assert_close(weights[key], ref, rtol=0, atol=1e-10, msg=key)
    # and the ranks' batches did differ: one rank's batch alone gives other weights
    assert any(not torch.equal(weights[k], v) for k, v in one_rank_only(raw, tmp_path / "single").items())

    # rank 0 alone wrote lcurve.out (one row per display step) and the checkpoints
    rows = np.genfromtxt(tmp_path / "run" / "lcurve.out")
    assert rows[:, 0].tolist() == [1, 2, 4]
    assert sorted(p.name for p in (tmp_path / "run").glob("model.ckpt-*.pt")) == ["model.ckpt-2.pt",
                                                                                 "model.ckpt-4.pt"]

    # the restart goes through torchrun (its env:// rendezvous) and the command line
    (tmp_path / "input.json").write_text(json.dumps(raw))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "model.cli", "train", str(tmp_path / "input.json"), "-o", str(tmp_path / "resumed"),
                           "--restart", str(tmp_path / "run" / "model.ckpt-2.pt"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"trained {STEPS} steps") == 1  # rank 0 alone reports
    again = read_checkpoint(tmp_path / "resumed" / "model.pt")["state_dict"]
    for key, value in weights.items():
        assert torch.equal(again[key], value), key
    last = np.genfromtxt(tmp_path / "resumed" / "lcurve.out")
    np.testing.assert_array_equal(np.atleast_2d(last)[-1], rows[-1])


def one_rank_only(raw: dict[str, Any], out: Path) -> dict[str, torch.Tensor]:
    """What a single process (rank 0's batches only) ends with after the same steps."""
    return dict(read_checkpoint(train(raw, out, device="cpu").model_path)["state_dict"])


def test_a_rank_that_dies_fails_the_run_with_a_message_and_stops_the_others(tmp_path: Path) -> None:
    raw = tiny_input(steps=100_000)
    raw["training"].update(disp_freq=1, save_freq=100_000)
    killed_at: list[float] = []

    def kill_a_rank(p: TrainProgress) -> None:
        if not killed_at:
            victim = max(multiprocessing.active_children(), key=lambda c: c.pid or 0)
            assert victim.pid is not None
            os.kill(victim.pid, signal.SIGKILL)
            killed_at.append(time.monotonic())

    with pytest.raises(DistributedError, match=r"rank [01] of 2 (died|failed).*the other ranks were stopped"):
        train_data_parallel(raw, tmp_path, nproc=2, device="cpu", on_progress=kill_a_rank)
    assert killed_at
    # the launcher notices the death itself: far sooner than the collective timeout (600 s)
    assert time.monotonic() - killed_at[0] < 120
    assert multiprocessing.active_children() == []
