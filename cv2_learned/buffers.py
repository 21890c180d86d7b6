"""Per-thread scratch arrays kept between calls.

A fresh multi-megabyte numpy array is fresh pages: glibc returns freed memory to the system when the application
frees a larger block (SIFT's pyramid, say), and every page of the next allocation then faults in (about 1.4 us per
4 KB page on small VMs: 1000 faults, a 4 MB patch array, cost 1.4 ms). Arrays that never leave the runtime (padded
octave images, score maps, patch batches) are therefore kept per thread and reused while their shape holds.
"""
from __future__ import annotations

import threading

import numpy as np

REUSE_PIXELS = 1 << 22   # images (octaves, pyramids) up to this many pixels keep their buffers between calls


class ThreadBuffers:
    """float32 scratch arrays by (key, shape), one set per thread (thread-safe without locks)."""

    def __init__(self):
        self._local = threading.local()

    def _store(self) -> dict:
        store = getattr(self._local, "store", None)
        if store is None:
            store = self._local.store = {}
        return store

    def get(self, key, shape: tuple) -> np.ndarray:
        """This thread's float32 array ``key`` of ``shape`` (kept from the previous call when the shape matches);
        a fresh array when ``key`` is None. Its contents are undefined: callers overwrite it."""
        if key is None:
            return np.empty(shape, dtype=np.float32)
        store = self._store()
        buf = store.get(key)
        if buf is None or buf.shape != tuple(shape):
            buf = store[key] = np.empty(shape, dtype=np.float32)
        return buf

    def rows(self, key, n: int, row_shape: tuple) -> np.ndarray:
        """The first ``n`` rows (a C-contiguous view) of this thread's float32 array ``key`` of shape
        (capacity, *row_shape); the capacity grows to the largest ``n`` asked for, so batches of varying length
        reuse one array. Callers bound ``n`` (the models' batch sizes)."""
        row_shape = tuple(row_shape)
        store = self._store()
        buf = store.get(key)
        if buf is None or buf.shape[1:] != row_shape or buf.shape[0] < n:
            buf = store[key] = np.empty((n,) + row_shape, dtype=np.float32)
        return buf[:n]
