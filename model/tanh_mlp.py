"""Training path of a tanh MLP as one autograd node with a hand-written backward.

Generic autograd records four to five nodes per layer (matmul, sigmoid, the affine rest,
the residual) and runs a separate elementwise pass for each in the backward, plus the
bookkeeping of every saved tensor. A training step calls the nets with thousands of rows
(the embedding nets) a dozen times, so those passes and that bookkeeping, not the
matrix products, dominated the step. Here a layer's backward is one fused σ' kernel and the matrix products (the per-column
factor rides on the small products, the residual on the input-gradient product).

Layer (as ``Dense.hidden``): y = (1 − 2σ(−2(xW + b))) [· idt] [+ x | + (x, x)];
optional last layer: y = xW + b (no activation, no residual).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def affine(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """x W + b; a 1-wide input (the embedding net's first layer) is an outer product, no GEMM."""
    return torch.addcmul(b, x, w) if x.shape[1] == 1 else torch.addmm(b, x, w)


def add_residual_(y: Tensor, x: Tensor) -> Tensor:
    """y += x (out = in) or y += (x, x) (out = 2·in, without materialising the concatenation)."""
    n_in = x.shape[1]
    if y.shape[1] == n_in:
        return y.add_(x)
    y.view(-1, 2, n_in).add_(x[:, None, :])
    return y


def tanh_output(u: Tensor, idt: Tensor | None, out: Tensor | None) -> Tensor:
    """(1 − 2u) [· idt], written into ``out`` when given."""
    if idt is not None:
        return torch.addcmul(idt, u, -2.0 * idt, out=out)
    if out is not None:
        return torch.sub(torch.ones((), dtype=u.dtype, device=u.device), u, alpha=2.0, out=out)
    return torch.rsub(u, 1.0, alpha=2.0)


def tanh_layer(x: Tensor, w: Tensor, b: Tensor, idt: Tensor | None, residual: bool,
               out: Tensor | None = None, x_ones: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(u, y) of a hidden layer: u = σ(−2(xW + b)), y = (1 − 2u) [· idt] [+ residual], y
    written into ``out`` when given. tanh(a) = 1 − 2σ(−2a), with the −2 inside the matmul:
    float64 tanh is several times slower than sigmoid on CPUs, and 1 − 2u is a single
    scalar pass (rsub), where 2σ(2a) − 1 would take two or a slower broadcast.
    ``x_ones``: x with a ones column appended (its storage), so the bias rides in the product."""
    # (×−2 is exact: −2b + x·(−2w) rounds as −2(b + xw), in one pass)
    if x_ones is not None:
        z = torch.mm(x_ones, torch.cat([w, b[None]]) * -2.0)
    elif x.shape[1] == 1:
        z = torch.addcmul(-2.0 * b, x, -2.0 * w)
    else:
        z = torch.addmm(b, x, w, beta=-2.0, alpha=-2.0)
    u = z.sigmoid_()  # [rows, n_out]; z is this function's own, and σ's backward reads only u
    y = tanh_output(u, idt, out)
    if residual:
        # In place is safe under autograd: the backward of y's op does not use y.
        add_residual_(y, x)
    return u, y


def layer_params(layers: list[Any]) -> list[Tensor]:
    """matrix, bias[, idt] of each layer, flat, in the order ``TanhMLP.apply`` takes them."""
    out: list[Tensor] = []
    for layer in layers:
        out += [layer.matrix, layer.bias] + ([layer.idt] if layer.idt is not None else [])
    return out


# Rows from which a hidden layer hands the next one its output with a ones column appended,
# so the next product carries the bias (x W + b = [x 1][W; b]): addmm would first copy the
# bias into every output row, a pass as long as the product's output, and ∂b would be one
# more pass over ∂z where [x 1]ᵀ∂z gives ∂W and ∂b in one product.
BIAS_IN_PRODUCT_MIN_ROWS = 256


class TanhMLP(torch.autograd.Function):
    """y = MLP(x). ``spec`` has one (has_idt, residual, is_linear) per layer; ``params``
    are ``layer_params(layers)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, spec: tuple[tuple[bool, bool, bool], ...], *params: Tensor) -> Tensor:
        saved: list[Tensor] = []
        ones_col: list[bool] = []  # per layer: its saved input carries the ones column
        h, k = x, 0
        with_ones = False
        for i, (has_idt, residual, linear) in enumerate(spec):
            w, b = params[k], params[k + 1]
            idt = params[k + 2] if has_idt else None
            k += 3 if has_idt else 2
            saved.append(h)
            ones_col.append(with_ones)
            x_in = h[:, :-1] if with_ones else h  # [rows, n_in]
            if linear:  # (never handed a ones column: see below)
                h = affine(h, w, b)
                saved.append(h.new_empty(0))
                continue
            rows, n_out = h.shape[0], w.shape[1]
            # the ones column goes only to hidden layers: for a linear output layer (the
            # fitting nets', few rows, up to 5050 columns) appending b to W costs more
            with_ones = rows >= BIAS_IN_PRODUCT_MIN_ROWS and i + 1 < len(spec) and not spec[i + 1][2]
            out = None
            if with_ones:
                buf = h.new_empty(rows, n_out + 1)
                buf[:, n_out] = 1.0
                out = buf[:, :n_out]
            u, y = tanh_layer(x_in, w, b, idt, residual, out=out, x_ones=h if ones_col[-1] else None)
            saved.append(u)
            h = buf if with_ones else y
        ctx.spec = spec
        ctx.ones_col = ones_col
        ctx.save_for_backward(*saved, *params)
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        spec = ctx.spec
        tensors = ctx.saved_tensors
        n_layers = len(spec)
        acts, params = tensors[: 2 * n_layers], tensors[2 * n_layers:]
        # parameter offsets per layer
        offsets, k = [], 0
        for has_idt, _, _ in spec:
            offsets.append(k)
            k += 3 if has_idt else 2
        grads: list[Tensor | None] = [None] * len(params)
        dy = dy.contiguous()
        owned = False  # dy is a tensor of this backward (not autograd's), free to overwrite
        for i in range(n_layers - 1, -1, -1):
            has_idt, residual, linear = spec[i]
            h, u = acts[2 * i], acts[2 * i + 1]
            o = offsets[i]
            w = params[o]
            # ∂y/∂a = 4σ(1−σ)[·idt] per column: σ' is one pass; the column factor goes on
            # the small products (∂W, ∂b) and on Wᵀ, not on another pass over the rows.
            if linear:
                g, factor = dy, None
            else:
                g = torch.ops.aten.sigmoid_backward(dy, u)
                if has_idt:
                    # y = t·idt with t = 1 − 2u: ∂idt = Σ dy·t = Σ dy − 2 Σ dy·u
                    grads[o + 2] = dy.sum(0) - 2.0 * (dy * u).sum(0)
                    factor = 4.0 * params[o + 2]  # [n_out]
                else:
                    factor = torch.full((), 4.0, dtype=g.dtype, device=g.device)
            if ctx.ones_col[i]:  # [x 1]ᵀ g = [∂W; ∂b]
                n_in = h.shape[1] - 1
                d_wb = torch.mm(h.t(), g)
                d_w, d_b = d_wb[:n_in], d_wb[n_in]
            else:
                n_in = h.shape[1]
                d_w = torch.mm(h.t(), g)  # a 1-wide input makes it a matrix-vector product
                d_b = g.sum(0)
            grads[o], grads[o + 1] = (d_w, d_b) if factor is None else (d_w.mul_(factor), d_b.mul_(factor))
            if i == 0 and not ctx.needs_input_grad[0]:
                break
            w_t = w.t() if factor is None else (w * factor).t()  # [n_out, n_in]
            res, res_owned = None, False
            if residual and not linear:
                # the residual's gradient is the start of ∂L/∂x: accumulate the product onto
                # it in place (addmm with an input matrix would copy it first)
                if dy.shape[1] == n_in:
                    res, res_owned = dy, owned
                else:
                    res, res_owned = torch.add(dy[:, :n_in], dy[:, n_in:]), True
            if n_in == 1:
                dh = torch.mm(g, w_t)
                dy = dh if res is None else dh.add_(res)
            elif res is None:
                dy = torch.mm(g, w_t)
            else:
                dy = res.addmm_(g, w_t) if res_owned else torch.addmm(res, g, w_t)
            owned = True
        d_x = dy if ctx.needs_input_grad[0] else None
        return (d_x, None, *grads)
