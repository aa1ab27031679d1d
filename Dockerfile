# Two images from one file:
#   docker build --target api    -t dptensor-api .     (no torch: FastAPI + Celery client)
#   docker build --target worker -t dptensor-worker .  (CUDA torch; one container per GPU)
# The api image installs the package without dependencies plus the service's own
# requirements, so torch is never pulled in; the worker image adds CUDA torch.

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DPTENSOR_DATA_DIR=/data
RUN useradd --create-home --uid 1000 dptensor && mkdir /data && chown dptensor /data
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model ./model
COPY jobs ./jobs
COPY app ./app
COPY worker ./worker

FROM base AS api
# ase (+ scipy, numpy only): spectrum requests are checked with the library's trajectory readers
RUN pip install "numpy>=1.26" "scipy>=1.11" "ase>=3.23" "pydantic>=2.6" "fastapi>=0.110" "uvicorn[standard]>=0.29" \
        "pydantic-settings>=2.2" "python-multipart>=0.0.9" "sqlalchemy>=2.0" \
        "celery[redis,sqlalchemy]>=5.4" "redis>=5" "psycopg2-binary>=2.9" \
    && pip install --no-deps .
USER dptensor
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v1/health/live')"
CMD ["dptensor", "serve", "--no-worker", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# CUDA 12.4 wheels of torch (the driver comes from the host through the NVIDIA runtime)
RUN pip install --index-url https://download.pytorch.org/whl/cu124 "torch>=2.3" \
    && pip install ".[service]"
USER dptensor
CMD ["dptensor", "worker", "--queues", "train,batch"]
