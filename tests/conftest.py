"""Suite-wide settings.

One intra-op thread: the suite runs several processes at once (pytest, API servers, Celery
workers) on small machines, and OpenMP's spinning threads on an oversubscribed CPU make
small tensor ops 100× slower. Set before torch is imported; child processes inherit it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
