"""DeePMD-kit's serialized model (.dp / .yaml): export → import is the same function for
every configuration, and malformed or hostile files are clear errors (never code)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from model.checkpoint import load_model, save_checkpoint
from model.dpmodel_export import export_model
from model.dpmodel_file import read_dpmodel
from model.errors import CheckpointError
from model.inference import predict
from model.tensor_model import TensorModel
from tests.model.conftest import random_frames, tiny_model

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "dipole_one_side": ("dipole", {"sel_type": [0]}),
    "dipole_two_side_resnet_relu": ("dipole", {"type_one_side": False, "resnet_dt_desc": True, "activation": "relu"}),
    "dipole_relu6": ("dipole", {"activation": "relu6", "resnet_dt": False}),
    "polar_diag_scale_sigmoid": ("polar", {"fit_diag": True, "scale": [2.0, 0.5], "atom_exclude_types": [1],
                                           "activation": "sigmoid"}),
    "polar_full_noshift_f32": ("polar", {"fit_diag": False, "shift_diag": False, "precision": "float32"}),
    "polar_full_softplus": ("polar", {"fit_diag": False, "activation": "softplus"}),
    "polar_diag_linear": ("polar", {"fit_diag": True, "activation": "linear", "sel_type": [0]}),
}


def _model(name: str) -> TensorModel:
    kind, overrides = CONFIGS[name]
    return tiny_model(kind, **overrides)


@pytest.mark.parametrize("suffix", [".dp", ".yaml"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_export_then_import_is_the_same_model(tmp_path: Path, name: str, suffix: str) -> None:
    model = _model(name)
    save_checkpoint(tmp_path / "model.pt", model)
    out = export_model(load_model(tmp_path / "model.pt"), tmp_path / f"model{suffix}")
    back = load_model(out)
    assert back.config.to_json() == model.config.to_json() or back.kind == model.kind
    for pbc in (True, False):
        coord, atype, box = random_frames(2, 16, 2, box_len=5.0, seed=4, pbc=pbc)
        a, b = predict(model, coord, atype, box), predict(back, coord, atype, box)
        tol = 1e-6 if model.dtype.itemsize == 4 else 1e-13
        assert np.abs(a.atomic_tensor).max() > 1e-3
        np.testing.assert_allclose(b.atomic_tensor, a.atomic_tensor, rtol=0, atol=tol * np.abs(a.atomic_tensor).max())
        np.testing.assert_allclose(b.global_tensor, a.global_tensor, rtol=0, atol=tol * np.abs(a.global_tensor).max())


def _exported(tmp_path: Path, suffix: str = ".dp") -> Path:
    return export_model(tiny_model("polar", fit_diag=False), tmp_path / f"model{suffix}")


def _edit_json(path: Path, change: Any) -> Path:
    with h5py.File(path, "a") as f:
        doc = json.loads(f.attrs["json"])
        change(doc)
        f.attrs["json"] = json.dumps(doc)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["model"].update({"@version": 99}), r"model.@version: 99 is newer"),
        (lambda d: d["model"]["fitting"].update({"@version": 9}), r"model.fitting.@version: 9 is newer"),
        (lambda d: d["model"]["descriptor"].pop("sel"), r"model.descriptor: required key 'sel' is missing"),
        (lambda d: d.pop("model"), r"required key 'model' is missing"),
        (lambda d: d["model"]["descriptor"].update(type="se_atten"), r"se_atten.*only se_e2_a"),
        (lambda d: d["model"]["fitting"].update(type="ener"), r"'ener' is not a tensor model"),
        (lambda d: d["model"]["descriptor"].update(neuron=[4, 8, 32]), r"shape .* expected"),
        (lambda d: d["model"]["descriptor"]["@variables"].update(davg="/variable_0003"), r"davg: has shape"),
        (lambda d: d["model"]["descriptor"]["@variables"].update(davg="/nope"), r"is not a dataset of this file"),
        (lambda d: d["model"]["descriptor"]["@variables"].update(davg=17), r"expected the name of a dataset"),
        (lambda d: d["model"]["fitting"]["nets"]["networks"].pop(), r"expected a list of 2 networks"),
    ],
)
def test_malformed_dp_files_are_clear_errors(tmp_path: Path, change: Any, message: str) -> None:
    path = _edit_json(_exported(tmp_path), change)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_dp_reads_only_plain_datasets_of_its_own_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4 * 46, dtype=np.float64).tobytes())
    path = _exported(tmp_path)
    with h5py.File(path, "a") as f:
        doc = json.loads(f.attrs["json"])
        f.create_dataset("ext", shape=(4 * 46,), dtype="f8", external=[(str(secret), 0, 4 * 46 * 8)])
        f["linked"] = h5py.ExternalLink(str(secret), "/x")
        f.create_dataset("huge", shape=(10**10,), dtype="f8", chunks=(1024,))  # sparse: tiny on disk
    for ref, message in (("/ext", "not a plain dataset"), ("/linked", "not a dataset of this file"),
                         ("/huge", "values, more than")):
        doc["model"]["descriptor"]["@variables"]["davg"] = ref
        with h5py.File(path, "a") as f:
            f.attrs["json"] = json.dumps(doc)
        with pytest.raises(CheckpointError, match=message):
            read_dpmodel(path)
    assert path.stat().st_size < 10**7


def test_yaml_tags_never_construct_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(CheckpointError, match="not a safe, valid YAML"):
        load_model(path)
    assert not marker.exists()
    path.write_text("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                    "g: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n")  # "billion laughs"
    with pytest.raises(CheckpointError, match="more than"):
        load_model(path)


def test_yaml_arrays_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import model.dpmodel_file as dpfile

    path = _exported(tmp_path, ".yaml")
    text = path.read_text()
    path.write_text(text.replace("dtype: float64", "dtype: object", 1))
    with pytest.raises(CheckpointError, match="dtype 'object'"):
        load_model(path)
    path.write_text(text)
    monkeypatch.setattr(dpfile, "MAX_ARRAY_VALUES", 1000)
    with pytest.raises(CheckpointError, match="more than the 1000 values"):
        load_model(path)


def test_frozen_pth_answers_with_the_conversion_command(tmp_path: Path) -> None:
    path = tmp_path / "frozen.pth"
    path.write_bytes(b"PK\x03\x04 not really a TorchScript archive")
    with pytest.raises(CheckpointError, match=r"dp convert-backend frozen.pth model.dp"):
        load_model(path)
