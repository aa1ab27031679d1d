"""The hand-written backward nodes of the training path against autograd through the
readable formula (float64, to 1e-12), and against finite differences (gradcheck)."""

from __future__ import annotations

import torch

from model.contraction import Layout, SegmentContraction
from model.descriptor import environment
from model.neighbor import build_neighbor_list
from tests.model.conftest import random_frames, tiny_model


def _layout(seed: int, nf: int = 2, nat: int = 14) -> tuple[Layout, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The layout of a real environment (both centre types, a group of shared values, pad
    rows), random net outputs of its shape: (layout, outputs, rn [P, 4], pair → centre)."""
    model = tiny_model("dipole", type_one_side=False)
    coord, atype, box = random_frames(nf, nat, 2, box_len=4.5, seed=seed)
    c, a, b = torch.as_tensor(coord), torch.as_tensor(atype), torch.as_tensor(box)
    env = model.environment(c, a, b, model.centres(a))
    assert env.distinct, "the test needs a group of shared values"
    consts = model.descriptor.constants(env, dense=True)
    assert consts.dense is not None
    layout = consts.dense.layout
    assert any(p.with_pad for p in layout.parts) and len(layout.runs) > len(layout.parts)
    gen = torch.Generator().manual_seed(seed)
    embs = [torch.randn(x.shape[0], 5, dtype=torch.float64, generator=gen, requires_grad=True)
            for x in consts.dense.inputs]
    return layout, embs, consts.rn.clone().requires_grad_(True), env.centre


def _formula(layout: Layout, embs: list[torch.Tensor], rn: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """T_c = (Σ_pairs of c R̃ᵀ G + Σ_g w_cg R̃pad_gᵀ G(s_pad)_g) / Σsel, pair by pair."""
    m1 = embs[0].shape[1]
    t = [torch.zeros(4, m1, dtype=rn.dtype) for _ in range(layout.n_centres)]
    for part, emb in zip(layout.parts, embs, strict=True):
        for i, p in enumerate(range(part.start, part.stop)):
            g = emb[part.distinct[i] if part.distinct is not None else i]
            c = int(centre[p])
            t[c] = t[c] + rn[p][:, None] * g[None, :]
        if part.with_pad:
            for c in range(layout.n_centres):
                t[c] = t[c] + layout.pad_weights[c, part.group] * layout.pad_r[part.group][:, None] * emb[part.n][None]
    return torch.stack(t) / layout.nnei


def test_segment_contraction_equals_the_pairwise_formula_with_its_gradients() -> None:
    layout, embs, rn, centre = _layout(5)
    t = SegmentContraction.apply(layout, rn, *embs)
    ref = _formula(layout, embs, rn, centre)
    torch.testing.assert_close(t, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(t.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = torch.autograd.grad((t * w).sum(), [rn, *embs])
    want = torch.autograd.grad((ref * w).sum(), [rn, *embs])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_segment_contraction_gradcheck() -> None:
    layout, embs, rn, _ = _layout(6, nf=1, nat=8)
    assert torch.autograd.gradcheck(lambda rn, *e: SegmentContraction.apply(layout, rn, *e), (rn, *embs))


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
