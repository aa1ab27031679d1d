"""The /v1 routers."""

from __future__ import annotations

from fastapi import APIRouter

from app.routes import datasets, health, jobs, models, select, spectra, users

api = APIRouter(prefix="/v1")
for module in (health, users, datasets, jobs, spectra, select, models):
    api.include_router(module.router)
