"""The inference kernels of descriptor_fast against the readable forms they replace
(float64, to 1e-12): the embedding nets in z-space and the blocked contraction."""

from __future__ import annotations

import pytest
import torch

from model import descriptor, descriptor_fast
from model.descriptor_fast import z_net, z_net_of
from model.nets import MLP
from tests.model.conftest import random_frames, tiny_model


@pytest.mark.parametrize("sizes", [[1, 4, 8, 16], [1, 8, 8, 8], [1, 5, 7], [1, 6], [1, 3, 6, 6, 12]])
@pytest.mark.parametrize("resnet_dt", [False, True])
def test_z_space_net_is_the_net(sizes: list[int], resnet_dt: bool) -> None:
    """y = α − 2z for every residual pattern (none, equal widths, doubling) with and
    without the timestep."""
    gen = torch.Generator().manual_seed(sum(sizes) + resnet_dt)
    net = MLP(sizes, activation="tanh", resnet_dt=resnet_dt, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        for layer in net.layers:  # timesteps far from 1, so a wrong fold shows
            if layer.idt is not None:
                layer.idt.uniform_(0.3, 1.7, generator=gen)
        x = 3.0 * torch.rand(50, 1, dtype=torch.float64, generator=gen) - 1.0
        znet = z_net(net)
        z = znet.forward_into(x, torch.empty(50, sizes[-1], dtype=torch.float64))
        ref = net(x, differentiable=False)
    torch.testing.assert_close(znet.alpha - 2.0 * z, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("over", [{}, {"type_one_side": False, "resnet_dt_desc": True}])
def test_blocked_contraction_equals_the_dense_one(over: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same T from the blocked z-space kernel (small blocks, uneven ends) and the dense
    padded contraction of plain G."""
    model = tiny_model("polar", **over)
    coord, atype, box = random_frames(3, 14, 2, box_len=4.5, seed=21)
    args = (torch.as_tensor(coord), torch.as_tensor(atype), torch.as_tensor(box))
    with torch.inference_mode():
        monkeypatch.setattr(descriptor, "DENSE_CONTRACTION_MAX", 10**12)
        dense = model(*args, differentiable=False).atomic
        monkeypatch.setattr(descriptor, "DENSE_CONTRACTION_MAX", 0)
        monkeypatch.setattr(descriptor_fast, "EMBED_BLOCK", 5)
        blocked = model(*args, differentiable=False).atomic
    torch.testing.assert_close(blocked, dense, rtol=1e-12, atol=1e-12)


def test_z_space_nets_follow_the_weights() -> None:
    """The cached z-space net is rebuilt after an in-place change of the weights (as an
    optimizer step makes) and after a cast."""
    model = tiny_model("dipole")
    desc = model.descriptor
    first = z_net_of(desc, 0)
    assert z_net_of(desc, 0) is first
    with torch.no_grad():
        desc.net(0).layers[1].matrix.mul_(1.5)
    second = z_net_of(desc, 0)
    assert second is not first
    layer = second.layers[1]  # its matrix without the bias row and the ones column
    torch.testing.assert_close(layer.matrix[:layer.width_in, :layer.width], 4.0 * desc.net(0).layers[1].matrix)
    model.set_precision(torch.float32)
    assert z_net_of(desc, 0).alpha.dtype == torch.float32


def test_environment_constants_follow_the_statistics() -> None:
    """The normalised rows kept on a reused environment (training) are recomputed when the
    statistics change in place (a statistics update or a load)."""
    model = tiny_model("polar")
    coord, atype, box = random_frames(2, 14, 2, box_len=4.5, seed=22)
    c, a, b = torch.as_tensor(coord), torch.as_tensor(atype), torch.as_tensor(box)
    centres = model.centres(a)
    env = model.environment(c, a, b, centres)
    first = model.forward_env(env, centres, 2, 14).atomic.detach()
    assert torch.equal(model.forward_env(env, centres, 2, 14).atomic.detach(), first)  # reused
    with torch.no_grad():
        model.descriptor.dstd.mul_(1.1)
    again = model.forward_env(env, centres, 2, 14).atomic.detach()
    fresh = model(c, a, b).atomic.detach()
    torch.testing.assert_close(again, fresh, rtol=1e-13, atol=1e-13)
    assert not torch.allclose(again, first)
