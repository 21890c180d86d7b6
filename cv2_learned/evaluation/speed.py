"""Speed and memory of ``detectAndCompute``.

Time: median wall-clock ms per call, each method in a fresh subprocess (``speedprobe``) interleaved with its own SIFT
in the same loop (so drifts in machine load hit both alike), reported also as a ratio to that SIFT, plus the median
process CPU ms. One process per method because methods timed in one process disturb each other: with the torch
peers loaded next to it, cv2_learned's 640x480 time was 1.44-1.69 of SIFT's, on its own 0.75 (models 2.13.0,
2026-12-07). Memory: one fresh
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


def speed_images_from(p) -> dict:
    """{label: BGR image}: ``640x480`` (the photo at path ``p`` resized, or with ``p`` None a procedural image) and
    ``native WxH`` for a photo (``native_image_path`` finds one in a data root)."""
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


def _probe(module: str, args: list, timeout: float) -> dict:
    """Runs ``python -m module *args`` from the repository; its last stdout line as JSON, or {"error": message}."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    try:
        r = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=repo, env=env, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            return {"error": (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]}
        return json.loads(r.stdout.strip().splitlines()[-1])
    except Exception as e:  # noqa: BLE001 - report any failure of the probe, do not stop the benchmark
        return {"error": f"{type(e).__name__}: {e}"}


def measure_speed(spec: str, nfeatures: int, image_path, reps: int = 5, sizes: int = 2, timeout: float = 1800) -> dict:
    """``time_methods`` of one method against SIFT in a fresh process (``speedprobe``): its row ({"ms@<size>",
    "x_sift@<size>", "cpu_ms@<size>", "sift_ms@<size>"}) or {"error": message}. ``image_path`` None: the procedural
    image; ``sizes``: how many of ``speed_images_from``'s sizes."""
    args = [spec, nfeatures, reps, sizes] + ([image_path] if image_path is not None else [])
    return _probe("cv2_learned.evaluation.speedprobe", args, timeout)


def measure_memory(spec: str, nfeatures: int, image_path, timeout: float = 600) -> dict:
    """Runs ``memprobe`` in a fresh interpreter; {"peak_rss_mb", "call_delta_mb"} or {"error": message}."""
    return _probe("cv2_learned.evaluation.memprobe", [spec, nfeatures, image_path], timeout)
