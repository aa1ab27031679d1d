"""The compute floor of one training step of a given input.json, measured on this machine.

Any exact implementation of the function (se_e2_a descriptor + fitting net, float64) has to
do, every step, at least: the embedding-net matrix products forward and backward for every
real neighbour pair (same-type pairs once), the sigmoids of every hidden activation, the
fitting-net matrix products forward and backward for every sel_type centre, the neighbour
contraction T = R̃ᵀG and its backward, and one Adam update of every parameter. This module
times exactly those kernels, with the shapes of the input's real training batches, in a
tight loop (best of several bursts, warm caches) — nothing else: no autograd bookkeeping,
no elementwise backward passes, no Python. Its sum is a lower bound that no implementation
on this machine and thread count can beat, so ``floor steps/s ÷ DeePMD-kit steps/s`` is the
largest training-speed ratio reachable here.

Used by ``bench_train.py`` (row "compute floor"); runs in the project venv.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from model.batching import BatchSampler  # noqa: E402
from model.config import load_input  # noqa: E402
from model.setup import load_training_data, resolve_model_config, resolve_sel  # noqa: E402
from model.tensor_model import TensorModel  # noqa: E402


@dataclass
class StepShapes:
    """Mean sizes of one training step's work."""

    embed_rows: dict[int, int]  # embedding net → rows (pairs; same-type pairs counted once)
    centres: dict[int, int]  # fitting type → centres in the batch
    n_centres: int
    width: int  # most pairs of one centre (the padded contraction's width)
    embed_sizes: list[int]  # [1, *neuron]
    fit_sizes: list[int]  # [dim_descrpt, *neuron, dim_out]
    n_params: int


@dataclass
class Floor:
    ms: dict[str, float] = field(default_factory=dict)  # part → ms per unit
    unit: str = "step"

    @property
    def total_ms(self) -> float:
        return sum(self.ms.values())

    @property
    def steps_per_s(self) -> float:
        return 1e3 / self.total_ms

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in self.ms.items())
        return f"{self.total_ms:.2f} ms/{self.unit} = {parts}"


def _count_work(model: TensorModel, coord: torch.Tensor, atype: torch.Tensor, box: torch.Tensor | None,
                rows: dict[int, float], centres: dict[int, float], weight: float) -> tuple[float, float]:
    """Add ``weight`` × one call's embedding rows per net and centres per fitting type;
    its (centres, contraction width) × weight."""
    desc = model.descriptor
    c = model.centres(atype)
    env = model.environment(coord, atype, box, c)
    for g in range(model.ntypes**2):
        n = env.offsets[g + 1] - env.offsets[g]
        if g in env.distinct:
            n = int(env.distinct[g][0].shape[0])
        rows[desc.net_index(g)] = rows.get(desc.net_index(g), 0.0) + n * weight
    nf = coord.shape[0]
    for t, a, b in c.slices:
        centres[t] = centres.get(t, 0.0) + nf * (b - a) * weight
    return env.n_centres * weight, env.width * weight


def _shapes(model: TensorModel, rows: dict[int, float], centres: dict[int, float], n_c: float,
            width: float) -> StepShapes:
    cfg = model.config
    return StepShapes(
        embed_rows={k: round(v) for k, v in rows.items() if v >= 1},
        centres={t: round(v) for t, v in centres.items() if v >= 1},
        n_centres=round(n_c), width=round(width),
        embed_sizes=[1, *cfg.descriptor.neuron],
        fit_sizes=[model.descriptor.dim_out, *cfg.fitting_net.neuron, model.fitting.dim_out],
        n_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
    )


def step_shapes(input_json: Path, batches: int = 20) -> StepShapes:
    """Average the work of ``batches`` training batches (as the trainer draws them)."""
    cfg, base = load_input(input_json)
    model_cfg = resolve_model_config(cfg, base)
    data = load_training_data(cfg, model_cfg, base)
    model = TensorModel(resolve_sel(model_cfg, data.train))
    sampler = BatchSampler(data.train, data.train_batch, seed=cfg.training.seed or 0,
                           auto_prob=cfg.training.training_data.auto_prob, dtype=model.dtype)
    rows: dict[int, float] = {}
    centres: dict[int, float] = {}
    n_c = width = 0.0
    for step in range(batches):
        batch = sampler.batch_at(step)
        dn, dw = _count_work(model, batch.coord, batch.atype, batch.box, rows, centres, 1 / batches)
        n_c, width = n_c + dn, width + dw
    return _shapes(model, rows, centres, n_c, width)


def predict_shapes(model: TensorModel, coord: torch.Tensor, atype: torch.Tensor, box: torch.Tensor | None
                   ) -> StepShapes:
    """The work of one predict() call on these frames [nf, nat, 3]."""
    rows: dict[int, float] = {}
    centres: dict[int, float] = {}
    coord = coord.to(model.dtype)
    n_c, width = _count_work(model, coord, atype, None if box is None else box.to(model.dtype), rows, centres, 1.0)
    return _shapes(model, rows, centres, n_c, width)


def _best_ms(fn: Callable[[], object], bursts: int = 7, reps: int = 10) -> float:
    fn()
    best = float("inf")
    for _ in range(bursts):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return best * 1e3


