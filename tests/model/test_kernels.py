"""The compiled kernels are optional: disabled or unbuildable means the PyTorch path."""

from __future__ import annotations

import pytest

from model import kernels


def test_disabled_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPTENSOR_KERNELS", "0")
    assert kernels.embed_kernels() is None


def test_a_failed_build_warns_once_and_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils.cpp_extension as ext

    def no_compiler(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error building extension: c++: not found")

    monkeypatch.setattr(ext, "load", no_compiler)
    monkeypatch.setattr(kernels, "_state", {})
    with pytest.warns(kernels.KernelWarning, match="c\\+\\+: not found"):
        assert kernels.embed_kernels() is None
    assert kernels.embed_kernels() is None  # remembered: no second attempt, no second warning
