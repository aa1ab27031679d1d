"""The CUDA path: every kernel on the GPU gives the CPU's numbers (float64), keeps the
physics (equivariance), and a training step's loss and gradients match the CPU's.

Skipped where no GPU is visible (CI has none); run on a lent device with
``python -m pytest tests/model/test_cuda.py`` (bench/gpu_check.sh does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model import descriptor, descriptor_fast, reference
from model.checkpoint import load_model
from model.data import load_system
from model.loss import tensor_loss
from model.tensor_model import TensorModel
from tests.model.conftest import assert_rotated, random_frames, random_rotation, tiny_model
from tests.model.test_physics import VARIANTS as PHYSICS_VARIANTS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")

CUDA = torch.device("cuda")
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def reference_models() -> dict[str, tuple[Path, tuple[np.ndarray, np.ndarray, np.ndarray | None]]]:
    """kind → (DeePMD-kit-trained model, 4 frames of its 192-atom validation water)."""
    out = {}
    for kind in ("dipole", "polar"):
        system = load_system(DATA / "water_tensor" / kind / "validation_data_reformat" / "global_system",
                             type_map=["O", "H"])
        box = None if system.box is None else system.box[:4]
        out[kind] = (DATA / "deepmd_reference" / kind / "model_slim.pt", (system.coord[:4], system.atype, box))
    return out


VARIANTS = PHYSICS_VARIANTS[:4]  # dipole one- and two-side, polar full and diagonal


def _on(device: torch.device, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None,
        dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    return (torch.tensor(coord, dtype=dtype, device=device), torch.tensor(atype, device=device),
            None if box is None else torch.tensor(box, dtype=dtype, device=device))


def _predict(model: TensorModel, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None,
             differentiable: bool) -> tuple[np.ndarray, np.ndarray]:
    device = next(model.parameters()).device
    with torch.inference_mode(not differentiable):
        out = model(*_on(device, coord, atype, box, model.dtype), differentiable=differentiable)
    return out.global_.detach().double().cpu().numpy(), out.atomic.detach().double().cpu().numpy()


@pytest.mark.parametrize(("kind", "over"), VARIANTS)
@pytest.mark.parametrize("pbc", [True, False])
@pytest.mark.parametrize("contraction", ["dense", "blocked", "training"])
def test_cuda_kernels_match_the_naive_formula(kind: str, over: dict, pbc: bool, contraction: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(descriptor, "DENSE_CONTRACTION_MAX_CUDA", 10**12 if contraction == "dense" else 0)
    monkeypatch.setattr(descriptor_fast, "EMBED_BLOCK", 7)
    model = tiny_model(kind, **over)
    coord, atype, box = random_frames(2, 14, 2, box_len=4.5, seed=11, pbc=pbc)
    ref_g, ref_a = reference.predict(reference.params_from_model(model), coord, atype, box)
    glob, atomic = _predict(model.to(CUDA), coord, atype, box, differentiable=contraction == "training")
    np.testing.assert_allclose(atomic, ref_a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(glob, ref_g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["dipole", "polar"])
@pytest.mark.parametrize("differentiable", [False, True])
def test_reference_model_on_cuda_equals_cpu(kind: str, differentiable: bool, reference_models: dict) -> None:
    """The DeePMD-kit-trained water models, 192-atom periodic frames: GPU = CPU to 1e-10."""
    path, system = reference_models[kind]
    coord, atype, box = system
    cpu = load_model(path)
    gpu = load_model(path, device=CUDA)
    g_cpu, a_cpu = _predict(cpu, coord, atype, box, differentiable)
    g_gpu, a_gpu = _predict(gpu, coord, atype, box, differentiable)
    scale = np.abs(a_cpu).max()
    assert scale > 1e-3
    np.testing.assert_allclose(a_gpu, a_cpu, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(g_gpu, g_cpu, rtol=0, atol=1e-10 * np.abs(g_cpu).max())


@pytest.mark.parametrize("kind", ["dipole", "polar"])
def test_float32_on_cuda_close_to_float64(kind: str, reference_models: dict) -> None:
    path, (coord, atype, box) = reference_models[kind]
    g64, _ = _predict(load_model(path), coord, atype, box, False)
    g32, _ = _predict(load_model(path, device=CUDA, precision="float32"), coord, atype, box, False)
    np.testing.assert_allclose(g32, g64, rtol=0, atol=2e-4 * np.abs(g64).max())


@pytest.mark.parametrize(("kind", "over"), VARIANTS)
def test_rotation_equivariance_on_cuda(kind: str, over: dict) -> None:
    model = tiny_model(kind, **over).to(CUDA)
    coord, atype, box = random_frames(2, 16, 2, box_len=5.0, seed=12)
    assert box is not None
    q = random_rotation(1)
    assert_rotated(kind, q, _predict(model, coord, atype, box, False),
                   _predict(model, coord @ q.T, atype, box @ q.T, False))


@pytest.mark.parametrize("kind", ["dipole", "polar"])
def test_training_step_gradients_on_cuda_equal_cpu(kind: str) -> None:
    """Same weights, same batch: the loss and every parameter's gradient agree (float64)."""
    cpu = tiny_model(kind).train()
    gpu = tiny_model(kind).train().to(CUDA)
    coord, atype, box = random_frames(3, 16, 2, box_len=5.0, seed=21)
    rng = np.random.default_rng(4)
    glabel = rng.normal(size=(3, cpu.dim))
    alabel = rng.normal(size=(3, 16, cpu.dim))
    grads = []
    for model, dev in ((cpu, torch.device("cpu")), (gpu, CUDA)):
        c, a, b = _on(dev, coord, atype, box)
        out = model(c, a, b, differentiable=True)
        mask = torch.isin(a, torch.tensor(model.sel_type, device=dev))
        terms = tensor_loss(out.atomic, out.global_, torch.tensor(alabel, device=dev),
                            torch.tensor(glabel, device=dev), mask, 1.0, 1.0)
        model.zero_grad()
        terms.loss.backward()
        grads.append((float(terms.loss.detach()), {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()
                                          if p.grad is not None}))
    (loss_c, grad_c), (loss_g, grad_g) = grads
    assert loss_c > 0
    assert loss_g == pytest.approx(loss_c, rel=1e-11)
    assert grad_c.keys() == grad_g.keys() and len(grad_c) > 4
    for name, g in grad_c.items():
        torch.testing.assert_close(grad_g[name], g, rtol=1e-9, atol=1e-12 * max(float(g.abs().max()), 1.0),
                                   msg=lambda m, n=name: f"{n}: {m}")
