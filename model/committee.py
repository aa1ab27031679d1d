"""Committees: K independently trained members of one tensor model, evaluated together.

The members' spread says where the model is guessing. Per frame we report, as DP-GEN's
model deviation does for forces, the norm of the per-component standard deviation (over
members) of the global tensor (``devi_global``) and the largest such norm over atoms of
the atomic tensor (``devi_atomic_max``). Both are norms over components and members,
hence rotation-invariant, while the committee mean transforms as the tensor does.

A committee file holds every member's full checkpoint (config, type_map, state_dict), so
each member can be taken out and used alone (``load_predictor(path, member=i)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from model.checkpoint import model_from_checkpoint, read_checkpoint, save_payload
from model.committee_forward import StackedModel
from model.errors import CheckpointError
from model.keys import MAX_COMMITTEE_MEMBERS
from model.search_budget import DEFAULT_MAX_CANDIDATES
from model.tensor_model import DTYPES, TensorModel, TensorOutput

COMMITTEE_FORMAT = "dptensor-committee"
COMMITTEE_FORMAT_VERSION = 1
MAX_MEMBERS = MAX_COMMITTEE_MEMBERS


@dataclass
class CommitteeOutput(TensorOutput):
    """``atomic`` / ``global_`` are the committee means; the members' own tensors beside them."""

    member_atomic: Tensor  # [K, nf, nat, 3|9]
    member_global: Tensor  # [K, nf, 3|9]


def architecture(model: TensorModel) -> dict[str, Any]:
    """What must agree for members to share one batched forward (seeds and the fitted
    statistics/biases may differ: they are stacked per member)."""
    config = model.config.to_json()
    for section in ("descriptor", "fitting_net"):
        config[section] = {k: v for k, v in config[section].items() if k not in ("seed", "scale")}
    for key in ("data_stat_nbatch", "data_stat_protect", "data_bias_nsample"):
        config.pop(key, None)
    return {"config": config, "dtype": str(model.dtype), "fitting_dtype": str(model.fitting.dtype)}


class Committee(nn.Module):
    """Members with the same type_map and kind; forward returns the mean and every member."""

    def __init__(self, members: Sequence[TensorModel]) -> None:
        super().__init__()
        if not members:
            raise CheckpointError("a committee needs at least one member")
        if len(members) > MAX_MEMBERS:
            raise CheckpointError(f"a committee has at most {MAX_MEMBERS} members, got {len(members)}")
        first = members[0]
        for i, m in enumerate(members[1:], start=1):
            if m.kind != first.kind or m.type_map != first.type_map:
                raise CheckpointError(f"committee member {i} predicts {m.kind} for {m.type_map}, member 0 "
                                      f"{first.kind} for {first.type_map}: members must agree")
        self.members = nn.ModuleList(members)
        self.type_map, self.kind, self.sel_type = first.type_map, first.kind, first.sel_type
        self.batched = all(architecture(m) == architecture(first) for m in members[1:])
        self._stacked: tuple[tuple[Any, ...], StackedModel] | None = None

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def dim(self) -> int:
        return self.member(0).dim

    @property
    def dtype(self) -> torch.dtype:
        return self.member(0).dtype

    @property
    def rcut(self) -> float:
        return self.member(0).rcut

    @property
    def sel(self) -> list[int]:
        return self.member(0).sel

    def member(self, i: int) -> TensorModel:
        m = self.members[i]
        assert isinstance(m, TensorModel)
        return m

    def set_precision(self, dtype: torch.dtype) -> Committee:
        for i in range(self.size):
            self.member(i).set_precision(dtype)
        self._stacked = None
        return self

    def _stacked_model(self) -> StackedModel:
        """The stacked weights, rebuilt when the members moved (device, precision)."""
        p = next(self.parameters())
        key = (p.device, p.dtype, self.member(0).dtype)
        if self._stacked is None or self._stacked[0] != key:
            with torch.no_grad():
                self._stacked = (key, StackedModel([self.member(i) for i in range(self.size)]))
        return self._stacked[1]

    def forward(self, coord: Tensor, atype: Tensor, box: Tensor | None = None, *,
                differentiable: bool = False) -> CommitteeOutput:
        """coord [nf, nat, 3] Å, atype [nat], box [nf, 3, 3] | None. Inference only
        (``differentiable`` must stay False: the stacked kernels have no backward)."""
        if differentiable:
            raise ValueError("a committee's forward is inference only (differentiable=False)")
        if self.size == 1:  # one member: its own forward, so the result is that model's, bit for bit
            out = self.member(0)(coord, atype, box, differentiable=False)
            return CommitteeOutput(atomic=out.atomic, global_=out.global_, member_atomic=out.atomic[None],
                                   member_global=out.global_[None])
        if self.batched:
            member_atomic = self._stacked_model()(coord, atype, box)  # [K, nf, nat, dim]
        else:  # different architectures: one pass per member
            member_atomic = torch.stack([self.member(i)(coord, atype, box, differentiable=False).atomic
                                         for i in range(self.size)])
        member_global = member_atomic.sum(dim=2)
        return CommitteeOutput(atomic=member_atomic.mean(0), global_=member_global.mean(0),
                               member_atomic=member_atomic, member_global=member_global)


