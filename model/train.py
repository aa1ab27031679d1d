"""Training driven by DeePMD-kit's input.json: read it top to bottom.

Rows of lcurve.out are written at step 1 and every ``disp_freq`` steps (DeePMD-kit's
PyTorch convention: row s shows the s-th batch and the learning rate used for it).
Data-parallel runs pass a ``World`` (model/distributed.py): rank 0 builds the starting
point and writes every file, each rank trains on its own batches, gradients are averaged.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from model.batching import Batch, BatchSampler
from model.checkpoint import (
    model_from_checkpoint,
    model_from_file,
    read_checkpoint,
    save_checkpoint,
)
from model.config import InputConfig, LearningRateConfig, ParsedInput, read_input
from model.descriptor import EnvPairs
from model.distributed import World, share_start
from model.errors import CheckpointError, ConfigError
from model.init_model import check_same_architecture, fill_from_source
from model.loss import LossTerms, Metrics, tensor_loss
from model.setup import build_model, load_training_data, resolve_model_config, resolve_sel
from model.tensor_model import Centres, TensorModel

# ignored input keys are told here, for people (the job log, the terminal); the notes
# themselves are a result of read_input
log = logging.getLogger("dptensor.train")

LCURVE_COLUMNS = ("rmse_val", "rmse_trn", "rmse_lc_val", "rmse_lc_trn", "rmse_gl_val", "rmse_gl_trn", "lr")


@dataclass
class TrainProgress:
    step: int
    numb_steps: int
    lr: float
    steps_per_s: float
    eta_s: float
    row: dict[str, float] | None = None  # the lcurve row when this is a display step


@dataclass
class TrainResult:
    output_dir: Path
    model_path: Path
    steps_done: int
    cancelled: bool
    metrics: dict[str, float] = field(default_factory=dict)


def exp_lr(cfg: LearningRateConfig, numb_steps: int, warmup: int = 0) -> Callable[[int], float]:
    """lr(t) = start_lr · r^⌊t/decay_steps⌋, r = (stop_lr/start_lr)^(decay_steps/numb_steps).
    As DeePMD-kit does, decay_steps ≥ numb_steps is shrunk to 100 (or numb_steps//100 + 1 for
    short runs) so the schedule still decays; the result never falls below stop_lr."""
    steps = max(1, numb_steps - warmup)
    decay = cfg.decay_steps
    if decay >= steps:
        decay = 100 if steps // 10 > 100 else steps // 100 + 1
    rate = cfg.decay_rate if cfg.decay_rate is not None else (cfg.stop_lr / cfg.start_lr) ** (decay / steps)

    def lr(t: int) -> float:
        if t < warmup:
            return cfg.start_lr * (t + 1) / warmup
        return max(cfg.start_lr * rate ** ((t - warmup) // decay), min(cfg.stop_lr, cfg.start_lr))

    return lr


class EnvCache:
    """Environments of training batches, reused across steps: the frames never move, so
    the neighbour search and environment rows are computed once per batch (LRU, bounded
    by the number of pairs held)."""

    def __init__(self, max_pairs: int = 20_000_000) -> None:
        self.max_pairs = max_pairs
        self.pairs = 0
        self.items: OrderedDict[tuple[str, int, tuple[int, ...]], tuple[EnvPairs, Centres]] = OrderedDict()

    def get(self, model: TensorModel, batch: Batch, tag: str) -> tuple[EnvPairs, Centres]:
        key = (tag, batch.system, batch.frames)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        centres = model.centres(batch.atype)
        env = model.environment(batch.coord.to(model.dtype), batch.atype,
                                None if batch.box is None else batch.box.to(model.dtype), centres)
        self.items[key] = (env, centres)
        self.pairs += int(env.rij.shape[0])
        while self.pairs > self.max_pairs and len(self.items) > 1:
            _, (old, _) = self.items.popitem(last=False)
            self.pairs -= int(old.rij.shape[0])
        return env, centres


def _loss(model: TensorModel, batch: Batch, cfg: InputConfig, cache: EnvCache | None = None,
          tag: str = "", *, differentiable: bool = True) -> LossTerms:
    if cache is None:
        out = model(batch.coord, batch.atype, batch.box, differentiable=differentiable)
    else:
        env, centres = cache.get(model, batch, tag)
        out = model.forward_env(env, centres, batch.coord.shape[0], batch.coord.shape[1],
                                differentiable=differentiable)
    mask = torch.isin(batch.atype, torch.tensor(model.sel_type, device=batch.atype.device))
    return tensor_loss(out.atomic, out.global_, batch.atomic_label, batch.global_label, mask,
                       cfg.loss.pref, cfg.loss.pref_atomic)


def evaluate(model: TensorModel, batches: list[Batch], cfg: InputConfig, cache: EnvCache | None = None) -> Metrics:
    with torch.no_grad():
        return Metrics.from_terms([_loss(model, b, cfg, cache, "valid", differentiable=False) for b in batches])


def _fmt(v: float) -> str:
    return f"{'nan':>11}" if math.isnan(v) else f"{v:11.2e}"


def _rows_up_to(path: Path, last_step: int) -> None:
    """Drop rows after ``last_step``: a run that stopped after its last checkpoint wrote
    rows the resumed run will write again (each step must appear once, in order)."""
    lines = path.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if ln.startswith("#") or not ln.strip() or int(ln.split()[0]) <= last_step]
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


class LcurveWriter:
    """lcurve.out; ``resume_after`` (the restart checkpoint's step) continues the file
    from that step, dropping any rows written after it."""

    def __init__(self, path: Path, with_val: bool, resume_after: int | None) -> None:
        self.with_val = with_val
        self.columns = [c for c in LCURVE_COLUMNS if with_val or not c.endswith("_val")]
        append = resume_after is not None and path.exists()
        if append and resume_after is not None:
            _rows_up_to(path, resume_after)
        self.file: TextIO = open(path, "a" if append else "w")  # noqa: SIM115
        if self.file.tell() == 0:
            self.file.write("#  step " + "".join(f"{c:>12}" for c in self.columns) + "\n")
            self.file.write("# columns without a label in that batch print nan\n")

    def write(self, step: int, row: dict[str, float]) -> None:
        self.file.write(f"{step:8d} " + " ".join(_fmt(row[c]) for c in self.columns) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _row(trn: Metrics, val: Metrics | None, lr: float) -> dict[str, float]:
    nan = math.nan
    return {"rmse_val": val.rmse if val else nan, "rmse_trn": trn.rmse,
            "rmse_lc_val": val.rmse_lc if val else nan, "rmse_lc_trn": trn.rmse_lc,
            "rmse_gl_val": val.rmse_gl if val else nan, "rmse_gl_trn": trn.rmse_gl, "lr": lr}


def _save(path: Path, model: TensorModel, raw_input: dict[str, Any], step: int,
          opt: torch.optim.Optimizer | None, metrics: dict[str, float] | None = None) -> None:
    state = {"step": step, "optimizer": opt.state_dict()} if opt is not None else {"step": step}
    save_checkpoint(path, model, input_config=raw_input, train_state=state, metrics=metrics)


def _link_latest(out: Path, prefix: str, name: str) -> None:
    """``<prefix>.pt`` → the newest checkpoint (a relative symlink, as DeePMD-kit does)."""
    link = out / f"{prefix}.pt"
    tmp = out / f".{prefix}.pt.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(name, tmp)
    os.replace(tmp, link)


def _existing_checkpoints(out: Path, prefix: str) -> list[Path]:
    """``<prefix>-<step>.pt`` files already in ``out`` (an earlier attempt's), oldest first."""
    found = []
    for p in out.glob(f"{prefix}-*.pt"):
        step = p.name[len(prefix) + 1:-3]
        if step.isdigit():
            found.append((int(step), p))
    return [p for _, p in sorted(found)]


def train(source: str | Path | dict[str, Any] | ParsedInput, output_dir: str | Path, *,
          restart: str | Path | None = None, init_model: str | Path | None = None, device: str | None = None,
          on_progress: Callable[[TrainProgress], None] | None = None, should_stop: Callable[[], bool] | None = None,
          progress_every_s: float = 2.0, world: World | None = None) -> TrainResult:
    """Train a tensor model from an input.json (path, dict, or one already read with
    read_input). ``should_stop`` is polled every step; when it returns True a checkpoint is
    written and training stops. ``init_model`` (a model file of the same architecture) gives
    the starting weights and statistics instead of fresh ones (``model.init_model``). In a
    data-parallel run (``world``) rank 0 reports progress and polls ``should_stop``."""
    if restart is not None and init_model is not None:
        raise ConfigError("give --restart (continue this run) or --init-model (start from a model), not both")
    world = world or World()
    parsed = read_input(source)
    if world.is_main:
        for note in parsed.notes:
            log.warning("%s", note)
    cfg, base, raw_input = parsed.config, parsed.base, parsed.raw
    tr = cfg.training
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_prefix, keep = tr.save_ckpt, tr.max_ckpt_keep

    # --- data and model --------------------------------------------------------------
    source_model = model_from_file(init_model) if init_model is not None else None
    wanted = cfg.model if source_model is None else fill_from_source(cfg.model, source_model.config)
    model_cfg = resolve_model_config(cfg.model_copy(update={"model": wanted}), base)
    data = load_training_data(cfg, model_cfg, base)
    train_state: dict[str, Any] | None = None
    model: TensorModel | None = None
    if world.is_main:  # statistics (and the checkpoint read) once, shared with the other ranks
        if source_model is not None:
            check_same_architecture(resolve_sel(model_cfg, data.train), source_model.config, str(init_model))
            model = source_model
        elif restart is not None:
            ck = read_checkpoint(restart)
            if not isinstance(ck.get("train"), dict):
                raise CheckpointError(f"{restart}: has no training state to restart from")
            model, train_state = model_from_checkpoint(ck), ck["train"]
        else:
            model = build_model(resolve_sel(model_cfg, data.train), data)
    model, train_state = share_start(world, model, train_state)
    start_step = int(train_state["step"]) if train_state is not None else 0
    model.to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate.start_lr, betas=(0.9, 0.999), eps=1e-8,
                           fused=True)
    if train_state is not None and "optimizer" in train_state:
        opt.load_state_dict(train_state["optimizer"])
    lr_at = exp_lr(cfg.learning_rate, tr.numb_steps, tr.warmup_steps)
    seed = tr.seed if tr.seed is not None else 0
    sampler = BatchSampler(data.train, data.train_batch, seed=seed, auto_prob=tr.training_data.auto_prob,
                           sys_probs=tr.training_data.sys_probs, device=dev, dtype=model.dtype)
    val_sampler = (BatchSampler(data.valid, data.valid_batch, seed=seed + 1, auto_prob=tr.validation_data.auto_prob,
                                sys_probs=tr.validation_data.sys_probs, device=dev, dtype=model.dtype)
                   if tr.validation_data is not None else None)
    lcurve = (LcurveWriter(out / tr.disp_file, with_val=val_sampler is not None,
                           resume_after=start_step if restart is not None else None) if world.is_main else None)
    cache = EnvCache()
    # checkpoints of earlier attempts count towards max_ckpt_keep too
    written = _existing_checkpoints(out, save_prefix)

    # --- the loop ----------------------------------------------------------------------
    t0, last_report, cancelled = time.monotonic(), time.monotonic(), False
    step = start_step
    try:
        for step in range(start_step + 1, tr.numb_steps + 1):
            lr = lr_at(step - 1)
            for group in opt.param_groups:
                group["lr"] = lr
            terms = _loss(model, sampler.batch_at(step, world.rank), cfg, cache, "train")
            opt.zero_grad(set_to_none=True)
            terms.loss.backward()
            world.average_gradients(model.parameters())
            if tr.gradient_max_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tr.gradient_max_norm)
            opt.step()

            now = time.monotonic()
            display = step == start_step + 1 or step % tr.disp_freq == 0 or step == tr.numb_steps
            rate = (step - start_step) / max(now - t0, 1e-9)
            if display and lcurve is not None:
                val = None
                if val_sampler is not None:
                    n = tr.validation_data.numb_btch if tr.validation_data else 1
                    val = evaluate(model, [val_sampler.batch_at(step * 1000 + i) for i in range(n)], cfg, cache)
                row = _row(Metrics.from_terms([terms]), val, lr)
                lcurve.write(step, row)
            if on_progress is not None and (display or now - last_report >= progress_every_s):
                last_report = now
                on_progress(TrainProgress(step=step, numb_steps=tr.numb_steps, lr=lr, steps_per_s=rate,
                                          eta_s=(tr.numb_steps - step) / rate, row=row if display else None))
            stop = world.agree(should_stop is not None and should_stop(), dev)
            if world.is_main and (step % tr.save_freq == 0 or stop):
                name = f"{save_prefix}-{step}.pt"
                _save(out / name, model, raw_input, step, opt)
                _link_latest(out, save_prefix, name)
                if out / name in written:  # re-saved after a resume from an older checkpoint
                    written.remove(out / name)
                written.append(out / name)
                while len(written) > keep:
                    written.pop(0).unlink(missing_ok=True)
            if stop:
                cancelled = True
                break
    finally:
        if lcurve is not None:
            lcurve.close()

    # --- final model and metrics -------------------------------------------------------
    metrics: dict[str, float] = {"steps": float(step)}
    model_path = out / "model.pt"
    if not world.is_main:  # rank 0 validates and writes model.pt
        return TrainResult(output_dir=out, model_path=model_path, steps_done=step, cancelled=cancelled)
    if val_sampler is not None:
        full = evaluate(model, list(val_sampler.sequential()), cfg)
        metrics.update(val_rmse=full.rmse, val_rmse_atomic=full.rmse_lc, val_rmse_global=full.rmse_gl_abs,
                       val_rmse_global_per_atom=full.rmse_gl)
    _save(model_path, model, raw_input, step, None, metrics)
    return TrainResult(output_dir=out, model_path=model_path, steps_done=step, cancelled=cancelled, metrics=metrics)
