#!/usr/bin/env bash
# The GPU checks of one lent device session, in one go (see bench/README.md): the CUDA
# model tests, then bench/bench_gpu.py. Expects python3 with torch (CUDA build), numpy,
# scipy, h5py, pyyaml and pydantic, and DPTENSOR_SHARED or ../shared for the data.
# Usage: bash bench/gpu_check.sh OUTDIR
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/gpu-check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/nvidia-smi.txt"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/model/test_cuda.py 2>&1 | tee "$out/test_cuda.log"
timeout 330 python3 bench/bench_gpu.py --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench_gpu.log"
# the command users run: dptensor predict on the GPU equals the CPU run (polar, 192-atom water)
sys="${DPTENSOR_SHARED:-../shared}/data/water_tensor/polar/validation_data_reformat/global_system"
mdl="${DPTENSOR_SHARED:-../shared}/data/deepmd_reference/polar/model_slim.pt"
for dev in cpu cuda; do
    t0=$(date +%s.%N)
    python3 -m model.cli predict -m "$mdl" -s "$sys" -o "$out/pred-$dev.npz" --device "$dev" 2>&1 | tail -2
    echo "predict --device $dev: $(awk "BEGIN{print $(date +%s.%N) - $t0}") s wall (process start-up included)" | tee -a "$out/cli.log"
done
python3 - "$out" <<'PY' 2>&1 | tee -a "$out/cli.log"
import sys, numpy as np
a, b = (np.load(f"{sys.argv[1]}/pred-{d}.npz") for d in ("cpu", "cuda"))
for k in a.files:
    if a[k].dtype.kind == "f":
        err = np.abs(a[k] - b[k]).max() / max(np.abs(a[k]).max(), 1e-30)
        print(f"cli predict cuda vs cpu, {k} {a[k].shape}: max rel err {err:.2e}", "OK" if err < 1e-10 else "FAIL")
PY
