"""The executable specification of the model: se_e2_a + dipole/polar in plain numpy,
written from the formulas in shared/docs/tensor-fitting.md, deliberately naive.

Every Σsel slot (padding included) goes through the embedding net; neighbours come from
an explicit loop over periodic images; no blocking, no packing, no caches. It is slow and
shares no code with the optimised modules (descriptor, descriptor_fast, fitting, nets),
which the tests check against it to 1e-10 on every kernel path (tests/model/test_physics.py,
test_deepmd_parity.py). Read it to see what the fast code computes:

    params = params_from_model(model)           # the weights of a TensorModel, as numpy
    global_, atomic = predict(params, coord, atype, box)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

Layer = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # matrix [in, out], bias, idt


@dataclass
class RefParams:
    ntypes: int
    sel: list[int]
    rcut: float
    rcut_smth: float
    axis_neuron: int
    type_one_side: bool
    davg: np.ndarray  # [nt, Σsel, 4]
    dstd: np.ndarray  # [nt, Σsel, 4]
    embed: dict[int, list[Layer]]  # net index -> layers
    fit: dict[int, list[Layer]]  # atom type -> layers (last one linear)
    bias_atom_e: np.ndarray  # [nt, out]
    kind: str
    sel_type: list[int]
    fit_diag: bool = False
    scale: np.ndarray | None = None  # [nt]
    shift: np.ndarray | None = None  # [nt], already multiplied by scale


def neighbours(coord: np.ndarray, box: np.ndarray | None, i: int, rcut: float) -> list[tuple[float, int, np.ndarray]]:
    """All (distance, j, vector) with |r_j + n·box − r_i| < rcut, excluding i itself (n = 0)."""
    out = []
    if box is None:
        images = [np.zeros(3)]
    else:
        vol = abs(np.linalg.det(box))
        widths = [vol / np.linalg.norm(np.cross(box[(k + 1) % 3], box[(k + 2) % 3])) for k in range(3)]
        reach = [math.ceil(rcut / w) + 1 for w in widths]
        images = [np.array(n, dtype=float) @ box for n in itertools.product(*[range(-m, m + 1) for m in reach])]
    for j in range(len(coord)):
        for shift in images:
            if j == i and not shift.any():
                continue
            d = coord[j] + shift - coord[i]
            r = float(np.linalg.norm(d))
            if r < rcut:
                out.append((r, j, d))
    return out


def select(nbrs: list[tuple[float, int, np.ndarray]], atype: np.ndarray, sel: list[int]) -> list[list[np.ndarray]]:
    """DeePMD-kit's rule: Σsel nearest of any type, then per type the first sel[t]."""
    nbrs = sorted(nbrs, key=lambda x: x[0])[: sum(sel)]
    blocks: list[list[np.ndarray]] = [[] for _ in sel]
    for _, j, d in nbrs:
        t = atype[j]
        if len(blocks[t]) < sel[t]:
            blocks[t].append(d)
    return blocks


def _mlp(x: np.ndarray, layers: list[Layer], linear_last: bool) -> np.ndarray:
    for k, (w, b, idt) in enumerate(layers):
        y = x @ w + b
        if linear_last and k == len(layers) - 1:
            return y
        y = np.tanh(y)
        if idt is not None:
            y = y * idt
        if w.shape[1] == w.shape[0]:
            y = y + x
        elif w.shape[1] == 2 * w.shape[0]:
            y = y + np.concatenate([x, x], axis=-1)
        x = y
    return x


def env_matrix(blocks: list[list[np.ndarray]], sel: list[int], rcut_smth: float, rcut: float) -> np.ndarray:
    rows = np.zeros((sum(sel), 4))
    start = 0
    for t, n in enumerate(sel):
        for k, d in enumerate(blocks[t]):
            r = float(np.linalg.norm(d))
            u = (min(max(r, rcut_smth), rcut) - rcut_smth) / (rcut - rcut_smth)
            sw = u**3 * (-6 * u**2 + 15 * u - 10) + 1
            rows[start + k] = sw * np.array([1 / r, d[0] / r**2, d[1] / r**2, d[2] / r**2])
        start += n
    return rows


def atomic_tensor(p: RefParams, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None, i: int) -> np.ndarray:
    ti = int(atype[i])
    blocks = select(neighbours(coord, box, i, p.rcut), atype, p.sel)
    rn = (env_matrix(blocks, p.sel, p.rcut_smth, p.rcut) - p.davg[ti]) / p.dstd[ti]  # [Σsel, 4]
    g_rows, start = [], 0
    for tj, n in enumerate(p.sel):
        net = tj if p.type_one_side else ti + p.ntypes * tj
        g_rows.append(_mlp(rn[start:start + n, :1], p.embed[net], linear_last=False))
        start += n
    g = np.concatenate(g_rows)  # [Σsel, M1]
    t = rn.T @ g / sum(p.sel)  # [4, M1]
    d = (t.T @ t[:, : p.axis_neuron]).reshape(-1)
    gr = t[1:4].T  # [M1, 3]
    o = _mlp(d[None], p.fit[ti], linear_last=True)[0] + p.bias_atom_e[ti]
    if p.kind == "dipole":
        return o @ gr
    assert p.scale is not None and p.shift is not None
    o = o * p.scale[ti]
    m1 = gr.shape[0]
    a = np.diag(o) if p.fit_diag else 0.5 * (o.reshape(m1, m1) + o.reshape(m1, m1).T)
    return (gr.T @ a @ gr + p.shift[ti] * np.eye(3)).reshape(9)