Predictor = TensorModel | Committee


# ---- deviations ---------------------------------------------------------------------------


@dataclass
class Deviation:
    global_std: np.ndarray  # [nf, dim] per-component std over members
    atomic_std: np.ndarray  # [nf, nat, dim]
    devi_global: np.ndarray  # [nf] ‖global_std‖
    devi_atomic_max: np.ndarray  # [nf] max over atoms of ‖atomic_std‖


def deviation(member_global: np.ndarray, member_atomic: np.ndarray) -> Deviation:
    """Population std over the member axis (axis 0), as DP-GEN's model deviation."""
    g_std = np.std(member_global, axis=0)
    a_std = np.std(member_atomic, axis=0)
    a_norm = np.linalg.norm(a_std, axis=-1)  # [nf, nat]
    return Deviation(global_std=g_std, atomic_std=a_std, devi_global=np.linalg.norm(g_std, axis=-1),
                     devi_atomic_max=a_norm.max(axis=-1) if a_norm.shape[-1] else np.zeros(a_norm.shape[0]))


# ---- files --------------------------------------------------------------------------------


def is_committee_checkpoint(ck: dict[str, Any]) -> bool:
    return ck.get("format") == COMMITTEE_FORMAT


def save_committee(path: str | Path, members: Sequence[str | Path | dict[str, Any]], *,
                   metadata: dict[str, Any] | None = None) -> Path:
    """One file with every member's checkpoint (optimizer states dropped), written atomically."""
    cks = [read_checkpoint(m) if not isinstance(m, dict) else m for m in members]
    flat: list[dict[str, Any]] = []
    for ck in cks:
        flat.extend(ck["members"] if is_committee_checkpoint(ck) else [ck])
    models = [model_from_checkpoint(ck) for ck in flat]  # validates every member
    Committee(models)  # validates that they agree
    payload = {
        "format": COMMITTEE_FORMAT, "format_version": COMMITTEE_FORMAT_VERSION,
        "kind": models[0].kind, "type_map": models[0].type_map, "size": len(flat),
        "members": [{k: v for k, v in ck.items() if k != "train"} for ck in flat],
        "metadata": metadata or {},
    }
    save_payload(path, payload)
    return Path(path)


def committee_members(ck: dict[str, Any], source: str | Path = "committee") -> list[dict[str, Any]]:
    if int(ck.get("format_version", 0)) > COMMITTEE_FORMAT_VERSION:
        raise CheckpointError(f"{source}: committee format {ck['format_version']} is newer than this dptensor "
                              f"(reads up to {COMMITTEE_FORMAT_VERSION}); upgrade dptensor")
    members = ck.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, dict) for m in members):
        raise CheckpointError(f"{source}: committee file without members")
    return members


def _members_of(path: str | Path) -> tuple[list[TensorModel], bool]:
    """The models in one file, and whether it was a committee file."""
    ck = read_checkpoint(path)
    if not is_committee_checkpoint(ck):
        return [model_from_checkpoint(ck)], False
    out = []
    for i, member in enumerate(committee_members(ck, path)):
        try:
            out.append(model_from_checkpoint(member))
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: member {i}: {exc}") from None
    return out, True


def load_predictor(paths: str | Path | Sequence[str | Path], *, device: str | torch.device = "cpu",
                   precision: str | None = None, member: int | None = None,
                   max_search_candidates: int = DEFAULT_MAX_CANDIDATES) -> Predictor:
    """One model file → that model; a committee file or several model files → a Committee
    (committee files among several are flattened into their members). ``member`` takes one
    member out of the committee, to use alone; ``max_search_candidates`` is the neighbour
    search budget of every member (model.search_budget)."""
    path_list = [paths] if isinstance(paths, str | Path) else list(paths)
    if not path_list:
        raise CheckpointError("no model given")
    members: list[TensorModel] = []
    committee_file = len(path_list) > 1
    for p in path_list:
        got, is_committee = _members_of(p)
        committee_file = committee_file or is_committee
        members.extend(got)
    if member is not None:
        if not 0 <= member < len(members):
            raise CheckpointError(f"member {member} does not exist (the committee has {len(members)})")
        members, committee_file = [members[member]], False
    if precision is not None and precision not in DTYPES:
        raise CheckpointError(f"precision {precision!r} is not one of float64, float32")
    for m in members:
        m.max_search_candidates = max_search_candidates
        if precision is not None:
            m.set_precision(DTYPES[precision])
    predictor: Predictor = members[0] if len(members) == 1 and not committee_file else Committee(members)
    return predictor.to(device).eval()
