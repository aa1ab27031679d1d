"""Tensor loss and learning-rate schedule, against hand computations and DeePMD-kit's lcurve."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import LearningRateConfig
from model.loss import Metrics, tensor_loss
from model.train import exp_lr

REF = Path(__file__).resolve().parents[3] / "shared" / "data" / "deepmd_reference"


def test_loss_terms_by_hand() -> None:
    # 2 frames, 3 atoms (atoms 0 and 2 selected), dipoles
    pred = torch.tensor([[[1.0, 0, 0], [9, 9, 9], [0, 2, 0]], [[0.0, 0, 1], [9, 9, 9], [1, 1, 1]]])
    label = torch.tensor([[[0.0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0.0, 0, 0], [0, 0, 0], [1, 1, 1]]])
    mask = torch.tensor([True, False, True])
    gpred = pred[:, mask].sum(1)  # the model's global output only sums selected atoms
    glabel = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    terms = tensor_loss(pred, gpred, label, glabel, mask, pref=2.0, pref_atomic=0.5)
    # atomic: squared errors 1 + 4 + 1 + 0 over 2 frames × 2 atoms × 3 comps = 12 values
    l2_a = (1 + 4 + 1) / 12
    # global: frame0 pred (1,2,0) − (1,1,1) → (0,1,−1); frame1 (1,1,2) → (1,1,2); squares 0+1+1+1+1+4 = 8 over 6
    l2_g = 8 / 6
    assert terms.l2_atomic is not None and terms.l2_global is not None
    assert float(terms.l2_atomic) == pytest.approx(l2_a)
    assert float(terms.l2_global) == pytest.approx(l2_g)
    assert float(terms.loss) == pytest.approx(2.0 * l2_g + 0.5 * l2_a)
    m = Metrics.from_terms([terms])
    assert m.rmse_lc == pytest.approx(math.sqrt(l2_a))
    assert m.rmse_gl == pytest.approx(math.sqrt(l2_g) / 2)  # / N_sel
    assert m.rmse == pytest.approx(math.sqrt(2.0 * l2_g + 0.5 * l2_a))


def test_absent_or_zero_weighted_terms_are_dropped() -> None:
    pred = torch.ones(1, 2, 3)
    mask = torch.tensor([True, True])
    only_global = tensor_loss(pred, pred.sum(1), None, torch.zeros(1, 3), mask, pref=1.0, pref_atomic=1.0)
    assert only_global.l2_atomic is None and float(only_global.loss) == pytest.approx(4.0)
    zero_pref = tensor_loss(pred, pred.sum(1), torch.zeros(1, 2, 3), torch.zeros(1, 3), mask, pref=0.0,
                            pref_atomic=1.0)
    assert zero_pref.l2_global is None and float(zero_pref.loss) == pytest.approx(1.0)
    m = Metrics.from_terms([only_global])
    assert math.isnan(m.rmse_lc) and not math.isnan(m.rmse_gl)


@pytest.mark.parametrize(("task", "stop_lr"), [("dipole", 5e-8), ("polar", 3.51e-7)])
def test_exp_schedule_matches_deepmd_kit_lcurve(task: str, stop_lr: float) -> None:
    rows = np.loadtxt(REF / task / "lcurve.out")
    lr_at = exp_lr(LearningRateConfig(start_lr=0.01, stop_lr=stop_lr, decay_steps=5000), 2000)
    for step, lr in zip(rows[:, 0].astype(int), rows[:, -1], strict=True):
        # lcurve prints 2 significant digits; row s shows the lr of its batch (index s − 1)
        assert lr_at(step - 1) == pytest.approx(lr, rel=0.051), step


def test_schedule_decays_to_stop_lr_and_warms_up() -> None:
    cfg = LearningRateConfig(start_lr=1e-3, stop_lr=1e-6, decay_steps=100)
    lr_at = exp_lr(cfg, 10_000)
    assert lr_at(0) == 1e-3
    assert lr_at(9_999) == pytest.approx(1e-6, rel=0.1)
    assert lr_at(10**6) >= 1e-6
    warm = exp_lr(cfg, 1000, warmup=10)
    assert warm(0) == pytest.approx(1e-4) and warm(9) == pytest.approx(1e-3)
