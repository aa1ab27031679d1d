"""Checkpoints: self-contained, weights_only-loadable, clear errors for bad files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import FORMAT_VERSION, load_model, read_checkpoint, save_checkpoint
from model.errors import CheckpointError
from model.inference import predict, save_predictions_npz
from tests.model.conftest import random_frames, tiny_model


@pytest.mark.parametrize("kind", ["dipole", "polar"])
def test_round_trip_gives_identical_predictions(tmp_path: Path, kind: str) -> None:
    model = tiny_model(kind, fit_diag=False) if kind == "polar" else tiny_model(kind)
    save_checkpoint(tmp_path / "m.pt", model, metrics={"val_rmse": 0.5})
    raw = torch.load(tmp_path / "m.pt", weights_only=True)  # only plain types inside
    assert raw["format_version"] == FORMAT_VERSION and raw["kind"] == kind
    assert raw["type_map"] == ["O", "H"] and raw["sel_type"] == [0, 1]  # tiny models select all types
    assert set(raw["state_dict"]) == set(model.state_dict())
    again = load_model(tmp_path / "m.pt")
    coord, atype, box = random_frames(2, 12, 2, box_len=4.5, seed=5)
    a, b = predict(model, coord, atype, box), predict(again, coord, atype, box)
    assert np.array_equal(a.atomic_tensor, b.atomic_tensor)


def test_precision_override(tmp_path: Path) -> None:
    model = tiny_model("dipole")
    save_checkpoint(tmp_path / "m.pt", model)
    m32 = load_model(tmp_path / "m.pt", precision="float32")
    assert next(m32.parameters()).dtype == torch.float32
    coord, atype, box = random_frames(1, 12, 2, box_len=4.5, seed=6)
    np.testing.assert_allclose(predict(m32, coord, atype, box).global_tensor,
                               predict(model, coord, atype, box).global_tensor, rtol=1e-4, atol=1e-6)


class Evil:
    def __reduce__(self):  # a pickle that would run code when loaded without weights_only
        return (print, ("pwned",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a checkpoint", "not a loadable model file"),
        (None, "neither a dptensor nor a DeePMD-kit checkpoint"),
        ("evil", "not a loadable model file"),
        ("future", "newer than this dptensor"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, content, message: str, capsys) -> None:
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is None:
        torch.save({"hello": 1}, path)
    elif content == "evil":
        with open(path, "wb") as f:
            pickle.dump({"x": Evil()}, f)
    else:
        save_checkpoint(path, tiny_model("dipole"))
        ck = torch.load(path, weights_only=True)
        ck["format_version"] = FORMAT_VERSION + 1
        torch.save(ck, path)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)
    assert "pwned" not in capsys.readouterr().out


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt")


def test_streamed_predictions_file(tmp_path: Path) -> None:
    model = tiny_model("polar")
    coord, atype, box = random_frames(5, 12, 2, box_len=4.5, seed=7)
    save_predictions_npz(tmp_path / "p.npz", model, coord, atype, box, batch_size=2)
    with np.load(tmp_path / "p.npz", allow_pickle=False) as npz:
        ref = predict(model, coord, atype, box)
        assert npz["global"].shape == (5, 9) and npz["atomic"].shape == (5, 12, 9)
        np.testing.assert_allclose(npz["atomic"], ref.atomic_tensor, rtol=1e-12, atol=1e-15)  # chunking only
        assert str(npz["kind"]) == "polar" and npz["type_map"].tolist() == ["O", "H"]
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_streamed_predictions_stop_leaves_no_file(tmp_path: Path) -> None:
    model = tiny_model("dipole")
    coord, atype, box = random_frames(6, 12, 2, box_len=4.5, seed=8)
    seen: list[int] = []
    with pytest.raises(InterruptedError):
        save_predictions_npz(tmp_path / "p.npz", model, coord, atype, box, batch_size=2,
                             progress=lambda done, total: seen.append(done), should_stop=lambda: len(seen) >= 2)
    assert seen == [2, 4]
    assert list(tmp_path.iterdir()) == []


def test_concurrent_chunks_equal_sequential_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks on several threads (the default on multi-core CPUs) give exactly the
    sequential result — including the blocked path's per-thread scratch buffers."""
    import torch

    from model import descriptor, descriptor_fast
    from model.inference import iter_predict

    monkeypatch.setattr(descriptor, "DENSE_CONTRACTION_MAX", 0)
    monkeypatch.setattr(descriptor_fast, "EMBED_BLOCK", 5)
    model = tiny_model("polar", fit_diag=False)
    coord, atype, box = random_frames(9, 14, 2, box_len=4.8, seed=9)
    sequential = list(iter_predict(model, coord, atype, box, batch_size=2, workers=1))
    threads_before = torch.get_num_threads()
    for _ in range(3):
        concurrent = list(iter_predict(model, coord, atype, box, batch_size=2, workers=4))
        assert [f0 for f0, _ in concurrent] == [0, 2, 4, 6, 8]
        for (_, a), (_, b) in zip(sequential, concurrent, strict=True):
            assert np.array_equal(a.atomic_tensor, b.atomic_tensor)
    assert torch.get_num_threads() == threads_before