def predict(p: RefParams, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """coord [nf, nat, 3] → global [nf, dim], atomic [nf, nat, dim]."""
    dim = 3 if p.kind == "dipole" else 9
    atomic = np.zeros((coord.shape[0], coord.shape[1], dim))
    for f in range(coord.shape[0]):
        for i in range(coord.shape[1]):
            if atype[i] in p.sel_type:
                atomic[f, i] = atomic_tensor(p, coord[f], atype, None if box is None else box[f], i)
    return atomic.sum(1), atomic


def _layers(state: dict[str, np.ndarray], prefix: str) -> list[Layer]:
    out, k = [], 0
    while f"{prefix}.layers.{k}.matrix" in state:
        out.append((state[f"{prefix}.layers.{k}.matrix"], state[f"{prefix}.layers.{k}.bias"],
                    state.get(f"{prefix}.layers.{k}.idt")))
        k += 1
    return out


def params_from_model(model: object) -> RefParams:
    """Read the parameters of our TensorModel through its state_dict (by name)."""
    state = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}  # type: ignore[attr-defined]
    d = model.descriptor  # type: ignore[attr-defined]
    fit = model.fitting  # type: ignore[attr-defined]
    nt, sel = d.ntypes, d.sel
    if fit.packed:  # the packed symmetric output layer → the full M1² layout of the formulas
        unpack = fit.unpack.numpy()
        last = max(int(k.split(".layers.")[1].split(".")[0]) for k in state if k.startswith("fitting.nets."))
        for key in [k for k in state if k.startswith("fitting.nets.") and f".layers.{last}." in k]:
            state[key] = state[key][..., unpack]
        state["fitting.bias_atom_e"] = state["fitting.bias_atom_e"][..., unpack]
    davg = np.concatenate([np.repeat(state["descriptor.davg"][:, tj:tj + 1], n, axis=1) for tj, n in enumerate(sel)], 1)
    dstd = np.concatenate([np.repeat(state["descriptor.dstd"][:, tj:tj + 1], n, axis=1) for tj, n in enumerate(sel)], 1)
    return RefParams(
        ntypes=nt, sel=list(sel), rcut=d.rcut, rcut_smth=d.rcut_smth, axis_neuron=d.m2,
        type_one_side=d.type_one_side, davg=davg, dstd=dstd,
        embed={k: _layers(state, f"descriptor.embeddings.{k}") for k in range(len(d.embeddings))},
        fit={t: _layers(state, f"fitting.nets.{t}") for t in fit.sel_type},
        bias_atom_e=state["fitting.bias_atom_e"], kind=fit.kind, sel_type=list(fit.sel_type),
        fit_diag=fit.fit_diag, scale=state["fitting.scale"], shift=state["fitting.shift_diag"],
    )


def params_from_deepmd(ck: dict, sel_type: list[int]) -> RefParams:
    """Read a DeePMD-kit slim checkpoint directly (independently of model/deepmd_compat.py)."""
    mp = ck["model_params"]
    pre = "model.Default.atomic_model."
    state = {k[len(pre):]: v.double().numpy() for k, v in ck["state_dict"].items() if k.startswith(pre)}
    desc, fit = mp["descriptor"], mp["fitting_net"]
    nt = len(mp["type_map"])
    nnet = nt if desc["type_one_side"] else nt * nt
    kind = fit["type"]
    scale = np.asarray(fit.get("scale", 1.0), dtype=float) * np.ones(nt)
    shift = np.zeros(nt)
    if kind == "polar" and fit.get("shift_diag", True):
        shift = np.array([np.trace(state["out_bias"][0, t].reshape(3, 3)) / 3 for t in range(nt)]) * scale
    return RefParams(
        ntypes=nt, sel=list(desc["sel"]), rcut=desc["rcut"], rcut_smth=desc["rcut_smth"],
        axis_neuron=desc["axis_neuron"], type_one_side=desc["type_one_side"],
        davg=state["descriptor.sea.mean"], dstd=state["descriptor.sea.stddev"],
        embed={k: _layers(state, f"descriptor.sea.filter_layers.networks.{k}") for k in range(nnet)},
        fit={t: _layers(state, f"fitting_net.filter_layers.networks.{t}") for t in sel_type},
        bias_atom_e=state["fitting_net.bias_atom_e"], kind=kind, sel_type=sel_type,
        fit_diag=bool(fit.get("fit_diag", False)), scale=scale, shift=shift,
    )
