"""Speed and memory of ``detectAndCompute``.

Time: median wall-clock ms per call, methods interleaved with SIFT in the same loop (so drifts in machine load
hit all methods alike), reported also as a ratio to SIFT, plus the median process CPU ms. Memory: one fresh
subprocess per method (``memprobe``) reads the peak resident set (VmHWM, includes native allocations) around one
call at the native-size image.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from .images import load_image
from .synthetic import procedural_image

NATIVE_CANDIDATES = ("strecha/fountain-P11/images/0000.jpg", "mobilebrick/image/000000.jpg", "evd/1/adam.png")


def native_image_path(root) -> Path | None:
    """A full-resolution camera image from the data root (the first candidate that exists), else None."""
    for rel in NATIVE_CANDIDATES:
        p = Path(root) / rel if root else None
        if p is not None and p.exists():
            return p
    return None


def speed_images(root) -> dict:
    """{label: BGR image}: ``640x480`` (a photo resized, or a procedural image) and ``native WxH`` if available."""
    p = native_image_path(root)
    base = load_image(p)[0] if p is not None else procedural_image(0)
    imgs = {"640x480": cv2.resize(base, (640, 480), interpolation=cv2.INTER_AREA)}
    if p is not None:
        imgs[f"{base.shape[1]}x{base.shape[0]}"] = base
    return imgs


def time_methods(features: dict, images: dict, reps: int = 5, reference: str = "sift") -> dict:
    """{method: {"ms@<size>": median wall ms, "x_sift@<size>": its ratio to the reference, "cpu_ms@<size>": median
    process CPU ms (all threads; robust to other load on the machine)}}; one warm-up call each first."""
    out = {m: {} for m in features}
    for size, img in images.items():
        times, cpu = {m: [] for m in features}, {m: [] for m in features}
        for m, f in features.items():
            f.detectAndCompute(img, None)
        for _ in range(reps):
            for m, f in features.items():
                t0, c0 = time.perf_counter(), time.process_time()
                f.detectAndCompute(img, None)
                times[m].append(1e3 * (time.perf_counter() - t0))
                cpu[m].append(1e3 * (time.process_time() - c0))
        ref = float(np.median(times[reference])) if reference in times else float("nan")
        for m in features:
            med = float(np.median(times[m]))
            out[m][f"ms@{size}"] = med
            out[m][f"x_sift@{size}"] = med / ref
            out[m][f"cpu_ms@{size}"] = float(np.median(cpu[m]))  # CPU time of all threads of the process
    return out


def measure_memory(spec: str, nfeatures: int, image_path, timeout: float = 600) -> dict:
    """Runs ``memprobe`` in a fresh interpreter; {"peak_rss_mb", "call_delta_mb"} or {"error": message}."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "cv2_learned.evaluation.memprobe", spec, str(nfeatures), str(image_path)]
    try:
        r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
        return json.loads(r.stdout.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001 - report any failure of the probe, do not stop the benchmark
        return {"error": f"{type(e).__name__}: {e}"}
