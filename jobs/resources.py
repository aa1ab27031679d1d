"""What a training job asks of the worker that takes it: ``"resources": {"nproc": N}``
beside the input.json keys (N data-parallel ranks on that worker's host: one per GPU,
or N CPU ranks). Shared by the api (validation) and the worker (the launch)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model.errors import ConfigError

RESOURCES_KEY = "resources"


class TrainResources(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nproc: int = Field(1, ge=1, description="data-parallel ranks (torch.distributed) on the worker's host")


def split_resources(inputs: dict[str, Any], max_nproc: int | None = None) -> tuple[dict[str, Any], TrainResources]:
    """(the input.json without ``resources``, the resources asked for). A bad request is a
    ConfigError naming ``resources.<field>``."""
    raw = inputs.get(RESOURCES_KEY) or {}
    if not isinstance(raw, dict):
        raise ConfigError("must be an object such as {\"nproc\": 2}", path=RESOURCES_KEY)
    try:
        resources = TrainResources.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError.from_problems(
            [(".".join([RESOURCES_KEY, *(str(p) for p in e["loc"])]), e["msg"]) for e in exc.errors()]) from None
    if max_nproc is not None and resources.nproc > max_nproc:
        raise ConfigError(f"at most {max_nproc} ranks per training (DPTENSOR_MAX_TRAIN_NPROC)",
                          path=f"{RESOURCES_KEY}.nproc")
    return {k: v for k, v in inputs.items() if k != RESOURCES_KEY}, resources