def _dense_layers(rows: int, sizes: list[int], input_grad: bool, hidden: int, dtype: torch.dtype,
                  backward: bool = True) -> tuple[float, float]:
    """(matmul ms, sigmoid ms) of a net on ``rows`` rows: forward x·W and, with ``backward``,
    xᵀ·dz and dz·Wᵀ (the latter skipped for the first layer without ``input_grad``); a
    1-wide input is an outer product, not a matmul; sigmoid on the outputs of the first
    ``hidden`` layers."""
    mm = sig = 0.0
    for i in range(len(sizes) - 1):
        n_in, n_out = sizes[i], sizes[i + 1]
        x = torch.randn(rows, n_in, dtype=dtype)
        w = torch.randn(n_in, n_out, dtype=dtype)
        b = torch.randn(n_out, dtype=dtype)
        dz = torch.randn(rows, n_out, dtype=dtype)
        out = torch.empty(rows, n_out, dtype=dtype)
        if n_in > 1:
            mm += _best_ms(partial(torch.addmm, b, x, w, out=out))
            if backward and (i > 0 or input_grad):
                dx = torch.empty(rows, n_in, dtype=dtype)
                mm += _best_ms(partial(torch.mm, dz, w.t(), out=dx))
        if backward:
            dw = torch.empty(n_in, n_out, dtype=dtype)
            mm += _best_ms(partial(torch.mm, x.t(), dz, out=dw))
        if i < hidden:
            sig += _best_ms(partial(torch.sigmoid, dz, out=out))
    return mm, sig


def _nets(shapes: StepShapes, dtype: torch.dtype, backward: bool) -> tuple[float, float, float, float]:
    """(embedding matmuls, embedding sigmoids, fitting matmuls, fitting sigmoids), ms."""
    e_mm = e_sig = f_mm = f_sig = 0.0
    for rows in shapes.embed_rows.values():
        mm, sig = _dense_layers(rows, shapes.embed_sizes, False, len(shapes.embed_sizes) - 1, dtype, backward)
        e_mm, e_sig = e_mm + mm, e_sig + sig
    for n in shapes.centres.values():
        mm, sig = _dense_layers(n, shapes.fit_sizes, True, len(shapes.fit_sizes) - 2, dtype, backward)
        f_mm, f_sig = f_mm + mm, f_sig + sig
    return e_mm, e_sig, f_mm, f_sig


def measure_floor(shapes: StepShapes, threads: int | None = None, dtype: torch.dtype = torch.float64) -> Floor:
    if threads is not None:
        torch.set_num_threads(threads)
    floor = Floor()
    e_mm, e_sig, f_mm, f_sig = _nets(shapes, dtype, backward=True)
    m1 = shapes.embed_sizes[-1]
    r = torch.randn(shapes.n_centres, shapes.width, 4, dtype=dtype)
    g = torch.randn(shapes.n_centres, shapes.width, m1, dtype=dtype)
    dt = torch.randn(shapes.n_centres, 4, m1, dtype=dtype)
    contraction = _best_ms(lambda: torch.bmm(r.transpose(1, 2), g)) + _best_ms(lambda: torch.bmm(r, dt))
    params = [torch.nn.Parameter(torch.randn(shapes.n_params, dtype=dtype))]
    params[0].grad = torch.randn_like(params[0])
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    floor.ms = {"embedding matmuls": e_mm, "fitting matmuls": f_mm, "sigmoids": e_sig + f_sig,
                "contraction": contraction, "Adam": _best_ms(opt.step)}
    return floor


def measure_inference_floor(shapes: StepShapes, kind: str, frames: int, threads: int | None = None,
                            dtype: torch.dtype = torch.float64) -> Floor:
    """The unavoidable kernels of one predict() call, forward only, each alone with warm
    caches (no neighbour search, no environment rows, no per-pair elementwise work but the
    sigmoids): the embedding and fitting matmuls, the contraction T = R̃ᵀG, the descriptor
    product T·T<ᵀ and the output head (polar: A·gr with A the symmetric M1×M1 net output;
    dipole: out·gr). ``Floor.ms`` is per frame (÷ ``frames``)."""
    if threads is not None:
        torch.set_num_threads(threads)
    e_mm, e_sig, f_mm, f_sig = _nets(shapes, dtype, backward=False)
    nc, m1 = shapes.n_centres, shapes.embed_sizes[-1]
    m2 = shapes.fit_sizes[0] // m1
    r = torch.randn(nc, shapes.width, 4, dtype=dtype)
    g = torch.randn(nc, shapes.width, m1, dtype=dtype)
    t = torch.randn(nc, m1, 4, dtype=dtype)
    gr = torch.randn(nc, m1, 3, dtype=dtype)
    a = torch.randn(nc, m1, m1 if kind == "polar" else 1, dtype=dtype)
    head = (lambda: torch.bmm(a, gr)) if kind == "polar" else (lambda: torch.bmm(a.transpose(1, 2), gr))
    floor = Floor(unit="frame")
    floor.ms = {k: v / frames for k, v in {
        "embedding matmuls": e_mm, "fitting matmuls": f_mm, "sigmoids": e_sig + f_sig,
        "contraction": _best_ms(lambda: torch.bmm(r.transpose(1, 2), g)),
        "descriptor product": _best_ms(lambda: torch.bmm(t, t[:, :m2].transpose(1, 2))),
        "output head": _best_ms(head)}.items()}
    return floor


def training_floor(input_json: Path, threads: int | None = None) -> Floor:
    return measure_floor(step_shapes(input_json), threads)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from inputs import Task, task_names

    ap = argparse.ArgumentParser(description="compute floor of one training step")
    ap.add_argument("task", nargs="?", default="both", choices=["dipole", "polar", "both"])
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    ns = ap.parse_args(argv)
    for name in task_names(ns.task):
        shapes = step_shapes(Task(name).input_json)
        fl = measure_floor(shapes, ns.threads)
        print(f"{name}: {shapes}\n  floor {fl.describe()} → {fl.steps_per_s:.1f} steps/s "
              f"({torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
