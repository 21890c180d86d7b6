"""Opt-in per-stage timing of the pipeline (zero cost unless a ``record()`` block is active in this thread).

    with profiling.record() as times:
        det.detectAndCompute(img, None)
    # times == {"preprocess": s, "detector_model": s, "nms": s, ...} in seconds
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def stage(name: str):
    """Adds the block's wall time to ``name`` in the active record (if any)."""
    rec = getattr(_local, "rec", None)
    if rec is None:
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        rec[name] = rec.get(name, 0.0) + time.perf_counter() - t0


@contextmanager
def record():
    """Collects stage times (seconds) of the calls made inside the block, in this thread."""
    prev = getattr(_local, "rec", None)
    _local.rec = {}
    try:
        yield _local.rec
    finally:
        _local.rec = prev
