"""The hand-written backward nodes of the training path against autograd through the
readable formula (float64, to 1e-12), and against finite differences (gradcheck)."""

from __future__ import annotations

import torch

from model.contraction import DenseContraction, Layout, Part
from model.descriptor import environment
from model.neighbor import build_neighbor_list
from tests.model.conftest import random_frames, tiny_model


def _random_layout(gen: torch.Generator) -> tuple[Layout, list[torch.Tensor], torch.Tensor]:
    """3 centres of width 4 over 4 groups (2 types): a distinct-valued group, plain groups,
    a group with pad row only, and gap rows. Returns (layout, net outputs, R̃ [nC, width, 4])."""
    n_c, width, m1 = 3, 4, 5
    # rows of the padded layout per group; row c·width + k is slot k of centre c
    rows = {0: [0, 1, 4, 8, 9], 2: [2, 5, 6, 10], 1: [], 3: [3]}
    idx = {g: torch.tensor(v, dtype=torch.long) for g, v in rows.items()}
    parts = [Part(0, 3, True, idx[0], torch.tensor([0, 2, 1, 2, 0])),
             Part(1, 0, True, idx[1], None),
             Part(2, 4, False, idx[2], None),
             Part(3, 1, True, idx[3], None)]
    gaps = torch.tensor([7, 11])
    pad_r = torch.randn(4, 4, dtype=torch.float64, generator=gen)
    pad_w = torch.rand(n_c, 4, dtype=torch.float64, generator=gen) * 3
    layout = Layout(parts, n_c, width, gaps, pad_r, pad_w, nnei=7)
    embs = [torch.randn(p.n + p.with_pad, m1, dtype=torch.float64, generator=gen, requires_grad=True) for p in parts]
    r = torch.randn(n_c * width, 4, dtype=torch.float64, generator=gen)
    r[gaps] = 0.0
    return layout, embs, r.view(n_c, width, 4)


def _formula(layout: Layout, embs: list[torch.Tensor], r: torch.Tensor) -> torch.Tensor:
    """T_c = (Σ_pairs of c R̃ᵀ G + Σ_g w_cg R̃pad_gᵀ G(s_pad)_g) / Σsel, pair by pair."""
    n_c, width, m1 = layout.n_centres, layout.width, embs[0].shape[1]
    t = [torch.zeros(4, m1, dtype=r.dtype) for _ in range(n_c)]
    for part, emb in zip(layout.parts, embs, strict=True):
        for i, row in enumerate(part.rows.tolist()):
            g = emb[part.distinct[i] if part.distinct is not None else i]
            c = row // width
            t[c] = t[c] + r.reshape(-1, 4)[row][:, None] * g[None, :]
        if part.with_pad:
            for c in range(n_c):
                t[c] = t[c] + layout.pad_weights[c, part.group] * layout.pad_r[part.group][:, None] * emb[part.n][None]
    return torch.stack(t) / layout.nnei


def test_dense_contraction_equals_the_pairwise_formula_with_its_gradients() -> None:
    gen = torch.Generator().manual_seed(5)
    layout, embs, r = _random_layout(gen)
    rt = r.transpose(1, 2).contiguous().requires_grad_(True)
    t = DenseContraction.apply(layout, rt, r, *embs)
    ref = _formula(layout, embs, rt.transpose(1, 2))
    torch.testing.assert_close(t, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(t.shape, dtype=torch.float64, generator=gen)
    got = torch.autograd.grad((t * w).sum(), [rt, *embs])
    want = torch.autograd.grad((ref * w).sum(), [rt, *embs])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert got[1].abs().sum() > 0 and got[2][-1].abs().sum() > 0  # a pad-only part gets its pad gradient


def test_dense_contraction_gradcheck() -> None:
    layout, embs, r = _random_layout(torch.Generator().manual_seed(6))
    rt = r.transpose(1, 2).contiguous().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda rt, *e: DenseContraction.apply(layout, rt, r, *e), (rt, *embs))


def test_parameter_gradients_with_shared_rows_equal_those_without() -> None:
    """The training environment (rows of equal r shared, constants cached) gives the same
    loss gradients as the position-differentiable one (no sharing, nothing cached)."""
    model = tiny_model("polar", type_one_side=False).train()
    coord, atype, box = random_frames(2, 14, 2, box_len=4.5, seed=23)
    c, a, b = torch.as_tensor(coord), torch.as_tensor(atype), torch.as_tensor(box)
    centres = model.centres(a)
    nl = build_neighbor_list(c, a, b, centres.index, model.rcut, model.sel)
    params = [p for p in model.parameters() if p.requires_grad]
    d = model.descriptor

    def grads(differentiable: bool) -> list[torch.Tensor]:
        env = environment(nl, centres.types.repeat(2), model.ntypes, d.rcut_smth, d.rcut, d.dtype,
                          differentiable=differentiable)
        assert bool(env.distinct) != differentiable
        out = model.forward_env(env, centres, 2, 14).atomic
        return list(torch.autograd.grad((out * out).sum(), params))

    for g1, g2 in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)
