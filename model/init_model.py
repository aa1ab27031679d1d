"""``dptensor train --init-model M``: start from another model's weights and statistics.

As ``dp train --init-model`` does: the input.json still describes the model, and the
source must have that architecture; its weights, environment statistics (davg/dstd) and
polar shift are taken as they are (not recomputed from the new data). The source may be
our checkpoint, a DeePMD-kit ``.pt`` checkpoint, or a DeePMD-kit ``.dp``/``.yaml``.
Keys the input leaves to the data (``type_map`` absent, ``sel: "auto"``) take the
source's values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.config import ModelConfig
from model.errors import ConfigError
from model.tensor_model import TensorModel

# the keys that fix the function and the shapes of the weights
_DESCRIPTOR_KEYS = ("type", "sel", "rcut", "rcut_smth", "neuron", "axis_neuron", "resnet_dt", "type_one_side",
                    "activation_function", "precision")
_FITTING_KEYS = ("type", "neuron", "resnet_dt", "activation_function", "precision", "fit_diag", "shift_diag")


def _norm(key: str, value: Any) -> Any:
    if key == "precision":
        return "float64" if value == "default" else value
    if key == "type":
        return "se_e2_a" if value == "se_a" else value
    if isinstance(value, float) and value.is_integer():
        return float(value)
    return value


def architecture(config: ModelConfig) -> dict[str, Any]:
    """The architecture as flat JSON paths → values (what must agree to reuse weights)."""
    assert config.type_map is not None
    nt = len(config.type_map)
    desc, fit = config.descriptor, config.fitting_net
    out: dict[str, Any] = {"model.type_map": list(config.type_map),
                           "model.sel_type (fitting_net.sel_type / atom_exclude_types)": config.sel_type(nt)}
    for key in _DESCRIPTOR_KEYS:
        out[f"model.descriptor.{key}"] = _norm(key, getattr(desc, key))
    for key in _FITTING_KEYS:
        if fit.type == "dipole" and key in ("fit_diag", "shift_diag"):
            continue
        out[f"model.fitting_net.{key}"] = _norm(key, getattr(fit, key))
    if fit.type == "polar":
        scale = fit.scale if isinstance(fit.scale, list) else [fit.scale] * nt
        out["model.fitting_net.scale"] = [float(s) for s in scale]
    return out


def fill_from_source(wanted: ModelConfig, source: ModelConfig) -> ModelConfig:
    """type_map and sel that the input leaves open are the source's."""
    update: dict[str, Any] = {}
    if wanted.type_map is None:
        update["type_map"] = source.type_map
    if not isinstance(wanted.descriptor.sel, list):
        update["descriptor"] = wanted.descriptor.model_copy(update={"sel": list(source.descriptor.sel)})
    return wanted.model_copy(update=update) if update else wanted


def check_same_architecture(wanted: ModelConfig, source: ModelConfig, source_name: str) -> None:
    a, b = architecture(wanted), architecture(source)
    differing = [(k, a[k], b.get(k)) for k in a if a[k] != b.get(k)]
    if differing:
        lines = "; ".join(f"{k}: input.json {x!r}, init model {y!r}" for k, x, y in differing)
        raise ConfigError(f"--init-model {source_name} has another architecture than input.json: {lines}",
                          path=differing[0][0].split(" ", 1)[0])


def initial_model(wanted: ModelConfig, init_model: str | Path) -> TensorModel:
    """The model training starts from: the source's weights and statistics, after checking
    that input.json describes the same architecture."""
    from model.checkpoint import model_from_file

    source = model_from_file(init_model)
    check_same_architecture(fill_from_source(wanted, source.config), source.config, str(init_model))
    return source
