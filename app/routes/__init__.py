"""The /v1 routers."""

from __future__ import annotations

from fastapi import APIRouter

from app.routes import datasets, health, jobs, models, predict, select, spectra, users

api = APIRouter(prefix="/v1")
# predict first: FastAPI tries the routes in order, and it is the hot path (routes/predict.py)
for module in (predict, health, users, datasets, jobs, spectra, select, models):
    api.include_router(module.router)
