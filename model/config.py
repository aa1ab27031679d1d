"""Typed schema of DeePMD-kit's ``input.json`` for se_e2_a + dipole/polar models.

Names and defaults follow DeePMD-kit so that a user's existing input works unchanged.
Three kinds of key exist besides the ones we implement:

* ``_comment*`` anywhere: dropped silently (DeePMD-kit does the same);
* keys DeePMD-kit accepts that do not change the trained function here (``IGNORED``):
  dropped, and named by JSON path in the notes the parse returns (``parse_with_notes``,
  ``read_input``) — a result for the caller to show, not a Python warning;
* everything else unknown: a ``ConfigError`` naming the JSON path.
"""

from __future__ import annotations

import json
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from model.errors import ConfigError

Precision = Literal["default", "float64", "float32"]
SUPPORTED_ACTIVATIONS = ("tanh", "relu", "relu6", "softplus", "sigmoid", "linear", "none")


class Section(BaseModel):
    """A JSON object of the input: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    # DeePMD-kit keys accepted with a warning because they do not change the result here.
    IGNORED: ClassVar[frozenset[str]] = frozenset()


def _check_activation(value: str) -> str:
    if value.lower() not in SUPPORTED_ACTIVATIONS:
        raise ValueError(f"activation {value!r} is not supported; use one of {SUPPORTED_ACTIVATIONS}")
    return value.lower()


class DescriptorConfig(Section):
    IGNORED: ClassVar[frozenset[str]] = frozenset({"trainable", "seed"})

    type: Literal["se_e2_a", "se_a"] = "se_e2_a"
    sel: list[int] | str = "auto"
    rcut: float = Field(6.0, gt=0)
    rcut_smth: float = Field(0.5, ge=0)
    neuron: list[int] = Field(default_factory=lambda: [10, 20, 40], min_length=1)
    axis_neuron: int = Field(4, ge=1)
    activation_function: str = "tanh"
    resnet_dt: bool = False
    type_one_side: bool = False
    precision: Precision = "default"
    exclude_types: list[list[int]] = Field(default_factory=list)
    env_protection: float = 0.0
    set_davg_zero: bool = False
    # kept (not ignored) so that the seed reaches the initialiser
    seed: int | None = None

    _act = field_validator("activation_function")(classmethod(lambda cls, v: _check_activation(v)))

    @field_validator("sel")
    @classmethod
    def _sel(cls, v: list[int] | str) -> list[int] | str:
        if isinstance(v, str):
            if v != "auto" and not v.startswith("auto:"):
                raise ValueError("sel must be a list of integers, 'auto' or 'auto:FACTOR'")
            if v.startswith("auto:"):
                float(v.split(":", 1)[1])
        elif any(s < 0 for s in v) or sum(v) == 0:
            raise ValueError("sel entries must be >= 0 and not all zero")
        return v

    @field_validator("neuron")
    @classmethod
    def _neuron(cls, v: list[int]) -> list[int]:
        if any(n <= 0 for n in v):
            raise ValueError("neuron sizes must be positive")
        return v

    @field_validator("exclude_types")
    @classmethod
    def _exclude(cls, v: list[list[int]]) -> list[list[int]]:
        if v:
            raise ValueError("pair exclusion in the descriptor (exclude_types) is not supported")
        return v

    @field_validator("env_protection")
    @classmethod
    def _env_protection(cls, v: float) -> float:
        if v != 0.0:
            raise ValueError("env_protection != 0 is not supported")
        return v

    @model_validator(mode="after")
    def _radii(self) -> DescriptorConfig:
        if self.rcut_smth >= self.rcut:
            raise ValueError(f"rcut_smth ({self.rcut_smth}) must be smaller than rcut ({self.rcut})")
        if self.axis_neuron > self.neuron[-1]:
            raise ValueError(
                f"axis_neuron ({self.axis_neuron}) must not exceed the last neuron size ({self.neuron[-1]})"
            )
        return self


class FittingConfig(Section):
    IGNORED: ClassVar[frozenset[str]] = frozenset(
        {"trainable", "r_differentiable", "c_differentiable", "default_fparam", "diag_shift",
         "exclude_types", "dim_out", "use_aparam_as_mask", "type_map", "var_name", "layer_name"}
    )

    type: Literal["dipole", "polar"]
    neuron: list[int] = Field(default_factory=lambda: [120, 120, 120], min_length=1)
    activation_function: str = "tanh"
    resnet_dt: bool = True
    precision: Precision = "default"
    sel_type: list[int] | int | None = None
    seed: int | None = None
    # polar only
    fit_diag: bool = True
    scale: float | list[float] = 1.0
    shift_diag: bool = True
    # accepted when zero (DeePMD-kit writes them into every model)
    numb_fparam: int = 0
    numb_aparam: int = 0
    dim_case_embd: int = 0

    _act = field_validator("activation_function")(classmethod(lambda cls, v: _check_activation(v)))

    @model_validator(mode="before")
    @classmethod
    def _type(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kind = data.get("type")
            if kind == "global_polar":
                raise ValueError(
                    "fitting_net.type 'global_polar' is deprecated (DeePMD-kit 1.x) and merged into "
                    "'polar': use type 'polar'; global vs atomic labels are decided by the label "
                    "file names (polarizability.npy / atomic_polarizability.npy)"
                )
            if kind == "ener":
                raise ValueError("fitting_net.type 'ener' is an energy model; dptensor fits 'dipole' or 'polar'")
            if kind == "dipole":
                bad = sorted(k for k in ("fit_diag", "scale", "shift_diag") if k in data)
                if bad:
                    raise ValueError(f"{', '.join(bad)} only apply to polar fitting nets")
        return data

    @model_validator(mode="after")
    def _unsupported(self) -> FittingConfig:
        for name in ("numb_fparam", "numb_aparam", "dim_case_embd"):
            if getattr(self, name) != 0:
                raise ValueError(f"{name} > 0 (frame/atomic parameters) is not supported")
        return self

    def sel_type_list(self) -> list[int] | None:
        if self.sel_type is None:
            return None
        return [self.sel_type] if isinstance(self.sel_type, int) else list(self.sel_type)


class ModelConfig(Section):
    IGNORED: ClassVar[frozenset[str]] = frozenset(
        {"srtab_add_bias", "model_branch_alias", "info", "bridging_method", "bridging_r_inner",
         "bridging_r_outer", "preset_out_bias", "compress", "min_nbor_dist"}
    )

    type_map: list[str] | None = None
    descriptor: DescriptorConfig
    fitting_net: FittingConfig
    atom_exclude_types: list[int] = Field(default_factory=list)
    pair_exclude_types: list[list[int]] = Field(default_factory=list)
    data_stat_nbatch: int = Field(10, ge=1)
    data_stat_protect: float = Field(1e-2, gt=0)
    data_bias_nsample: int = Field(10, ge=1)
    type: Literal["standard"] = "standard"

    @field_validator("pair_exclude_types")
    @classmethod
    def _pairs(cls, v: list[list[int]]) -> list[list[int]]:
        if v:
            raise ValueError("pair_exclude_types is not supported")
        return v

    @model_validator(mode="before")
    @classmethod
    def _unsupported_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("use_srtab", "type_embedding", "spin", "modifier"):
                if data.get(key) not in (None, False):
                    raise ValueError(f"model.{key} is not supported by dptensor (se_e2_a tensor models only)")
            data = {k: v for k, v in data.items() if k not in ("use_srtab", "type_embedding", "spin", "modifier")}
        return data

    @model_validator(mode="after")
    def _types(self) -> ModelConfig:
        sel_type = self.fitting_net.sel_type_list()
        if sel_type is not None and set(sel_type) & set(self.atom_exclude_types):
            raise ValueError(
                f"fitting_net.sel_type {sel_type} and atom_exclude_types {self.atom_exclude_types} overlap"
            )
        if self.type_map is not None:
            nt = len(self.type_map)
            if len(set(self.type_map)) != nt:
                raise ValueError(f"type_map has duplicate names: {self.type_map}")
            if isinstance(self.descriptor.sel, list) and len(self.descriptor.sel) != nt:
                raise ValueError(
                    f"descriptor.sel has {len(self.descriptor.sel)} entries but type_map has {nt} types"
                )
            for t in (sel_type or []) + self.atom_exclude_types:
                if not 0 <= t < nt:
                    raise ValueError(f"type index {t} is out of range for type_map {self.type_map}")
            scale = self.fitting_net.scale
            if isinstance(scale, list) and len(scale) != nt:
                raise ValueError(f"fitting_net.scale has {len(scale)} entries but type_map has {nt} types")
        return self

    def to_json(self) -> dict[str, Any]:
        """The resolved config as plain JSON, valid input for ``parse_section(…, ModelConfig)``."""
        data = self.model_dump(mode="json", by_alias=True)
        if self.fitting_net.type == "dipole":
            for key in ("fit_diag", "scale", "shift_diag"):
                data["fitting_net"].pop(key, None)
        return data

    def sel_type(self, ntypes: int) -> list[int]:
        """Types whose atoms carry the tensor (fitting_net.sel_type, else the complement of
        atom_exclude_types, else all)."""
        explicit = self.fitting_net.sel_type_list()
        if explicit is not None:
            chosen = set(explicit) - set(self.atom_exclude_types)
        else:
            chosen = set(range(ntypes)) - set(self.atom_exclude_types)
        return sorted(chosen)


class LearningRateConfig(Section):
    IGNORED: ClassVar[frozenset[str]] = frozenset({"scale_by_worker"})

    type: Literal["exp"] = "exp"
    start_lr: float = Field(1e-3, gt=0)
    stop_lr: float = Field(5e-8, gt=0)
    decay_steps: int = Field(5000, ge=1)
    decay_rate: float | None = Field(None, gt=0)


class LossConfig(Section):
    type: Literal["tensor"]
    pref: float = Field(ge=0)
    pref_atomic: float = Field(ge=0)
    enable_atomic_weight: bool = False

    @model_validator(mode="before")
    @classmethod
    def _required(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") == "ener":
            raise ValueError("loss.type 'ener' is an energy loss; use 'tensor'")
        return data

    @model_validator(mode="after")
    def _weights(self) -> LossConfig:
        if self.pref == 0 and self.pref_atomic == 0:
            raise ValueError("pref and pref_atomic cannot both be zero")
        if self.enable_atomic_weight:
            raise ValueError("enable_atomic_weight is not supported")
        return self


class DataConfig(Section):
    IGNORED: ClassVar[frozenset[str]] = frozenset({"rglob_patterns"})

    systems: list[str] | str
    batch_size: int | list[int] | str = "auto"
    numb_btch: int = Field(1, ge=1)
    auto_prob: str = Field("prob_sys_size", alias="auto_prob")
    sys_probs: list[float] | None = None

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int | list[int] | str) -> int | list[int] | str:
        if isinstance(v, str):
            if v != "auto" and not (v.startswith("auto:") and v[5:].isdigit()):
                raise ValueError("batch_size must be an integer, a list, 'auto' or 'auto:N'")
        elif (isinstance(v, int) and v < 1) or (isinstance(v, list) and any(b < 1 for b in v)):
            raise ValueError("batch_size must be >= 1")
        return v

    @field_validator("auto_prob")
    @classmethod
    def _prob(cls, v: str) -> str:
        if v not in ("prob_sys_size", "prob_uniform"):
            raise ValueError("auto_prob must be 'prob_sys_size' or 'prob_uniform'")
        return v

    def system_list(self) -> list[str]:
        return [self.systems] if isinstance(self.systems, str) else list(self.systems)


class TrainingConfig(Section):
    IGNORED: ClassVar[frozenset[str]] = frozenset(
        {"disp_training", "time_training", "profiling", "profiling_file", "enable_profiler",
         "tensorboard", "tensorboard_log_dir", "tensorboard_freq", "stat_file", "disp_avg",
         "change_bias_after_training", "numb_test", "zero_stage", "opt_type", "mixed_precision"}
    )

    training_data: DataConfig
    validation_data: DataConfig | None = None
    numb_steps: int = Field(ge=1, validation_alias="numb_steps")
    seed: int | None = None
    disp_file: str = "lcurve.out"
    disp_freq: int = Field(1000, ge=1)
    save_freq: int = Field(1000, ge=1)
    save_ckpt: str = Field("model.ckpt", pattern=r"^[A-Za-z0-9_.-]+$")
    max_ckpt_keep: int = Field(5, ge=1)
    warmup_steps: int = Field(0, ge=0)
    gradient_max_norm: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict) and "stop_batch" in data:
            data = dict(data)
            if "numb_steps" in data:
                raise ValueError("give numb_steps or its old name stop_batch, not both")
            data["numb_steps"] = data.pop("stop_batch")
        if isinstance(data, dict) and data.get("opt_type", "Adam") != "Adam":
            raise ValueError(f"opt_type {data['opt_type']!r} is not supported (only Adam)")
        return data


class InputConfig(Section):
    model: ModelConfig
    learning_rate: LearningRateConfig = Field(default_factory=lambda: LearningRateConfig())
    loss: LossConfig
    training: TrainingConfig

    @model_validator(mode="before")
    @classmethod
    def _multitask(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("model_dict" in data.get("model", {}) or "loss_dict" in data):
            raise ValueError("multi-task inputs (model_dict / loss_dict) are not supported")
        return data


# ---------------------------------------------------------------------------------------
# Parsing: comments and ignored keys are stripped by walking the schema, so that warnings
# and errors carry the JSON path.


def _section_class(annotation: Any) -> type[Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, Section):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            found = _section_class(arg)
            if found is not None:
                return found
    return None


def _strip(raw: Any, cls: type[Section], path: str, warned: list[str]) -> Any:
    if not isinstance(raw, dict):
        return raw
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key_path = f"{path}.{key}" if path else key
        if isinstance(key, str) and key.startswith("_comment"):
            continue
        if key in cls.IGNORED and key not in cls.model_fields:
            warned.append(key_path)
            continue
        field = cls.model_fields.get(key)
        child = _section_class(field.annotation) if field is not None else None
        out[key] = _strip(value, child, key_path, warned) if child is not None else value
    return out


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|[a-z-]+\[.*\])$")


def _format_loc(prefix: str, loc: tuple[Any, ...]) -> str:
    """('training', 'training_data', 'systems', 'list[str]', 0) -> training.training_data.systems[0]"""
    parts = [prefix] if prefix else []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif not _UNION_TAG.match(str(item)):  # pydantic's tags for union branches
            parts.append(str(item))
    return ".".join(parts)


S = TypeVar("S", bound=Section)


def ignored_note(key_path: str) -> str:
    return f"{key_path}: accepted for DeePMD-kit compatibility but ignored"


def parse_with_notes(raw: Any, cls: type[S], *, path: str = "") -> tuple[S, list[str]]:
    """Validate ``raw`` against ``cls``: (the section, notes naming each DeePMD-kit key that
    is accepted but ignored). Raises ConfigError listing every problem with its JSON path."""
    warned: list[str] = []
    cleaned = _strip(raw, cls, path, warned)
    try:
        return cls.model_validate(cleaned), [ignored_note(key_path) for key_path in warned]
    except ValidationError as exc:
        problems: list[tuple[str, str]] = []
        for err in exc.errors():
            loc = _format_loc(path, tuple(err["loc"]))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "missing":
                msg = "required key is missing"
            if (loc, msg) not in problems:
                problems.append((loc, msg))
        raise ConfigError.from_problems(problems) from None


def parse_section(raw: Any, cls: type[S], *, path: str = "") -> S:
    """``parse_with_notes`` for input that is not the user's (checkpoints, DeePMD-kit's own
    files): the notes are dropped."""
    return parse_with_notes(raw, cls, path=path)[0]


@dataclass(frozen=True)
class ParsedInput:
    """An input.json read and validated once: what a process passes on instead of the file."""

    config: InputConfig
    raw: dict[str, Any]  # as written (kept in checkpoints)
    base: Path  # relative system paths are resolved against this folder
    notes: tuple[str, ...] = ()  # ignored DeePMD-kit keys, by JSON path


def read_input(source: str | Path | dict[str, Any] | ParsedInput) -> ParsedInput:
    """Read (a path: once) and validate an input.json. The base folder is the file's folder,
    or the cwd for a dict. A ParsedInput is returned as it is."""
    if isinstance(source, ParsedInput):
        return source
    if isinstance(source, dict):
        raw, base = source, Path.cwd()
    else:
        path = Path(source)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"input file {path} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must contain a JSON object")
        base = path.resolve().parent
    config, notes = parse_with_notes(raw, InputConfig)
    return ParsedInput(config, raw, base, tuple(notes))


def load_input(source: str | Path | dict[str, Any] | ParsedInput) -> tuple[InputConfig, Path]:
    """Read and validate an input.json: (the config, the folder relative system paths are
    resolved against). ``read_input`` also keeps the raw document and the notes."""
    parsed = read_input(source)
    return parsed.config, parsed.base
