"""input.json validation: DeePMD-kit inputs work unchanged; mistakes name their JSON path."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from model.config import InputConfig, load_input, parse_section, parse_with_notes, read_input
from model.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "water_tensor"
INPUTS = ["dipole/dipole_input.json", "dipole/dipole_input_torch.json", "polar/polar_input.json",
          "polar/polar_input_torch.json"]


def _example(name: str = "dipole/dipole_input_torch.json") -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


@pytest.mark.parametrize("name", INPUTS)
def test_example_inputs_parse_unchanged(name: str) -> None:
    cfg, base = load_input(EXAMPLES / name)
    assert base == (EXAMPLES / name).parent.resolve()
    assert cfg.model.sel_type(2) == [0]  # sel_type [0] and atom_exclude_types [1] agree
    assert cfg.training.numb_steps == 2000
    assert cfg.loss.pref == 1.0 and cfg.loss.pref_atomic == 1.0


def _problems(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_section(raw, InputConfig)
    return info.value.problems


def test_unknown_keys_are_errors_naming_the_json_path() -> None:
    raw = _example()
    raw["model"]["descriptor"]["rcutt"] = 6.0
    raw["training"]["validation_data"]["numb_batch"] = 2
    paths = [p for p, _ in _problems(raw)]
    assert "model.descriptor.rcutt" in paths
    assert "training.validation_data.numb_batch" in paths


def test_comments_anywhere_are_ignored_and_dropped_keys_are_noted() -> None:
    raw = _example()
    raw["model"]["descriptor"]["_comment_x"] = "fine"
    raw["training"]["tensorboard"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # notes are a result, not a Python warning
        _, notes = parse_with_notes(raw, InputConfig)
    assert notes == ["training.tensorboard: accepted for DeePMD-kit compatibility but ignored"]
    assert read_input(raw).notes == tuple(notes)


def test_an_input_file_is_read_once(tmp_path: Path) -> None:
    """read_input keeps the document and the base folder; train() given the result reads
    nothing again (the worker parses once, then hands the ParsedInput on)."""
    path = tmp_path / "in.json"
    path.write_text(json.dumps(_example()))
    parsed = read_input(path)
    path.unlink()
    assert read_input(parsed) is parsed
    assert parsed.base == tmp_path.resolve() and parsed.raw == _example()


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [
        (lambda r: r["loss"].pop("pref"), "loss.pref", "missing"),
        (lambda r: r["loss"].pop("pref_atomic"), "loss.pref_atomic", "missing"),
        (lambda r: r["model"]["fitting_net"].update(type="global_polar"), "model.fitting_net", "deprecated"),
        (lambda r: r["model"]["descriptor"].update(sel=[46]), "model", "sel has 1 entries"),
        (lambda r: r["model"]["descriptor"].update(rcut_smth=5.0), "model.descriptor", "rcut_smth"),
        (lambda r: r["model"]["descriptor"].update(activation_function="swish"), "model.descriptor.activation_function",
         "not supported"),
        (lambda r: r["training"].update(numb_steps=-1), "training.numb_steps", "greater than"),
        (lambda r: r["training"]["training_data"].update(batch_size="big"), "training.training_data.batch_size",
         "batch_size"),
        (lambda r: r["loss"].update(pref=0.0, pref_atomic=0.0), "loss", "both be zero"),
        (lambda r: r["model"]["fitting_net"].update(numb_fparam=1), "model.fitting_net", "numb_fparam"),
        (lambda r: r["model"].update(type_embedding={"neuron": [8]}), "model", "type_embedding"),
    ],
)
def test_invalid_values_name_their_path(mutate, path: str, fragment: str) -> None:
    raw = copy.deepcopy(_example())
    mutate(raw)
    problems = _problems(raw)
    assert any(p == path and fragment in m for p, m in problems), problems


def test_old_names_and_polar_options() -> None:
    raw = _example("polar/polar_input.json")
    raw["training"]["stop_batch"] = raw["training"].pop("numb_steps")
    raw["model"]["fitting_net"]["scale"] = [2.0, 1.0]
    cfg = parse_section(raw, InputConfig)
    assert cfg.training.numb_steps == 2000
    assert cfg.model.fitting_net.scale == [2.0, 1.0]
    raw["model"]["fitting_net"]["scale"] = [2.0]
    assert any("scale" in m for _, m in _problems(raw))


def test_dipole_rejects_polar_only_options() -> None:
    raw = _example()
    raw["model"]["fitting_net"]["fit_diag"] = True
    assert any("polar" in m for _, m in _problems(raw))


def test_bad_json_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_input(tmp_path / "in.json")
    with pytest.raises(ConfigError, match="does not exist"):
        load_input(tmp_path / "missing.json")


@pytest.mark.parametrize(("kind", "over"), [("dipole", {}), ("polar", {"fit_diag": False}),
                                            ("polar", {"type_one_side": False, "resnet_dt_desc": True}),
                                            ("polar", {"sel_type": [0, 1], "fit_neuron": [12, 24, 24]})])
def test_parameter_count_before_building_matches_the_built_model(kind: str, over: dict) -> None:
    from model.sizing import count_parameters
    from model.tensor_model import TensorModel
    from tests.model.conftest import tiny_config

    cfg = tiny_config(kind, **over)
    assert count_parameters(cfg, 2) == sum(p.numel() for p in TensorModel(cfg).parameters())
