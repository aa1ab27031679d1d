"""cuda:auto: replicas that see every GPU take one each (an flock per GPU UUID), and a
worker that exits frees its GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from worker.gpus import claim_gpu

UUIDS = ["GPU-aaaa", "GPU-bbbb"]


def _claim_in_child(lock_dir: Path) -> subprocess.Popen[str]:
    """Another worker process: claims a GPU and holds it until its stdin closes."""
    code = ("import sys; from pathlib import Path; from worker.gpus import claim_gpu; "
            f"print(claim_gpu({UUIDS!r}, Path({str(lock_dir)!r})), flush=True); sys.stdin.read()")
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_each_worker_claims_its_own_gpu_and_a_dead_worker_frees_it(tmp_path: Path) -> None:
    first = _claim_in_child(tmp_path)
    assert first.stdout is not None and first.stdout.readline().strip() == "0"
    second = _claim_in_child(tmp_path)
    assert second.stdout is not None and second.stdout.readline().strip() == "1"
    assert claim_gpu(UUIDS, tmp_path) is None  # a third worker on a 2-GPU host gets none
    first.kill()
    first.wait()
    assert claim_gpu(UUIDS, tmp_path) == 0  # the killed worker's GPU is free again
    assert second.stdin is not None
    second.stdin.close()
    second.wait()
