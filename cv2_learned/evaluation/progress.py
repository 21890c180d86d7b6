"""Progress display: tqdm when installed, otherwise a line every few items."""
from __future__ import annotations

import sys
import time


def progress(items, desc: str):
    """Iterates ``items`` (a sized iterable) with a progress display on stderr."""
    items = list(items)
    try:
        from tqdm import tqdm

        yield from tqdm(items, desc=desc, leave=False, file=sys.stderr, mininterval=1.0)
        return
    except ImportError:
        pass
    t0, step = time.perf_counter(), max(1, len(items) // 5)
    for i, x in enumerate(items):
        if i % step == 0:
            print(f"  {desc}: {i}/{len(items)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        yield x
