"""The tensor loss as pure functions.

loss = pref · L_global + pref_atomic · L_atomic, each term only where the batch has that
label and its pref is non-zero.
  L_atomic = mean over selected atoms and components of (pred − label)²
  L_global = mean over frames and components of (Σ_i pred_i − label)²
L_global is not divided by N_sel (DeePMD-kit's PyTorch backend; its TensorFlow backend
divides): the reference numbers we compare against come from the PyTorch backend, and the
same pref then means the same weighting for users moving from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor


@dataclass
class LossTerms:
    loss: Tensor  # [] weighted total
    l2_atomic: Tensor | None  # [] or None when the term is absent
    l2_global: Tensor | None
    n_sel: int  # atoms of sel_type per frame (normalises the global RMSE)


def tensor_loss(atomic_pred: Tensor, global_pred: Tensor, atomic_label: Tensor | None,
                global_label: Tensor | None, sel_mask: Tensor, pref: float, pref_atomic: float) -> LossTerms:
    """atomic_* [nf, nat, dim], global_* [nf, dim], sel_mask [nat] bool."""
    loss = global_pred.new_zeros(())
    l2_a = l2_g = None
    if pref_atomic > 0 and atomic_label is not None:
        diff = (atomic_pred - atomic_label)[:, sel_mask]  # [nf, nsel, dim]
        l2_a = (diff * diff).mean()
        loss = loss + pref_atomic * l2_a
    if pref > 0 and global_label is not None:
        diff = global_pred - global_label  # [nf, dim]
        l2_g = (diff * diff).mean()
        loss = loss + pref * l2_g
    return LossTerms(loss=loss, l2_atomic=l2_a, l2_global=l2_g, n_sel=int(sel_mask.sum()))


@dataclass
class Metrics:
    """lcurve quantities; nan where the label is absent."""

    rmse: float
    rmse_lc: float
    rmse_gl: float  # √(mean squared global error) / N_sel
    rmse_gl_abs: float  # √(mean squared global error)

    @staticmethod
    def from_terms(terms: list[LossTerms]) -> Metrics:
        """Average squared errors over batches (each term over the batches that have it)."""
        def mean(values: list[float]) -> float:
            return sum(values) / len(values) if values else math.nan

        total = mean([float(t.loss.detach()) for t in terms])
        lc = mean([float(t.l2_atomic.detach()) for t in terms if t.l2_atomic is not None])
        gl_abs = mean([float(t.l2_global.detach()) for t in terms if t.l2_global is not None])
        gl = mean([float(t.l2_global.detach()) / t.n_sel**2 for t in terms if t.l2_global is not None])
        return Metrics(rmse=math.sqrt(total) if terms else math.nan, rmse_lc=math.sqrt(lc),
                       rmse_gl=math.sqrt(gl), rmse_gl_abs=math.sqrt(gl_abs))
